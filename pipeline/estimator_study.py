"""`rlhf estimators`: which advantage estimator learns best on the main job, side by side.

Every run starts from one finished `rlhf pipeline` run (`pipeline_out`, made with
`pipeline_config`): the same labels, reward model, training prompts and PPO settings; only
the estimator (`advantage_estimator`, with `num_generations` completions per prompt for the
group estimators) and the PPO seed change. Each run is evaluated as the pipeline evaluates
its own: held-out gold judge before and after (in units of the initial spread), the last
iteration's KL per sequence, the NLL rise on held-out pretraining text, and the PPO wall
time. Every run gets the same budget in episodes (the pipeline's `total_episodes`), so the
wall time compares the cost of the same amount of experience.

    rlhf pipeline --config configs/pipeline/quickstart.yaml        # once: labels, reward model
    rlhf estimators --pipeline_out runs/pipeline/quickstart         # gae and grpo x 3 seeds, + 3
    rlhf estimators --runs gae:0 grpo:0 --out runs/estimators_small

A run whose `result.json` exists is kept with `--resume true` (two invocations with
different `--runs` may share an `out` folder); the table (`estimators.md`, `.json`) and the
picture (`estimators.png`) are always rebuilt from every result in `out`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.end_to_end import gold_gain_in_std, gold_summary, rollout_gold, text_nll  # noqa: E402
from pipeline.end_to_end import parse_config as parse_pipeline_config  # noqa: E402
from ppo.core import ADVANTAGE_ESTIMATORS  # noqa: E402
from ppo.trainer import PPOTrainer  # noqa: E402
from rlhf.config import ConfigError, parse_config, run_main  # noqa: E402
from rlhf.generation import generate_completions  # noqa: E402
from rlhf.models import load_model, load_tokenizer  # noqa: E402
from rlhf.outputs import check_output_folder, start_output_folder, write_text  # noqa: E402

GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo")  # need G >= 2 completions per prompt
DEFAULT_RUNS = ["gae:0", "grpo:0", "gae:1", "grpo:1", "gae:2", "grpo:2", "dr_grpo:0", "rloo:0", "reinforce_pp:0"]


@dataclass
class EstimatorStudyConfig:
    """What to compare; the PPO settings themselves come from the pipeline's config."""

    pipeline_config: str = field(default="configs/pipeline/quickstart.yaml", metadata={
        "help": "the pipeline config `pipeline_out` was made with: its ppo: section is every run's PPO config"})
    pipeline_out: str = field(default="runs/pipeline/quickstart", metadata={
        "help": "a finished `rlhf pipeline` run: its reward model, training prompts and held-out evaluation are shared"})
    runs: list[str] = field(default_factory=lambda: list(DEFAULT_RUNS), metadata={
        "help": "estimator:seed items, e.g. gae:0 grpo:0 (estimators: " + ", ".join(ADVANTAGE_ESTIMATORS) + ")"})
    num_generations: int = field(default=4, metadata={
        "help": "completions per prompt for grpo, dr_grpo and rloo (the others sample one); episodes per iteration "
                "stay the pipeline's"})
    out: str = field(default="runs/estimators", metadata={"help": "output folder: one folder per run, the table"})
    overwrite: bool = field(default=False, metadata={"help": "replace an earlier study in `out`"})
    resume: bool = field(default=False, metadata={"help": "keep the finished runs in `out` and run the others"})

    def __post_init__(self):
        self.parsed_runs = []
        for item in self.runs:
            estimator, _, seed = str(item).partition(":")
            if estimator not in ADVANTAGE_ESTIMATORS or not seed.isdigit():
                raise ConfigError("--runs", f"expected estimator:seed items with an estimator in "
                                            f"{', '.join(ADVANTAGE_ESTIMATORS)}, got {item!r}")
            self.parsed_runs.append((estimator, int(seed)))
        if self.num_generations < 2:
            raise ConfigError("--num_generations", f"expected at least 2, got {self.num_generations}")
        if not (Path(self.pipeline_out) / "summary.json").is_file():
            raise ConfigError("--pipeline_out", f"expected a finished `rlhf pipeline` run (with summary.json), "
                                                f"got {self.pipeline_out}")


def run_name(estimator: str, seed: int) -> str:
    return f"{estimator}_seed{seed}"


def run_one(config: EstimatorStudyConfig, estimator: str, seed: int, console: Console) -> dict:
    """One PPO run from the pipeline's reward model, evaluated as the pipeline evaluates."""
    base = Path(config.pipeline_out)
    pipeline, _, ppo = parse_pipeline_config(["--config", config.pipeline_config, "--out", str(base)])
    folder = Path(config.out) / run_name(estimator, seed)
    generations = config.num_generations if estimator in GROUP_ESTIMATORS else 1
    ppo = dataclasses.replace(ppo, advantage_estimator=estimator, num_generations=generations, seed=seed,
                              output_dir=str(folder / "ppo"), overwrite=True, disable_tqdm=True,
                              sample_table_every=0)
    console.print(f"[bold]{run_name(estimator, seed)}[/]: {ppo.total_episodes} episodes, G = {generations}")
    summary = PPOTrainer(ppo, gold_fn=rollout_gold).train()

    before = json.loads((base / "summary.json").read_text())
    heldout = [json.loads(line)["prompt"] for line in (base / "heldout_samples.jsonl").read_text().splitlines()]
    tokenizer = load_tokenizer(pipeline.policy_model, padding_side="left")
    model = load_model(summary["policy_dir"], pad_token_id=tokenizer.pad_token_id)
    texts = generate_completions(model, heldout, tokenizer=tokenizer, max_new_tokens=pipeline.eval_max_new_tokens,
                                 temperature=pipeline.eval_temperature, seed=pipeline.seed, stop_token=ppo.stop_token)
    after = gold_summary(texts, heldout)
    nll_after = text_nll(model, tokenizer, Path(pipeline.pretrain_heldout).read_text(encoding="utf-8"))
    gold_before = before["gold_before"]
    history = summary["history"]
    result = {
        "estimator": estimator, "seed": seed, "num_generations": generations, "episodes": history[-1]["episode"],
        "gold_before": gold_before["mean"], "gold_after": after["mean"],
        "gold_gain_in_std": gold_gain_in_std(gold_before, after["mean"]),
        "topical_after": after["topical"], "content_free_after": after["content_free"], "words_after": after["words"],
        "kl_final": history[-1]["objective/kl"], "nll_increase": nll_after - before["nll_before"],
        "ppo_seconds": summary["seconds"], "warnings": [w["message"] for w in summary["warnings"]],
        "curve": [{"seconds": sum(h["time/step"] for h in history[:i + 1]), "score": h["objective/scores"],
                   "kl": h["objective/kl"], "gold": h.get("objective/gold")} for i, h in enumerate(history)],
    }
    write_text(folder / "result.json", json.dumps(result, indent=2))
    write_text(folder / "heldout_after.jsonl", "".join(json.dumps({"prompt": p, "after": t}) + "\n"
                                                       for p, t in zip(heldout, texts)))
    return result


