"""The pipeline's report: training curves, gold against KL, the reward-hacking monitors (PNG)
and report.md."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ppo.monitors import CHECKS  # noqa: E402
from rlhf.rubric import WEIGHTS  # noqa: E402

CURVES = [("objective/scores", "normalised RM score"), ("objective/kl", "KL per sequence (nats)"),
          ("loss/ptx_nll", "ptx NLL (pretraining text)"), ("response/length", "response length (tokens)")]


def plot_metric(axis, history: list[dict], key: str, title: str) -> np.ndarray:
    """One metric of metrics.jsonl against the PPO iteration (NaN where an iteration lacks it);
    returns the iterations, for what the caller adds to the panel."""
    steps = np.arange(1, len(history) + 1)
    axis.plot(steps, [h.get(key, math.nan) for h in history], marker=".")
    axis.set_title(title)
    axis.set_xlabel("PPO iteration")
    axis.grid(alpha=0.3)
    return steps


def save_figure(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_curves(history: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(1, len(CURVES), figsize=(16, 3.4))
    for axis, (key, title) in zip(axes, CURVES):
        plot_metric(axis, history, key, title)
    save_figure(figure, path)


# One panel per check (proxy_gold_divergence: the proxy score and the gold on twin axes).
MONITOR_PANELS = {"kl_runaway": ("objective/kl", "KL per sequence (nats)"),
                  "entropy_collapse": ("objective/entropy", "mean token entropy (nats)"),
                  "length_drift": ("response/length", "response length (tokens)"),
                  "clip_jump": ("policy/clipfrac_avg", "clip fraction"),
                  "proxy_gold_divergence": ("objective/scores", "proxy score; gold (red, right axis)")}


def plot_monitors(history: list[dict], warnings: list[dict], path: Path) -> None:
    """The metrics the reward-hacking monitors watch, a red line at the iteration each check fired."""
    fired = {w["check"]: w["iteration"] for w in warnings}
    figure, axes = plt.subplots(1, len(MONITOR_PANELS), figsize=(18, 3.2))
    for axis, (check, (key, title)) in zip(axes, MONITOR_PANELS.items()):
        steps = plot_metric(axis, history, key, title)
        if check == "proxy_gold_divergence":
            twin = axis.twinx()
            twin.plot(steps, [h.get("objective/gold", math.nan) for h in history], marker=".", color="crimson")
        if check in fired:
            axis.axvline(fired[check], color="red", linewidth=1.5)
            axis.text(fired[check], 1.0, f" {check}", color="red", fontsize=7, transform=axis.get_xaxis_transform(),
                      va="top")
    save_figure(figure, path)


def monitor_rows(warnings: list[dict]) -> list[str]:
    """report.md's table: each check, the iteration it fired at (or "no") and what it saw."""
    fired = {w["check"]: w for w in warnings}
    rows = ["| check | fired at iteration | what it saw |", "|---|---|---|"]
    for check in CHECKS:
        warning = fired.get(check)
        rows.append(f"| {check} | {warning['iteration']} | {warning['seen']} |" if warning else f"| {check} | no | |")
    return rows


def plot_gold_vs_kl(history: list[dict], before: dict, after: dict, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 4))
    kl = [h["objective/kl"] for h in history]
    score = [h["objective/scores"] for h in history]
    axis.scatter(kl, score, c=np.arange(len(kl)), cmap="viridis", label="training rollouts: RM score")
    axis.set_xlabel("KL per sequence (nats)")
    axis.set_ylabel("normalised RM score")
    twin = axis.twinx()
    twin.errorbar([0, kl[-1]], [before["mean"], after["mean"]], yerr=[before["std"], after["std"]],
                  color="crimson", marker="s", capsize=4, label="held-out gold judge (before, after)")
    twin.set_ylabel("gold judge score", color="crimson")
    figure.legend(loc="upper left", bbox_to_anchor=(0.12, 0.97), fontsize=8)  # clear of the axis labels
    save_figure(figure, path)


def write_report(out: Path, policy_model: str, summary: dict, samples: list[tuple[str, str, str]]) -> Path:
    before, after = summary["gold_before"], summary["gold_after"]
    lines = [
        "# RLHF pipeline report", "",
        f"Policy `{policy_model}`; {summary['train_prompts']} training and {summary['heldout_prompts']} held-out prompts; "
        f"{summary['comparisons']} comparisons ({summary['label_source']}); {summary['ppo_steps']} PPO iterations.", "",
        "| measure | before | after |", "|---|---|---|",
        f"| gold judge score on held-out prompts (mean ± std) | {before['mean']:.3f} ± {before['std']:.3f} | "
        f"{after['mean']:.3f} ± {after['std']:.3f} |",
        f"| words per held-out answer | {before['words']:.1f} | {after['words']:.1f} |",
        f"| share of held-out answers on the prompt's topic | {before['topical']:.1%} | {after['topical']:.1%} |",
        f"| share of held-out answers that are content-free | {before['content_free']:.1%} | "
        f"{after['content_free']:.1%} |",
        f"| NLL on held-out pretraining text (nats/token) | {summary['nll_before']:.4f} | {summary['nll_after']:.4f} |",
        f"| KL per sequence (last training iteration, nats) | 0 | {summary['kl_final']:.3f} |",
        f"| KL per sequence (mean of the last 5 iterations, nats) | 0 | {summary['kl_mean_last5']:.3f} |", "",
        f"Gold change in units of the initial spread: **{summary['gold_gain_in_std']:+.2f} std** (the most this "
        f"measure allows, every held-out answer at the judge's maximum 1.0: {summary['gold_gain_ceiling_in_std']:+.2f} "
        "std).", "",
        "Where the gold went: the mean of each property of the judge (docs/gold_judge.md) on the held-out answers.", "",
        "| property | weight | before | after |", "|---|---|---|---|",
        *(f"| {name} | {weight:.2f} | {before['properties'][name]:.3f} | {after['properties'][name]:.3f} |"
          for name, weight in WEIGHTS.items()), "",
        "![training curves](curves.png)", "", "![gold against KL](gold_vs_kl.png)", "",
        f"Reward model: held-out accuracy {summary['rm_eval_accuracy']}.", "",
        "## Reward-hacking monitors", "",
        "Checks on every PPO iteration's metrics, the gold judge scoring each rollout (rules: docs/ppo.md); "
        "each warns once.", "",
        *monitor_rows(summary["monitors"]), "", "![reward-hacking monitors](monitors.png)", "",
        "## Samples (5 held-out prompts drawn at random, seed = the config's seed)", "",
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
