"""`rlhf loop study --config configs/loop/text.yaml --out runs/loop/study`: the live loop against the one-shot
pipeline at the same label budget and the same number of PPO iterations.

Both runs use the same config, bots, prompts, seed and reward-model and PPO settings; they
differ only in `mode`: `one_shot` asks the whole budget on the initial policy's completions
and fits once (what `rlhf pipeline` does), `live` asks `initial_labels` of them first and the
rest on the current policy's completions while PPO runs, refitting every `refit_every` votes.
Writes ``out/live/``, ``out/one_shot/`` (each a whole loop run with its report) and
``out/study.md`` + ``out/study.png`` + ``out/study.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402

from pipeline.loop.config import MODES, LoopPaths, parse_config  # noqa: E402
from pipeline.loop.launch import launch, prepare  # noqa: E402
from pipeline.loop.report import fmt, rows, summarize  # noqa: E402
from rlhf.config import run_main  # noqa: E402


def plot_study(runs: dict[str, LoopPaths], path: Path) -> None:
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for mode, paths in runs.items():
        evaluations, metrics = rows(paths.eval), rows(paths.policy / "metrics.jsonl")
        steps = [e["step"] for e in evaluations]
        axes[0].plot(steps, [e["gold_gain_std"] for e in evaluations], marker="o", label=mode)
        axes[1].plot(steps, [e["divergence_std"] for e in evaluations], marker="o", label=mode)
        axes[2].plot([m["step"] for m in metrics], [m["objective/kl"] for m in metrics], label=mode)
    axes[0].set(title="held-out gold gain (initial std)", xlabel="PPO iteration")
    axes[1].set(title="proxy minus gold gain (initial std)", xlabel="PPO iteration")
    axes[2].set(title="KL per sequence (nats)", xlabel="PPO iteration")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_study(out: Path, runs: dict[str, LoopPaths]) -> Path:
    summaries = {mode: summarize(paths) for mode, paths in runs.items()}
    (out / "study.json").write_text(json.dumps(summaries, indent=2))
    plot_study(runs, out / "study.png")
    live, one_shot = summaries["live"], summaries["one_shot"]
    gold_ok = live["gold_gain_std"] is not None and one_shot["gold_gain_std"] is not None \
        and live["gold_gain_std"] >= one_shot["gold_gain_std"]
    divergence_ok = live["divergence_std"] is not None and one_shot["divergence_std"] is not None \
        and live["divergence_std"] < one_shot["divergence_std"]
    lines = ["# Live loop against one-shot labelling", "",
             f"Same budget ({live['votes']} and {one_shot['votes']} votes), same {live['iterations']} PPO iterations.", "",
             "| measure | live | one-shot |", "|---|---|---|"]
    for key, label, spec in [("gold_before", "held-out gold judge before", ".3f"),
                             ("gold_after", "held-out gold judge after", ".3f"),
                             ("gold_gain_std", "held-out gold gain (initial std)", "+.2f"),
                             ("proxy_gain_std", "held-out proxy gain (initial std)", "+.2f"),
                             ("divergence_std", "proxy minus gold (initial std)", "+.2f"),
                             ("kl_final", "KL per sequence, last iteration", ".2f"),
                             ("reward_versions", "reward versions", "d"),
                             ("policy_waited_seconds", "policy seconds waited after start-up", ".0f")]:
        lines.append(f"| {label} | {fmt(live[key], spec)} | {fmt(one_shot[key], spec)} |")
    lines += ["", f"- live gold gain >= one-shot: **{'met' if gold_ok else 'missed'}**",
              f"- live divergence < one-shot: **{'met' if divergence_ok else 'missed'}**", "",
              "![study](study.png)", "", "Each run's own report: [live](live/report.md), [one-shot](one_shot/report.md)."]
    path = out / "study.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config, _, _ = parse_config(argv, prog="rlhf loop study")  # checks everything before any run
    out = Path(config.out)
    console = Console()
    runs = {}
    for mode in ("one_shot", "live"):
        run_argv = argv + ["--mode", mode, "--out", str(out / mode)]
        run_config, rm_config, ppo_config = parse_config(run_argv, prog="rlhf loop study")
        console.print(f"[bold]{mode}[/] -> {run_config.out}")
        prepare(run_config, rm_config, ppo_config, console)
        launch(run_config, ppo_config, run_argv, console)
        runs[mode] = LoopPaths(run_config.out)
    report = write_study(out, {mode: runs[mode] for mode in MODES})
    console.print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
