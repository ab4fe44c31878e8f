"""The live loop's report (``out/report.md``, ``out/loop.png``, ``out/summary.json``), read
from the files the parts wrote, and the study's comparison of a live and a one-shot run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.loop.config import LoopPaths  # noqa: E402
from rlhf.preferences import read_jsonl  # noqa: E402


def rows(path: Path) -> list[dict]:
    return [row for _, row in read_jsonl(path)] if path.exists() and path.stat().st_size else []


def versions(paths: LoopPaths) -> list[dict]:
    """Each published reward version's meta.json, in order."""
    found = sorted(paths.reward.glob("v[0-9][0-9][0-9][0-9]"))
    return [json.loads((folder / "meta.json").read_text()) for folder in found]


def vote_times(paths: LoopPaths) -> list[float]:
    """When each pulled vote was answered (from the app's vote record in the comparison)."""
    return sorted(label["comparison"]["meta"]["answered_at"] for label in rows(paths.labels)
                  if label.get("comparison") and "answered_at" in label["comparison"].get("meta", {}))


def round_trips(paths: LoopPaths) -> list[float]:
    """The bots' vote round trips in ms (answer sent -> next item shown)."""
    return [row["round_trip_ms"] for row in rows(paths.out / "logs" / "bots_votes.jsonl") if "round_trip_ms" in row]


def loop_summary(paths: LoopPaths, metrics: list[dict]) -> dict:
    """What every loop reports (text or robot): votes, versions, switches, waiting, round trips.
    `metrics`: the policy part's rows, one per iteration, each with ``loop/reward_version``."""
    fits = versions(paths)
    policy = json.loads((paths.policy / "summary.json").read_text()) if (paths.policy / "summary.json").exists() else {}
    trips = round_trips(paths)
    return {
        "iterations": len(metrics), "votes": len(rows(paths.labels)), "items_sent": policy.get("items_sent"),
        "reward_versions": len(fits),
        "version_votes": [fit["votes"] for fit in fits],
        "version_heldout_accuracy": [fit["heldout_accuracy"] for fit in fits],
        "version_switch_iterations": [m["step"] for prev, m in zip(metrics, metrics[1:])
                                      if m["loop/reward_version"] != prev["loop/reward_version"]],
        "policy_waited_seconds": float(sum(m.get("loop/waited_seconds", 0.0) for m in metrics)),
        "startup_seconds": policy.get("startup_seconds"),
        "vote_round_trip_ms": {"n": len(trips), "p50": float(np.percentile(trips, 50)) if trips else None,
                               "p95": float(np.percentile(trips, 95)) if trips else None},
    }


def summarize(paths: LoopPaths) -> dict:
    metrics, evaluations = rows(paths.policy / "metrics.jsonl"), rows(paths.eval)
    first, last = (evaluations[0], evaluations[-1]) if evaluations else ({}, {})
    return loop_summary(paths, metrics) | {
        "gold_before": first.get("gold"), "gold_after": last.get("gold"),
        "gold_gain_std": last.get("gold_gain_std"), "proxy_gain_std": last.get("proxy_gain_std"),
        "divergence_std": last.get("divergence_std"),
        "kl_final": metrics[-1]["objective/kl"] if metrics else None,
    }


def plot_panels(path: Path, paths: LoopPaths, metrics: list[dict], panels: list[tuple]) -> None:
    """loop.png: votes over time with the versions' publication times, the reward version in
    use per iteration, then each of `panels` (title, x label, x, y or {label: y})."""
    fits, times = versions(paths), vote_times(paths)
    figure, axes = plt.subplots(1, 2 + len(panels), figsize=(4.5 * (2 + len(panels)), 3.6))
    if times:
        start = times[0]
        axes[0].step([t - start for t in times], np.arange(1, len(times) + 1), where="post")
        for fit in fits:
            axes[0].axvline(fit["published_at"] - start, color="grey", linestyle=":", linewidth=1)
    axes[0].set(title="votes over time (dotted: reward versions)", xlabel="seconds since the first vote", ylabel="votes")
    axes[1].step([m["step"] for m in metrics], [m["loop/reward_version"] for m in metrics], where="post")
    axes[1].set(title="reward version in use", xlabel="iteration", ylabel="version")
    for axis, (title, xlabel, x, ys) in zip(axes[2:], panels):
        for label, y in (ys.items() if isinstance(ys, dict) else [(None, ys)]):
            axis.plot(x, y, marker="o", label=label)
        if isinstance(ys, dict):
            axis.legend(fontsize=8)
        axis.set(title=title, xlabel=xlabel)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_loop(paths: LoopPaths, path: Path) -> None:
    metrics, evaluations = rows(paths.policy / "metrics.jsonl"), rows(paths.eval)
    eval_steps = [e["step"] for e in evaluations]
    plot_panels(path, paths, metrics, [
        ("held-out gain over the initial policy (initial std)", "PPO iteration", eval_steps,
         {"gold judge": [e["gold_gain_std"] for e in evaluations],
          "proxy (reward model)": [e["proxy_gain_std"] for e in evaluations]}),
        ("KL per sequence (nats)", "PPO iteration", [m["step"] for m in metrics],
         [m["objective/kl"] for m in metrics])])


def fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def overview(summary: dict, iterations: str) -> str:
    return (f"{summary['iterations']} {iterations}; {summary['votes']} votes; {summary['reward_versions']} reward "
            f"versions; the policy part waited {summary['policy_waited_seconds']:.0f} s on labels or the reward part "
            f"after its start-up ({fmt(summary['startup_seconds'], '.0f')} s until the first reward model).")


def round_trip_row(summary: dict) -> str:
    trips = summary["vote_round_trip_ms"]
    return (f"| vote round trip p50 / p95 (ms, {trips['n']} bot votes) | {fmt(trips['p50'], '.0f')} / "
            f"{fmt(trips['p95'], '.0f')} |")


def version_table(summary: dict) -> list[str]:
    return ["| reward version | votes | held-out accuracy |", "|---|---|---|"] + [
        f"| {i + 1} | {votes} | {fmt(acc)} |"
        for i, (votes, acc) in enumerate(zip(summary["version_votes"], summary["version_heldout_accuracy"]))]


def write_report(paths: LoopPaths) -> Path:
    summary = summarize(paths)
    (paths.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_loop(paths, paths.out / "loop.png")
    lines = [
        "# Live preference loop", "",
        overview(summary, "PPO iterations"), "",
        "| measure | value |", "|---|---|",
        f"| held-out gold judge, before -> after | {fmt(summary['gold_before'])} -> {fmt(summary['gold_after'])} |",
        f"| held-out gold gain (initial std) | {fmt(summary['gold_gain_std'], '+.2f')} |",
        f"| held-out proxy gain (initial std, last reward version) | {fmt(summary['proxy_gain_std'], '+.2f')} |",
        f"| proxy minus gold (initial std) | {fmt(summary['divergence_std'], '+.2f')} |",
        f"| KL per sequence, last iteration (nats) | {fmt(summary['kl_final'])} |",
        round_trip_row(summary), "",
        "![the loop](loop.png)", "", *version_table(summary),
    ]
    last = (rows(paths.eval) or [{}])[-1]
    if last.get("samples"):
        lines += ["", f"## Held-out samples at iteration {last['step']}", ""]
        lines += [f"- **{s['prompt']}** {s['text']}" for s in last["samples"]]
    path = paths.out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
