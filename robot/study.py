"""Study: the true-reward baseline against the learned-reward loop, over several seeds.

    python -m robot.study --config configs/robot/reach.yaml --seeds 0 1 2 [--out_dir runs/robot/study]
    rlhf robot study --config configs/robot/reach.yaml --seeds 0 1 2
    python -m robot.study --config configs/robot/smoke.yaml --seeds 0 1 --total_timesteps 1600   # any field

For every seed it runs `robot.train` twice with the same config and env-step budget, once
with `mode: true_reward` and once with `mode: learned`, one run after the other in this
process (out_dir/true_reward/seed_<s>, out_dir/learned/seed_<s>). The analysis reads only
the runs' metrics.jsonl and heldout.npz files, and writes to out_dir: study.md, study.png
and study.json.

Normalised score (how the target is measured). Returns on reach are negative (minus the
summed flange-target distance), so "90 % of the baseline's return" is measured between the
untrained policy and the baseline:

    score = (R - R_untrained) / (R_baseline - R_untrained)

0 = no better than the untrained policy, 1 = as good as the same learner (PPO or SAC, the
config's `learner`) on the true reward. R_untrained
is the true-reward run's round-0 evaluation (the initial policy, which both modes share:
same seed, same initialisation, same evaluation episodes); R_baseline is that run's final
evaluation. Per seed each run is normalised by its own seed's baseline; the study's score
uses the means over seeds of the three returns.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf.config import ConfigError, parse_config, run_main
from rlhf.outputs import check_output_folder, start_output_folder
from robot.config import RobotConfig
from robot.train import run

MODES = ("true_reward", "learned")
TARGET_SCORE = 0.9  # the learned-reward run must reach this normalised score
TARGET_BASELINE_SUCCESS = 0.9  # and the true-reward baseline this success rate


# --- the math (small pure functions, tested against hand values) ---------------------------

def normalised_score(returns, untrained, baseline):
    """(R - R_untrained) / (R_baseline - R_untrained), elementwise (numpy broadcasting)."""
    returns, untrained, baseline = (np.asarray(x, dtype=float) for x in (returns, untrained, baseline))
    gap = baseline - untrained
    if np.any(gap == 0):
        raise ValueError("the baseline's return equals the untrained return: the normalised score is undefined")
    return (returns - untrained) / gap


def mean_and_std(curves) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std over seeds of equally long curves, shape (seeds, points)."""
    curves = np.asarray(curves, dtype=float)
    if curves.ndim != 2:
        raise ValueError(f"expected curves of shape (seeds, points), got {curves.shape}")
    return curves.mean(axis=0), curves.std(axis=0)


def target_met(score: float, baseline_success: float) -> bool:
    """The study's target: learned-reward PPO at >= 0.9 normalised score while the
    true-reward baseline succeeds in >= 90 % of the evaluation episodes."""
    return bool(score >= TARGET_SCORE and baseline_success >= TARGET_BASELINE_SUCCESS)


def label_efficiency(rows: list[dict], untrained: float, baseline: float) -> tuple[np.ndarray, np.ndarray]:
    """(labels asked, normalised return) at each evaluation of a learned-reward run."""
    labels = np.array([row["labels"] for row in rows], dtype=float)
    return labels, normalised_score([row["eval_return"] for row in rows], untrained, baseline)


# --- command line ---------------------------------------------------------------------------

@dataclass
class StudyArgs:
    config: str | None
    seeds: list[int]
    out_dir: str
    overrides: list[str]


def parse_seeds(values: list[str]) -> list[int]:
    if not values:
        raise ConfigError("--seeds", "expected at least one integer, e.g. --seeds 0 1 2")
    seeds = []
    for value in values:
        try:
            seed = int(value)
        except ValueError:
            raise ConfigError("--seeds", f"expected integers such as --seeds 0 1 2, got {value!r}") from None
        if seed < 0:
            raise ConfigError("--seeds", f"expected seeds >= 0, got {seed}")
        seeds.append(seed)
    if len(set(seeds)) != len(seeds):
        raise ConfigError("--seeds", f"expected each seed once, got {values}")
    return seeds