def table_rows(results: list[dict]) -> list[dict]:
    """One row per estimator: mean and spread over its seeds, wall time relative to gae's."""
    rows = []
    gae_seconds = [r["ppo_seconds"] for r in results if r["estimator"] == "gae"]
    for estimator in ADVANTAGE_ESTIMATORS:
        runs = [r for r in results if r["estimator"] == estimator]
        if not runs:
            continue

        def stat(key):
            values = np.array([r[key] for r in runs], dtype=float)
            return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None

        row = {"estimator": estimator, "seeds": sorted(r["seed"] for r in runs),
               "num_generations": runs[0]["num_generations"]}
        for key in ("gold_gain_in_std", "kl_final", "nll_increase", "ppo_seconds", "content_free_after",
                    "topical_after"):
            row[key], row[key + "_std"] = stat(key)
        row["time_vs_gae"] = row["ppo_seconds"] / float(np.mean(gae_seconds)) if gae_seconds else None
        rows.append(row)
    return rows


def write_table(out: Path, rows: list[dict]) -> Path:
    def cell(row, key, fmt):
        spread = row.get(key + "_std")
        return format(row[key], fmt) + (f" ± {spread:{fmt}}" if spread is not None else "")

    lines = ["| estimator | G | seeds | gold gain (initial std) | KL/seq last (nats) | NLL rise | content-free after "
             "| PPO seconds | time vs gae |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = f"{row['time_vs_gae']:.2f}" if row["time_vs_gae"] is not None else "n/a"
        lines.append(f"| {row['estimator']} | {row['num_generations']} | {','.join(map(str, row['seeds']))} | "
                     f"{cell(row, 'gold_gain_in_std', '+.2f')} | {cell(row, 'kl_final', '.2f')} | "
                     f"{cell(row, 'nll_increase', '+.3f')} | {cell(row, 'content_free_after', '.1%')} | "
                     f"{cell(row, 'ppo_seconds', '.0f')} | {ratio} |")
    write_text(out / "estimators.json", json.dumps(rows, indent=2))
    return write_text(out / "estimators.md", "\n".join(lines) + "\n")


def plot(out: Path, results: list[dict]) -> Path:
    """Gold gain against PPO seconds per run, and each run's RM score against wall time."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = dict(zip(ADVANTAGE_ESTIMATORS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for estimator in ADVANTAGE_ESTIMATORS:
        runs = [r for r in results if r["estimator"] == estimator]
        if not runs:
            continue
        left.scatter([r["ppo_seconds"] for r in runs], [r["gold_gain_in_std"] for r in runs],
                     color=colours[estimator], label=estimator)
        for i, r in enumerate(runs):
            right.plot([c["seconds"] for c in r["curve"]], [c["score"] for c in r["curve"]], color=colours[estimator],
                       alpha=0.7, label=estimator if i == 0 else None)
    left.axhline(0, color="grey", lw=0.8)
    left.set(xlabel="PPO wall time (s)", ylabel="held-out gold gain (initial std)", title="outcome per run")
    right.set(xlabel="PPO wall time (s)", ylabel="normalised RM score of the rollout", title="training curves")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path = out / "estimators.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    config = parse_config(EstimatorStudyConfig, argv, prog="rlhf estimators")
    check_output_folder(config.out, "--out", config.overwrite, resume=config.resume, resume_flag="--resume true")
    out = start_output_folder(config.out, config.overwrite)
    console = Console()
    for estimator, seed in config.parsed_runs:
        if (out / run_name(estimator, seed) / "result.json").is_file():
            console.print(f"{run_name(estimator, seed)}: finished earlier, kept")
            continue
        run_one(config, estimator, seed, console)
    results = [json.loads(path.read_text()) for path in sorted(out.glob("*/result.json"))]
    rows = table_rows(results)
    table = Table(title="advantage estimators on the main job (same labels, reward model, prompts, episodes)")
    for column in ("estimator", "seeds", "gold gain (std)", "KL/seq", "NLL rise", "PPO s", "vs gae"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["estimator"], ",".join(map(str, row["seeds"])), f"{row['gold_gain_in_std']:+.2f}",
                      f"{row['kl_final']:.2f}", f"{row['nll_increase']:+.3f}", f"{row['ppo_seconds']:.0f}",
                      f"{row['time_vs_gae']:.2f}" if row["time_vs_gae"] is not None else "n/a")
    console.print(table)
    console.print(f"report: {write_table(out, rows)}, {plot(out, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
