"""The whole RLHF loop in one command: `rlhf pipeline --config configs/pipeline/<name>.yaml`.

1. comparisons: K completions per built-in prompt sampled from the policy and ranked by the
   simulated rubric teacher, or people's labels exported by the labelling app (`labels:`);
2. a reward model trained on the training prompts (`reward_model_config`);
3. PPO with a per-token KL penalty and the ptx term on the training prompts (`ppo_config`);
4. a report (Markdown + PNG): reward, KL and ptx-NLL curves, the gold rubric score on
   held-out prompts before and after, NLL on held-out pretraining text before and after,
   and sample completions before and after.

Config keys (YAML; `--key value` on the command line overrides one):
  policy_model, num_prompts, k, max_new_tokens, temperature, eps, heldout_fraction, labels,
  reward_model_config, reward_model_overrides, ppo_config, ppo_overrides,
  eval_max_new_tokens, eval_temperature, pretrain_heldout, ptx_ablation, out, seed

With `ptx_ablation: true` PPO runs twice from the same reward model, prompts and seed:
as configured, and with `ptx_coef: 0`; the report compares how much each run raised the
NLL of held-out pretraining text (the point of the ptx term, eq. 15.12).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


@dataclass
class PipelineConfig:
    policy_model: str = "smollm2-135m-instruct"  # the SFT policy that writes the comparisons and is tuned
    num_prompts: int | None = None  # first N built-in prompts (None = all 233)
    k: int = 4  # completions per prompt for the comparisons
    max_new_tokens: int = 96  # length of the sampled completions
    temperature: float = 1.0  # sampling temperature for the comparisons
    eps: float = 0.1  # the simulated teacher's mistake probability
    heldout_fraction: float = 0.25  # share of prompts held out from RM and PPO training
    labels: str | None = None  # a labelling-app export (core/ranked/TRL JSONL): people's labels instead of the teacher
    reward_model_config: str = "configs/reward_model/quickstart.yaml"
    reward_model_overrides: list[str] = field(default_factory=list)  # e.g. ["--num_train_epochs", "1"]
    ppo_config: str = "configs/ppo/quickstart.yaml"
    ppo_overrides: list[str] = field(default_factory=list)  # e.g. ["--ptx_coef", "0"]
    eval_max_new_tokens: int = 64  # completions on held-out prompts before/after PPO
    eval_temperature: float = 0.7
    pretrain_heldout: str = "ppo/data/pretrain_heldout.txt"  # NLL drift is measured here
    ptx_ablation: bool = False  # also run PPO with ptx_coef 0 and compare the NLL rise on held-out pretraining text
    out: str = "runs/pipeline/quickstart"
    seed: int = 0


def load_config(argv: list[str] | None) -> PipelineConfig:
    import yaml

    parser = argparse.ArgumentParser(prog="rlhf pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="pipeline YAML (configs/pipeline/)")
    args, rest = parser.parse_known_args(argv)
    path = Path(args.config)
    if not path.exists():
        parser.error(f"--config: {path} does not exist")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        parser.error(f"{path}: expected a mapping of config keys")
    known = {f.name for f in fields(PipelineConfig)}
    while rest:  # --key value overrides, values parsed as YAML
        key = rest.pop(0)
        if not key.startswith("--") or not rest:
            parser.error(f"expected '--key value' overrides, got {key!r}")
        values[key[2:]] = yaml.safe_load(rest.pop(0))
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"{path}: unknown keys {unknown}; expected some of {sorted(known)}")
    config = PipelineConfig(**values)
    for name in ("reward_model_config", "ppo_config"):
        if not Path(getattr(config, name)).exists():
            parser.error(f"{name}: {getattr(config, name)} does not exist")
    if config.labels is not None and not Path(config.labels).exists():
        parser.error(f"labels: {config.labels} does not exist")
    if not 0 < config.heldout_fraction < 1:
        parser.error(f"heldout_fraction: expected a share in (0, 1), got {config.heldout_fraction}")
    return config


@torch.no_grad()
def text_nll(model, tokenizer, text: str, block: int = 128) -> float:
    """Mean token negative log-likelihood of a text, in blocks of `block` tokens."""
    ids = tokenizer(text)["input_ids"]
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, block):
        chunk = torch.tensor([ids[start:start + block + 1]])
        if chunk.shape[1] < 2:
            break
        logits = model(chunk[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
        total, count = total + loss.item(), count + chunk.shape[1] - 1
    return total / max(count, 1)


def build_comparisons(config: PipelineConfig, out: Path, console):
    """Rankings of the policy's completions by the simulated teacher, or imported labels."""
    from reward_model.demo import rubric_rankings, sample_or_reuse
    from rlhf.generation import builtin_prompts
    from rlhf.preferences import load_comparisons

    if config.labels is not None:
        comparisons = load_comparisons(config.labels)
        console.print(f"   {len(comparisons)} labelled comparisons from {config.labels}")
        return comparisons
    prompts = builtin_prompts()[: config.num_prompts]
    sampling = SimpleNamespace(model=config.policy_model, k=config.k, max_new_tokens=config.max_new_tokens,
                               temperature=config.temperature, seed=config.seed, sample_batch_size=64)
    completions = sample_or_reuse(sampling, prompts, out, console)
    return rubric_rankings(completions, prompts, config.eps, config.seed)[1]


