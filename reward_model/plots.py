"""The evaluation report's pictures: margin histogram, reliability diagram, per-subset accuracy,
RM-Bench's style matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from reward_model.benchmarks import ScoredExample
from rlhf.metrics import ranking_pairs


def plot_margins(examples: list[ScoredExample], path: Path) -> None:
    margins = [e.scores[b] - e.scores[w] for e in examples for b, w in ranking_pairs(e.ranks)[0]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(margins, bins=30, color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_xlabel("margin r(chosen) - r(rejected)")
    ax.set_ylabel("pairs")
    ax.set_title(f"Margin distribution (n = {len(margins)} pairs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(calibration: dict | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.5, 1.0], [0.5, 1.0], linestyle="--", color="grey", label="perfect calibration")
    if calibration is not None:
        bins = calibration["bins"]
        filled = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
        if filled:
            ax.plot(*zip(*filled), marker="o", label=f"model (ECE {calibration['ece']:.3f})")
    ax.set_xlabel("confidence max(p, 1 - p), p = sigmoid(margin)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_subset_accuracy(subsets: dict[str, dict], path: Path) -> None:
    names = [name for name, block in subsets.items() if block["accuracy"] is not None]
    accuracies = [subsets[n]["accuracy"] for n in names]
    lower = [a - (subsets[n]["ci95"] or [a, a])[0] for n, a in zip(names, accuracies)]
    upper = [(subsets[n]["ci95"] or [a, a])[1] - a for n, a in zip(names, accuracies)]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 2), 4))
    ax.bar(range(len(names)), accuracies, yerr=[lower, upper], capsize=3, color="tab:green", alpha=0.8)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)  # random guessing on pairs
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("strict accuracy (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_rmbench_matrix(block: dict, path: Path) -> None:
    """RM-Bench's 3x3 accuracy matrix (rows: chosen style, columns: rejected style) as a heat
    map; above the diagonal is hard, below easy."""
    styles = [s.replace("_", "\n") for s in block["styles"]]
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    image = ax.imshow(block["matrix"], vmin=0, vmax=1, cmap="viridis")
    for i, row in enumerate(block["matrix"]):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set_xticks(range(len(styles)), styles)
    ax.set_yticks(range(len(styles)), styles)
    ax.set_xlabel("rejected answer style")
    ax.set_ylabel("chosen answer style")
    ax.set_title(f"RM-Bench accuracy by style (score {block['score']:.3f})\n"
                 f"hard {block['hard']:.3f} (above diagonal), normal {block['normal']:.3f}, easy {block['easy']:.3f}",
                 fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_checkpoint_metrics(histories: list[list[dict]], names: list[str], path: Path) -> None:
    """The held-out report's numbers at every evaluation of a training run: one panel per
    metric (``eval_<name>`` in the log histories) over the optimizer step, one line per
    ensemble member."""
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for member, history in enumerate(histories):
            points = [(entry["step"], entry[f"eval_{name}"]) for entry in history if f"eval_{name}" in entry]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3,
                        label=f"member {member}" if len(histories) > 1 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    if len(histories) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle("Held-out report at every evaluation (eval/<name>)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
