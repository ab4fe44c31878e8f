"""Evaluate a trained reward model on preference data.

    python -m reward_model.evaluate --model_name_or_path runs/rm --eval_data test.jsonl
        [--data_format auto|trl|hh|ranked|rewardbench|rmbench] [--output_dir DIR] [--per_device_eval_batch_size 16]
        [--bootstrap 1000] [--seed 0] [--normalize true]
    rlhf eval-rm --config eval.yaml [--field value ...]

Settings are `EvaluateConfig`'s fields, named as in `rlhf train-rm` and TRL (a YAML file
with `--config`, flags override it); the previous names (`--model`, `--data`, `--format`,
`--out`, `--batch_size`, `--no_progress`) still work for one release, with a warning.

The model scores every completion once (`reward_model.benchmarks.score_examples`);
`evaluate_scores` then computes every number from those scores alone (no model), so the
numbers can be checked by hand. The metrics are `rlhf.metrics`' (pairwise accuracy with
RewardBench's strict rule, Lambert et al. 2024; calibration, Guo et al. 2017; Kendall's
tau-b; length bias); the report keys are listed in docs/notes_reward_model_metrics.md.

Output (in --output_dir, default <model_name_or_path>/eval): report.json, scores.jsonl, margins.png,
reliability.png, subset_accuracy.png (and rmbench_matrix.png for RM-Bench data).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reward_model.benchmarks import (
    FORMATS,
    ScoredExample,
    group_by_subset,
    load_examples,
    rewardbench_v1,
    rewardbench_v2,
    rmbench,
    score_examples,
    score_rows,
)
from reward_model.modeling import NotARewardModelError, RewardModel
from reward_model.plots import plot_margins, plot_reliability, plot_rmbench_matrix, plot_subset_accuracy
from rlhf.config import ConfigError, parse_config, run_main
from rlhf.metrics import (
    bootstrap_interval,
    kendall_tau_b,
    length_split,
    mean_margin,
    pairwise_accuracy,
    pearson,
    ranking_pairs,
    reliability,
    top1_credit,
)
from rlhf.outputs import check_output_folder, start_output_folder, write_text
from rlhf.preferences import PreferenceDataError, write_jsonl

# =====================================================================================
# Per-example quantities
# =====================================================================================


def example_credits(example: ScoredExample) -> tuple[float | None, float | None]:
    """(strict accuracy, accuracy with labelled ties at half credit) of one example, each the
    mean over its induced pairs (an exact score tie is wrong); None when it has no such pair."""
    strict, tied = ranking_pairs(example.ranks)
    pairs = strict + tied
    if not pairs:
        return None, None
    scores_a = [example.scores[a] for a, _ in pairs]
    scores_b = [example.scores[b] for _, b in pairs]
    labels = [1.0] * len(strict) + [0.5] * len(tied)
    strict_accuracy = pairwise_accuracy(scores_a, scores_b, labels, labelled_ties="skip") if strict else None
    return strict_accuracy, pairwise_accuracy(scores_a, scores_b, labels, labelled_ties="half")


def completion_text(completion) -> str:
    """The text of a completion; chat messages contribute their contents."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in completion)
    return str(completion)


def length_chars(completion) -> int:
    return len(completion_text(completion))


def length_words(completion) -> int:
    return len(completion_text(completion).split())


# =====================================================================================
# Report blocks
# =====================================================================================

def accuracy_summary(credits: list[float | None], n_resamples: int, seed: int) -> dict:
    credits = [c for c in credits if c is not None]
    if not credits:
        return {"accuracy": None, "ci95": None, "n": 0}
    return {"accuracy": float(np.mean(credits)), "ci95": bootstrap_interval(credits, n_resamples, seed),
            "n": len(credits)}