def split_prompts(comparisons, fraction: float, seed: int):
    """`reward_model.train.split_by_prompt` with numpy's seeded permutation (the order every
    pipeline number in the README was measured with)."""
    from reward_model.train import split_by_prompt

    return split_by_prompt(comparisons, fraction, seed,
                           permutation=lambda n: np.random.default_rng(seed).permutation(n).tolist())


def gold_summary(texts: list[str], prompts: list[str]) -> dict:
    from rlhf.rubric import gold_score

    scores = np.array([gold_score(t, p) for t, p in zip(texts, prompts)])
    return {"mean": float(scores.mean()), "std": float(scores.std()), "n": len(scores),
            "words": float(np.mean([len(t.split()) for t in texts])), **answer_shares(texts, prompts)}


def answer_shares(texts: list[str], prompts: list[str]) -> dict:
    """Share of answers that address the prompt's topic and share that are content-free
    (the gold judge's on_topic property and its content-free rule, rlhf.rubric)."""
    from rlhf.rubric import is_content_free, on_topic_score

    return {"topical": float(np.mean([on_topic_score(t, p) == 1.0 for t, p in zip(texts, prompts)])),
            "content_free": float(np.mean([is_content_free(t, p) for t, p in zip(texts, prompts)]))}


def random_samples(prompts: list[str], before: list[str], after: list[str], n: int = 5, seed: int = 0) -> list:
    """`n` (prompt, before, after) triples drawn at random with a fixed seed, in prompt order
    (not the first n, which a reader could suspect were picked)."""
    chosen = np.random.default_rng(seed).choice(len(prompts), size=min(n, len(prompts)), replace=False)
    return [(prompts[i], before[i], after[i]) for i in sorted(chosen.tolist())]


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(history) + 1)
    panels = [("reward/score", "normalised RM score"), ("kl/per_sequence", "KL per sequence (nats)"),
              ("loss/ptx_nll", "ptx NLL (pretraining text)"), ("response/length", "response length (tokens)")]
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for axis, (key, title) in zip(axes, panels):
        values = [h.get(key, math.nan) for h in history]
        axis.plot(steps, values, marker=".")
        axis.set_title(title)
        axis.set_xlabel("PPO iteration")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_gold_vs_kl(history: list[dict], before: dict, after: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4))
    kl = [h["kl/per_sequence"] for h in history]
    score = [h["reward/score"] for h in history]
    axis.scatter(kl, score, c=np.arange(len(kl)), cmap="viridis", label="training rollouts: RM score")
    axis.set_xlabel("KL per sequence (nats)")
    axis.set_ylabel("normalised RM score")
    twin = axis.twinx()
    twin.errorbar([0, kl[-1]], [before["mean"], after["mean"]], yerr=[before["std"], after["std"]],
                  color="crimson", marker="s", capsize=4, label="held-out gold rubric (before, after)")
    twin.set_ylabel("gold rubric score", color="crimson")
    figure.legend(loc="upper left", bbox_to_anchor=(0.12, 0.97), fontsize=8)  # clear of the axis labels
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(out: Path, config: PipelineConfig, summary: dict, samples: list[tuple[str, str, str]]) -> Path:
    before, after = summary["gold_before"], summary["gold_after"]
    lines = [
        "# RLHF pipeline report", "",
        f"Policy `{config.policy_model}`; {summary['train_prompts']} training and {summary['heldout_prompts']} held-out prompts; "
        f"{summary['comparisons']} comparisons ({summary['label_source']}); {summary['ppo_steps']} PPO iterations.", "",
        "| measure | before | after |", "|---|---|---|",
        f"| gold rubric score on held-out prompts (mean ± std) | {before['mean']:.3f} ± {before['std']:.3f} | "
        f"{after['mean']:.3f} ± {after['std']:.3f} |",
        f"| words per held-out answer | {before['words']:.1f} | {after['words']:.1f} |",
        f"| share of held-out answers on the prompt's topic | {before['topical']:.1%} | {after['topical']:.1%} |",
        f"| share of held-out answers that are content-free | {before['content_free']:.1%} | {after['content_free']:.1%} |",
        f"| NLL on held-out pretraining text (nats/token) | {summary['nll_before']:.4f} | {summary['nll_after']:.4f} |",
        f"| KL per sequence (last training iteration, nats) | 0 | {summary['kl_final']:.3f} |",
        f"| KL per sequence (mean of the last 5 iterations, nats) | 0 | {summary['kl_mean_last5']:.3f} |", "",
        f"Gold change in units of the initial spread: **{summary['gold_gain_in_std']:+.2f} std**.", "",
        "![training curves](curves.png)", "", "![gold against KL](gold_vs_kl.png)", "",
        f"Reward model: held-out accuracy {summary['rm_eval_accuracy']}.", "", "## Samples (5 held-out prompts drawn at random, seed = the config's seed)", "",
    ]
    for prompt, old, new in samples:
        lines += [f"**{prompt}**", "", f"- before: {old}", f"- after: {new}", ""]
    if "ablation" in summary:
        rows = summary["ablation"]
        lines += ["## ptx ablation (same reward model, prompts and seed)", "",
                  "| ptx_coef | NLL rise on held-out pretraining text | gold after (held-out) | KL per sequence (last) |",
                  "|---|---|---|---|"]
        lines += [f"| {row['ptx_coef']} | {row['nll_increase']:+.4f} | {row['gold_after']:.3f} | {row['kl_final']:.2f} |"
                  for row in rows["runs"]]
        lines += ["", f"NLL rise with ptx / without: **{rows['nll_rise_ratio']:.2f}** (the target is at most 0.5).", ""]
    lines += ["## Timings (s)", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in summary["timings"].items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv)
    from rich.console import Console

    from ppo.config import PPOConfigError
    from ppo.config import parse_config as parse_ppo_config
    from ppo.trainer import PPOTrainer, generate_completions
    from reward_model.train import parse_config as parse_rm_config
    from reward_model.train import train as train_reward_model
    from rlhf.models import load_model, load_tokenizer
    from rlhf.preferences import save_comparisons

    console = Console()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline_config.json").write_text(json.dumps(asdict(config), indent=2))
    timings, started = {}, time.time()

    console.print("[bold]1.[/] comparisons")
    comparisons = build_comparisons(config, out, console)
    train_rows, heldout_rows = split_prompts(comparisons, config.heldout_fraction, config.seed)
    save_comparisons(train_rows, out / "train.jsonl")
    save_comparisons(heldout_rows, out / "heldout.jsonl")
    heldout_prompts = [c.prompt for c in heldout_rows]
    (out / "train_prompts.jsonl").write_text("".join(json.dumps({"prompt": c.prompt}) + "\n" for c in train_rows))
    timings["comparisons"] = time.time() - started

    console.print(f"[bold]2.[/] reward model on {len(train_rows)} training prompts")
    t0 = time.time()
    rm_dir = out / "reward_model"
    rm_config = parse_rm_config(["--config", config.reward_model_config, "--train_data", str(out / "train.jsonl"),
                                 "--eval_data", str(out / "heldout.jsonl"), "--output_dir", str(rm_dir),
                                 "--seed", str(config.seed), *config.reward_model_overrides])
    rm_summary = train_reward_model(rm_config)
    evals = [e for e in rm_summary["log_history"][-1] if "eval_accuracy" in e]
    rm_accuracy = f"{evals[-1]['eval_accuracy']:.3f} (noisy labels)" if evals else "n/a"
    timings["reward_model"] = time.time() - t0

    console.print("[bold]3.[/] PPO with KL penalty and ptx")
    t0 = time.time()
    variants = {"ppo": []}
    if config.ptx_ablation:
        variants["ppo_no_ptx"] = ["--ptx_coef", "0"]
    runs = {}
    try:
        for name, extra in variants.items():
            ppo_config = parse_ppo_config(["--config", config.ppo_config, "--policy_model", config.policy_model,
                                           "--reward_models", str(rm_dir), "--prompts", str(out / "train_prompts.jsonl"),
                                           "--output_dir", str(out / name), "--seed", str(config.seed),
                                           *config.ppo_overrides, *extra])
            if extra:
                console.print(f"   ablation run {name}: {' '.join(extra)}")
            runs[name] = (ppo_config, PPOTrainer(ppo_config).train())
    except PPOConfigError as err:
        console.print(f"[red]error[/]: {err}")
        return 2
    ppo_config, ppo_summary = runs["ppo"]
    history = ppo_summary["history"]
    timings["ppo"] = time.time() - t0

    console.print(f"[bold]4.[/] evaluation on {len(heldout_prompts)} held-out prompts")
    t0 = time.time()
    tokenizer = load_tokenizer(config.policy_model, padding_side="left")
    sample = dict(max_new_tokens=config.eval_max_new_tokens, temperature=config.eval_temperature, seed=config.seed,
                  stop_token=ppo_config.stop_token)
    pretrain_text = Path(config.pretrain_heldout).read_text(encoding="utf-8")

    def evaluate(model) -> tuple[list[str], dict, float]:
        texts = generate_completions(model, heldout_prompts, tokenizer=tokenizer, **sample)
        return texts, gold_summary(texts, heldout_prompts), text_nll(model, tokenizer, pretrain_text)

    before_texts, before, nll_before = evaluate(load_model(config.policy_model, seed=config.seed))
    after = {name: evaluate(load_model(summary["policy_dir"])) for name, (_, summary) in runs.items()}
    after_texts, after_gold, nll_after = after["ppo"]
    timings["evaluation"] = time.time() - t0
    timings["total"] = time.time() - started

    summary = {
        "comparisons": len(comparisons), "label_source": "people" if config.labels else f"mistake teacher eps={config.eps}",
        "train_prompts": len(train_rows), "heldout_prompts": len(heldout_rows), "ppo_steps": ppo_summary["steps"],
        "gold_before": before, "gold_after": after_gold,
        "gold_gain_in_std": (after_gold["mean"] - before["mean"]) / max(before["std"], 1e-9),
        "kl_final": history[-1]["kl/per_sequence"], "kl_mean_last5": float(np.mean([h["kl/per_sequence"] for h in history[-5:]])),
        "nll_before": nll_before, "nll_after": nll_after, "nll_increase": nll_after - nll_before,
        "rm_eval_accuracy": rm_accuracy, "policy_dir": ppo_summary["policy_dir"], "timings": timings,
    }
    if config.ptx_ablation:
        rows = [{"run": name, "ptx_coef": runs[name][0].ptx_coef, "nll_increase": after[name][2] - nll_before,
                 "gold_after": after[name][1]["mean"], "kl_final": runs[name][1]["history"][-1]["kl/per_sequence"]}
                for name in runs]
        with_ptx, without = rows[0]["nll_increase"], rows[1]["nll_increase"]
        # a ratio only means something when dropping ptx let the NLL rise
        ratio = with_ptx / without if without > 0 else math.nan
        summary["ablation"] = {"runs": rows, "nll_rise_ratio": ratio}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_curves(history, out / "curves.png")
    plot_gold_vs_kl(history, before, after_gold, out / "gold_vs_kl.png")
    samples = random_samples(heldout_prompts, before_texts, after_texts, seed=config.seed)
    report = write_report(out, config, summary, samples)
    console.print(
        f"\n[bold]held-out gold rubric[/]: {before['mean']:.3f} -> {after_gold['mean']:.3f} "
        f"({summary['gold_gain_in_std']:+.2f} initial std); KL/seq {summary['kl_final']:.2f} nats; "
        f"pretraining NLL {nll_before:.3f} -> {nll_after:.3f}; {timings['total']:.0f} s")
    if config.ptx_ablation:
        console.print(f"ptx ablation: NLL rise with ptx / without = {summary['ablation']['nll_rise_ratio']:.2f} "
                      "(target <= 0.5)")
    console.print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