def parse_args(argv: list[str]) -> StudyArgs:
    config, seeds, out_dir, rest, i = None, None, "runs/robot/study", [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--seeds":
            values = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                values.append(argv[i + 1])
                i += 1
            seeds = parse_seeds(values)
        elif token in ("--config", "--out_dir"):
            if i + 1 >= len(argv):
                raise ConfigError(token, "expected a value (a file or folder path)")
            if token == "--config":
                config = argv[i + 1]
            else:
                out_dir = argv[i + 1]
            i += 1
        else:
            rest.append(token)
        i += 1
    for token in rest:  # other fields (and their values) are checked by run_configs, before any run
        if token.split("=")[0] in ("--mode", "--seed"):
            raise ConfigError(token.split("=")[0], "no such flag here: the study sets it (both modes, every seed "
                                                   "in --seeds); remove it")
    return StudyArgs(config, seeds if seeds is not None else [0, 1, 2], out_dir, rest)


def run_configs(args: StudyArgs) -> list:
    """One checked config per (seed, mode); all errors surface before the first run."""
    configs = []
    base = ["--config", args.config] if args.config is not None else []
    for seed in args.seeds:
        for mode in MODES:
            out = Path(args.out_dir) / mode / f"seed_{seed}"
            configs.append(parse_config(RobotConfig, base + args.overrides + [
                "--seed", str(seed), "--mode", mode, "--out_dir", str(out), "--progress", "false"],
                prog="python -m robot.study"))
    return configs


# --- analysis -------------------------------------------------------------------------------

def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run robot.train there first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def analyse(out_dir: Path, seeds: list[int]) -> dict:
    """All study numbers, from the runs' metrics.jsonl (and heldout.npz) files only."""
    per_seed = []
    curves = {mode: {"steps": None, "return": [], "success": []} for mode in MODES}
    efficiency = []
    for seed in seeds:
        rows = {mode: read_metrics(out_dir / mode / f"seed_{seed}") for mode in MODES}
        untrained, baseline = rows["true_reward"][0]["eval_return"], rows["true_reward"][-1]["eval_return"]
        learned = rows["learned"][-1]
        labels, scores = label_efficiency(rows["learned"], untrained, baseline)
        efficiency.append(scores)
        entry = {
            "seed": seed, "untrained_return": untrained,
            "baseline_return": baseline, "baseline_success": rows["true_reward"][-1]["eval_success"],
            "learned_return": learned["eval_return"], "learned_success": learned["eval_success"],
            "labels": learned["labels"], "timesteps": {m: rows[m][-1]["timesteps"] for m in MODES},
            "normalised_score": float(normalised_score(learned["eval_return"], untrained, baseline)),
            "heldout_pearson": learned.get("heldout_pearson"), "heldout_spearman": learned.get("heldout_spearman"),
            "heldout_pair_accuracy": learned.get("heldout_pair_accuracy"),
            "wall_seconds": {m: rows[m][-1]["time"] for m in MODES},
        }
        if entry["timesteps"]["true_reward"] != entry["timesteps"]["learned"]:
            raise ValueError(f"seed {seed}: the modes used different env steps {entry['timesteps']}")
        heldout = out_dir / "learned" / f"seed_{seed}" / "heldout.npz"
        if heldout.is_file():
            with np.load(heldout) as data:
                entry["heldout_returns"] = {"true": data["true"].tolist(), "learned": data["learned"].tolist()}
        per_seed.append(entry)
        for mode in MODES:
            curves[mode]["steps"] = [row["timesteps"] for row in rows[mode]]
            curves[mode]["return"].append([row["eval_return"] for row in rows[mode]])
            curves[mode]["success"].append([row["eval_success"] for row in rows[mode]])
        efficiency_labels = labels.tolist()

    mean = {key: float(np.mean([s[key] for s in per_seed]))
            for key in ("untrained_return", "baseline_return", "baseline_success", "learned_return", "learned_success")}
    score = float(normalised_score(mean["learned_return"], mean["untrained_return"], mean["baseline_return"]))
    pearsons = [s["heldout_pearson"] for s in per_seed if s["heldout_pearson"] is not None]
    summary = {
        "seeds": seeds, "per_seed": per_seed, "mean": mean, "normalised_score": score,
        "normalised_score_per_seed_min": float(min(s["normalised_score"] for s in per_seed)),
        "heldout_pearson_mean": float(np.mean(pearsons)) if pearsons else None,
        "target_met": target_met(score, mean["baseline_success"]),
        "curves": {mode: {"steps": c["steps"],
                          "return_mean": mean_and_std(c["return"])[0].tolist(),
                          "return_std": mean_and_std(c["return"])[1].tolist(),
                          "success_mean": mean_and_std(c["success"])[0].tolist(),
                          "success_std": mean_and_std(c["success"])[1].tolist()} for mode, c in curves.items()},
        "label_efficiency": {"labels": efficiency_labels,
                             "score_mean": mean_and_std(efficiency)[0].tolist(),
                             "score_std": mean_and_std(efficiency)[1].tolist()},
    }
    return summary


# --- report ---------------------------------------------------------------------------------

def plot(summary: dict, path: Path, learner: str = "PPO") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"true_reward": "tab:blue", "learned": "tab:orange"}
    names = {"true_reward": f"{learner} on the true reward", "learned": f"{learner} on the learned reward"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    n = len(summary["seeds"])
    for mode, curve in summary["curves"].items():
        steps = np.array(curve["steps"])
        for ax, key in ((axes[0, 0], "return"), (axes[0, 1], "success")):
            mean, std = np.array(curve[f"{key}_mean"]), np.array(curve[f"{key}_std"])
            ax.plot(steps, mean, marker="o", color=colours[mode], label=names[mode])
            ax.fill_between(steps, mean - std, mean + std, color=colours[mode], alpha=0.2)
    axes[0, 0].set(xlabel="env steps", ylabel="true return (eval)", title=f"learning curves (mean +- std, {n} seeds)")
    axes[0, 0].legend()
    axes[0, 1].set(xlabel="env steps", ylabel="success rate (final distance < 5 cm)", ylim=(-0.05, 1.05),
                   title="success rate")
    eff = summary["label_efficiency"]
    labels, mean, std = np.array(eff["labels"]), np.array(eff["score_mean"]), np.array(eff["score_std"])
    axes[1, 0].plot(labels, mean, marker="o", color=colours["learned"])
    axes[1, 0].fill_between(labels, mean - std, mean + std, color=colours["learned"], alpha=0.2)
    axes[1, 0].axhline(TARGET_SCORE, color="grey", linestyle="--", label=f"target {TARGET_SCORE}")
    axes[1, 0].axhline(1.0, color=colours["true_reward"], linestyle=":", label="true-reward baseline (final)")
    axes[1, 0].set(xlabel="labels asked", ylabel="normalised return", title="label efficiency")
    axes[1, 0].legend()
    for entry in summary["per_seed"]:
        if "heldout_returns" in entry:
            held = entry["heldout_returns"]
            axes[1, 1].scatter(held["true"], held["learned"], s=5, alpha=0.5,
                               label=f"seed {entry['seed']}: Pearson {entry['heldout_pearson']:.3f}")
    axes[1, 1].set(xlabel="true segment return", ylabel="learned segment return", title="held-out segments (final)")
    axes[1, 1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pct(x) -> str:
    return f"{100 * x:.0f} %"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def write_markdown(summary: dict, path: Path, command: str, wall_seconds: float, config) -> Path:
    mean, learner = summary["mean"], config.learner.upper()
    lines = [
        f"# Robot study: {config.task}, true-reward {learner} vs learned-reward {learner}, {len(summary['seeds'])} seeds",
        "",
        f"Command: `{command}`", "",
        f"- env steps per run (both modes): {config.total_timesteps}; labels (learned): {config.label_budget}, "
        f"teacher {config.teacher} {config.teacher_kwargs}, reward features {config.reward_features}",
        f"- wall time of the whole study: {wall_seconds:.0f} s ({wall_seconds / 60:.1f} min), runs one after the other",
        "- normalised score = (R - R_untrained) / (R_baseline - R_untrained) on the true return "
        f"(0: untrained policy, 1: {learner} on the true reward); study score from the means over seeds",
        "",
        "| seed | untrained return | baseline return | baseline success | learned return | learned success | "
        "normalised score | held-out Pearson | held-out Spearman |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary["per_seed"]:
        lines.append(f"| {s['seed']} | {s['untrained_return']:.2f} | {s['baseline_return']:.2f} | "
                     f"{_pct(s['baseline_success'])} | {s['learned_return']:.2f} | {_pct(s['learned_success'])} | "
                     f"{s['normalised_score']:.3f} | {_num(s['heldout_pearson'])} | {_num(s['heldout_spearman'])} |")
    pearson_mean = summary["heldout_pearson_mean"]
    lines += [
        f"| mean | {mean['untrained_return']:.2f} | {mean['baseline_return']:.2f} | {_pct(mean['baseline_success'])} | "
        f"{mean['learned_return']:.2f} | {_pct(mean['learned_success'])} | {summary['normalised_score']:.3f} | "
        f"{_num(pearson_mean)} | |",
        "",
        f"**Target** (normalised score >= {TARGET_SCORE} and baseline success >= {_pct(TARGET_BASELINE_SUCCESS)}): "
        f"{'met' if summary['target_met'] else 'not met'} (score {summary['normalised_score']:.3f}, "
        f"lowest seed {summary['normalised_score_per_seed_min']:.3f}; baseline success {_pct(mean['baseline_success'])}).",
        "",
        "Label efficiency (learned runs, mean over seeds):", "",
        "| labels asked | " + " | ".join(f"{x:.0f}" for x in summary["label_efficiency"]["labels"]) + " |",
        "|---|" + "---|" * len(summary["label_efficiency"]["labels"]),
        "| normalised return | " + " | ".join(f"{x:.2f}" for x in summary["label_efficiency"]["score_mean"]) + " |",
        "",
        "![study](study.png)", "",
    ]
    path.write_text("\n".join(lines))
    return path


# --- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    torch.set_num_threads(1)
    args = parse_args(argv)
    configs = run_configs(args)
    check_output_folder(args.out_dir, "--out_dir", configs[0].overwrite)
    out_dir = start_output_folder(args.out_dir, configs[0].overwrite)  # every config is checked: replace an earlier study
    command = "python -m robot.study " + " ".join(argv)
    started = time.time()
    with tqdm(total=sum(c.total_timesteps for c in configs), desc="study", unit="step", dynamic_ncols=True) as bar:
        for config in configs:
            bar.set_description(f"study: {config.mode} seed {config.seed}")
            summary = run(config, bar=bar)
            tqdm.write(f"{config.mode:<11} seed {config.seed}: true return {summary['eval_return']:.2f}, "
                       f"success {summary['eval_success']:.0%}, {summary['seconds']:.0f} s")
    wall = time.time() - started
    summary = analyse(out_dir, args.seeds)
    summary["wall_seconds"] = round(wall, 1)
    summary["command"] = command
    plot(summary, out_dir / "study.png", configs[0].learner.upper())
    report = write_markdown(summary, out_dir / "study.md", command, wall, configs[0])
    (out_dir / "study.json").write_text(json.dumps(summary, indent=1))
    mean = summary["mean"]
    print(f"baseline: return {mean['baseline_return']:.2f}, success {mean['baseline_success']:.0%} | "
          f"learned: return {mean['learned_return']:.2f}, success {mean['learned_success']:.0%} | "
          f"normalised score {summary['normalised_score']:.3f} (target {TARGET_SCORE}: "
          f"{'met' if summary['target_met'] else 'not met'}) | held-out Pearson {_num(summary['heldout_pearson_mean'])} | "
          f"{wall / 60:.1f} min")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