def accuracy_block(examples: list[ScoredExample], n_resamples: int, seed: int) -> dict:
    """Strict accuracy (and, with labelled ties, half-credit accuracy and the ties' mean |delta|),
    averaged over examples, with percentile bootstrap CIs over examples."""
    credits = [example_credits(e) for e in examples]
    block = accuracy_summary([c[0] for c in credits], n_resamples, seed)
    tie_gaps = [abs(e.scores[i] - e.scores[j]) for e in examples for i, j in ranking_pairs(e.ranks)[1]]
    if tie_gaps:
        block["with_ties_half_credit"] = accuracy_summary([c[1] for c in credits], n_resamples, seed)
        block["labelled_ties"] = {"n_pairs": len(tie_gaps), "mean_abs_score_difference": float(np.mean(tie_gaps))}
    return block


def _strict_pair_scores(examples: list[ScoredExample]) -> tuple[list[float], list[float]]:
    """Scores of the better and of the worse item of every strict induced pair."""
    better, worse = [], []
    for e in examples:
        for b, w in ranking_pairs(e.ranks)[0]:
            better.append(e.scores[b])
            worse.append(e.scores[w])
    return better, worse


def margin_block(examples: list[ScoredExample]) -> dict:
    """Mean chosen and rejected reward and mean margin over the strict induced pairs."""
    chosen, rejected = _strict_pair_scores(examples)
    if not chosen:
        return {"mean_chosen": None, "mean_rejected": None, "mean_margin": None, "n_pairs": 0}
    return {"mean_chosen": float(np.mean(chosen)), "mean_rejected": float(np.mean(rejected)),
            "mean_margin": mean_margin(chosen, rejected), "n_pairs": len(chosen)}


def pair_probabilities(examples: list[ScoredExample]) -> tuple[np.ndarray, np.ndarray]:
    """p = sigmoid(r_a - r_b) and label y = P(a preferred) over every induced pair: strict
    pairs oriented (better, worse) so y = 1, labelled ties with y = 0.5."""
    deltas, labels = [], []
    for e in examples:
        strict, tied = ranking_pairs(e.ranks)
        for a, b in strict:
            deltas.append(e.scores[a] - e.scores[b])
            labels.append(1.0)
        for a, b in tied:
            deltas.append(e.scores[a] - e.scores[b])
            labels.append(0.5)
    deltas = np.array(deltas, dtype=float)
    return 1.0 / (1.0 + np.exp(-deltas)), np.array(labels)


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def calibration_block(examples: list[ScoredExample], n_bins: int) -> dict | None:
    probs, labels = pair_probabilities(examples)
    if len(probs) == 0:
        return None
    table = reliability(probs, labels, n_bins=n_bins)
    return {"ece": table["ece"], "brier": table["brier"], "n_pairs": table["n"], "n_bins": n_bins,
            "bins": {"edges": table["bin_edges"].tolist(), "confidence": _nan_to_none(table["bin_confidence"]),
                     "accuracy": _nan_to_none(table["bin_accuracy"]), "count": table["bin_count"].tolist()}}


def ranking_block(examples: list[ScoredExample]) -> dict | None:
    """Kendall tau-b (rankings) and top-1 accuracy (rankings and best-of-K answers),
    averaged over prompts. tau-b is undefined (and left out) when either ranking is all ties."""
    ranked = [e for e in examples if e.kind in ("ranking", "best_of_k")]
    if not ranked:
        return None
    taus = [kendall_tau_b(e.ranks, [-s for s in e.scores]) for e in ranked if e.kind == "ranking"]
    defined = [t for t in taus if not math.isnan(t)]
    return {"kendall_tau_b": float(np.mean(defined)) if defined else None, "n_tau": len(defined),
            "n_tau_undefined": len(taus) - len(defined),
            "top1_accuracy": float(np.mean([top1_credit(e.scores, e.ranks) for e in ranked])), "n": len(ranked)}


def length_bias_block(examples: list[ScoredExample]) -> dict:
    """Pearson correlation of reward with completion length, in characters and in
    whitespace-separated words (over every scored completion), and `rlhf.metrics.length_split`
    of the strict induced pairs by length in characters."""
    scores = [s for e in examples for s in e.scores]
    chars = [length_chars(c) for e in examples for c in e.completions]
    words = [length_words(c) for e in examples for c in e.completions]
    better, worse, size_better, size_worse = [], [], [], []
    for e in examples:
        for b, w in ranking_pairs(e.ranks)[0]:
            better.append(e.scores[b])
            worse.append(e.scores[w])
            size_better.append(length_chars(e.completions[b]))
            size_worse.append(length_chars(e.completions[w]))
    return {"pearson_chars": pearson(scores, chars), "pearson_words": pearson(scores, words),
            "n_completions": len(scores), **length_split(better, worse, size_better, size_worse)}


def evaluate_scores(examples: list[ScoredExample], bootstrap: int = 1000, seed: int = 0, n_bins: int = 10) -> dict:
    """Every number of the report, from examples whose completions are already scored."""
    if not examples:
        raise ValueError("no examples to evaluate")
    for e in examples:
        if not (len(e.scores) == len(e.ranks) == len(e.completions)):
            raise ValueError(f"example {e.id}: {len(e.completions)} completions, {len(e.ranks)} ranks, "
                             f"{len(e.scores)} scores")
    subsets = {name: accuracy_block(group, bootstrap, seed) for name, group in group_by_subset(examples).items()}
    report = {
        "n_examples": len(examples),
        "accuracy": accuracy_block(examples, bootstrap, seed),
        "subsets": subsets,
        "rewardbench_v1": rewardbench_v1(subsets),
        "rewardbench_v2": rewardbench_v2(examples),
        "rmbench": rmbench(examples),
        "rewards": margin_block(examples),
        "calibration": calibration_block(examples, n_bins),
        "ranking": ranking_block(examples),
        "length_bias": length_bias_block(examples),
        "bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95, "method": "percentile, over examples"},
    }
    return report


def write_outputs(report: dict, examples: list[ScoredExample], out: Path) -> None:
    write_jsonl(score_rows(examples), out / "scores.jsonl")
    plot_margins(examples, out / "margins.png")
    plot_reliability(report["calibration"], out / "reliability.png")
    plot_subset_accuracy(report["subsets"], out / "subset_accuracy.png")
    if report["rmbench"] and report["rmbench"]["matrix"] is not None:
        plot_rmbench_matrix(report["rmbench"], out / "rmbench_matrix.png")
    write_text(out / "report.json", json.dumps(report, indent=2))


# =====================================================================================
# Command line
# =====================================================================================

@dataclass
class EvaluateConfig:
    """Settings of `rlhf eval-rm` / `python -m reward_model.evaluate`, in the names of
    `rlhf train-rm` and TRL (`model_name_or_path`, `eval_data`, `data_format`, `output_dir`,
    `per_device_eval_batch_size`)."""

    # Old name -> new name: accepted with a deprecation warning for one release (rlhf.config).
    _renamed_fields = {"model": "model_name_or_path", "data": "eval_data", "format": "data_format",
                       "out": "output_dir", "batch_size": "per_device_eval_batch_size", "no_progress": "disable_tqdm"}

    model_name_or_path: str | None = field(default=None, metadata={"help": "reward model folder (output of rlhf train-rm, an ensemble, or any num_labels=1 sequence classifier)"})
    eval_data: str | None = field(default=None, metadata={"help": "preference data to evaluate on: a file (JSONL/JSON/parquet), a saved datasets folder or a hub id in the local cache (its test split)"})
    data_format: str = field(default="auto", metadata={"help": "format of eval_data: " + " | ".join(FORMATS) + " (auto also recognises RM-Bench rows: prompt, domain, 3 chosen and 3 rejected texts)"})
    output_dir: str | None = field(default=None, metadata={"help": "output folder (default: <model_name_or_path>/eval)"})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "completions scored per forward pass"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the confidence intervals (0: none)"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap resamples"})
    normalize: bool = field(default=False, metadata={"help": "use scores normalised with the training statistics "
                                                             "(default: raw scores, whose differences are the "
                                                             "model's Bradley-Terry log-odds)"})
    disable_tqdm: bool = field(default=False, metadata={"help": "no progress bar"})
    overwrite: bool = field(default=False, metadata={"help": "replace an earlier evaluation in the output folder "
                                                             "(without it an earlier one is refused)"})

    def __post_init__(self):
        if self.data_format not in FORMATS:
            raise ValueError(f"data_format: expected one of {FORMATS}, got {self.data_format!r}")
        if self.per_device_eval_batch_size < 1:
            raise ValueError(f"per_device_eval_batch_size: expected a positive integer, got "
                             f"{self.per_device_eval_batch_size}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap: expected >= 0 (0: no confidence intervals), got {self.bootstrap}")

    def output_folder(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.model_name_or_path) / "eval"


def summary_line(report: dict, out: Path) -> str:
    accuracy = report["accuracy"]
    text = f"accuracy {accuracy['accuracy']:.3f}" if accuracy["accuracy"] is not None else "accuracy n/a"
    if accuracy.get("ci95"):
        text += f" (95% CI {accuracy['ci95'][0]:.3f}-{accuracy['ci95'][1]:.3f})"
    text += f", n = {accuracy['n']}"
    if report["rewardbench_v1"]:
        text += f"; RewardBench v1 score {report['rewardbench_v1']['score']:.3f}"
    if report["rewardbench_v2"] and report["rewardbench_v2"]["score"] is not None:
        text += f"; RewardBench 2 score {report['rewardbench_v2']['score']:.3f}"
    if report.get("rmbench") and report["rmbench"]["score"] is not None:
        rm = report["rmbench"]
        text += f"; RM-Bench score {rm['score']:.3f} (hard {rm['hard']:.3f}, normal {rm['normal']:.3f}, easy {rm['easy']:.3f})"
    return f"{text}\nreport: {out / 'report.json'}"


def evaluate(config: EvaluateConfig) -> dict:
    """Score the data with the model, write the outputs and return the report. Bad data or
    a folder that is not a reward model is a `ConfigError`, raised before any scoring."""
    for name in ("model_name_or_path", "eval_data"):
        if getattr(config, name) is None:
            raise ConfigError(f"--{name}", "a value (required)")
    out = config.output_folder()
    try:
        # Data first: a bad file fails in a second, before the model loads.
        examples, not_comparable = load_examples(config.eval_data, config.data_format)
        model = RewardModel.load(config.model_name_or_path)
    except PreferenceDataError as err:
        raise ConfigError(str(err)[: -len(err.reason) - 2], err.reason) from None
    except NotARewardModelError as err:
        raise ConfigError("--model_name_or_path", str(err)) from None
    if model.missing_stats():
        # A reward model from elsewhere: normalised, if asked, with its own scores on this data.
        if config.normalize:
            prompts = [e.prompt for e in examples for _ in e.completions]
            completions = [c for e in examples for c in e.completions]
            model.fit_missing_stats(prompts, completions, f"{len(completions)} evaluated completions",
                                    batch_size=config.per_device_eval_batch_size)
        how = (f"normalising with the mean and std of its scores on the {len(completions)} evaluated completions"
               if config.normalize else "raw scores")
        print(f"note: {config.model_name_or_path} has no reward_stats.json (not saved by reward_model.train): "
              f"scored at the token transformers pools, {how}", file=sys.stderr)
    score_examples(model, examples, batch_size=config.per_device_eval_batch_size, normalize=config.normalize,
                   progress=not config.disable_tqdm)
    report = evaluate_scores(examples, bootstrap=config.bootstrap, seed=config.seed)
    report = {"model": str(config.model_name_or_path), "data": str(config.eval_data), "format": config.data_format,
              "score_scale": "normalized" if config.normalize else "raw",
              "skipped_not_comparable": not_comparable} | report
    start_output_folder(out, config.overwrite)  # scored: replace an earlier evaluation only now
    write_outputs(report, examples, out)
    print(summary_line(report, out))
    return report


def main(argv: list[str] | None = None) -> int:
    config = parse_config(EvaluateConfig, argv, prog="python -m reward_model.evaluate")
    if config.model_name_or_path is not None:
        check_output_folder(config.output_folder(), "--output_dir", config.overwrite)
    evaluate(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
