"""Evaluate a trained reward model on preference data.

    python -m reward_model.evaluate --model runs/rm --data test.jsonl [--format auto|trl|hh|ranked|rewardbench]
                                    [--out DIR] [--batch-size 16] [--bootstrap 1000] [--seed 0] [--normalize]
    rlhf eval-rm ...

The model scores every completion once; `evaluate_scores` then computes every number from
those scores alone (no model), so the numbers can be checked by hand. Definitions follow
/work/shared/notes/reward_models.md, section 4.

Every comparison becomes a `ScoredExample`: its completions, their ranks (0 best, equal
ranks are labelled ties, None unranked, as `Comparison.to_ranks`) and their scores. A pair
is a K = 2 ranking, so pairs, best-of-K answers, rankings and RewardBench 2 rows (one or
more chosen vs several rejected) share one code path: the *induced pairs* of an example
are every (better, worse) pair of its ranking; tied pairs are its labelled ties.

Output (in --out, default <model>/eval): report.json, scores.jsonl, margins.png,
reliability.png, subset_accuracy.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from rlhf.metrics import kendall_tau_b, reliability
from rlhf.preferences import Comparison, PreferenceDataError, _iter_rows, load_comparisons, parse_trl_row

FORMATS = ("auto", "trl", "hh", "ranked", "rewardbench")

# RewardBench v1 (allenai/reward-bench, rewardbench/constants.py), per the note's table.
REWARDBENCH_V1_SECTIONS = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}
# math-prm has 447 real examples but counts as 6 x 164 so that math weighs as much as the code subsets.
REWARDBENCH_V1_WEIGHT_OVERRIDES = {"math-prm": 984}

DEFAULT_SUBSET = "all"


@dataclass
class ScoredExample:
    """One comparison with a score per completion (higher is better)."""

    id: str
    subset: str
    completions: list[Any]
    ranks: list[int | None]  # 0 best, equal = labelled tie, None = unranked
    scores: list[float]
    kind: str = "ranking"  # pair | best_of_k | ranking | rewardbench2
    prompt: Any = None

    @property
    def is_best_of_n(self) -> bool:
        """A RewardBench 2 row scored best-of-n: exactly one correct completion."""
        return self.kind == "rewardbench2" and self.ranks.count(0) == 1


# =====================================================================================
# Per-example quantities
# =====================================================================================

def induced_pairs(ranks: Sequence[int | None]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(strict pairs as (better, worse) indices, labelled-tie pairs) of one ranking.
    Ranked items beat unranked ones; two unranked items are not compared."""
    strict, tied = [], []
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            a, b = ranks[i], ranks[j]
            if a is None and b is None:
                continue
            if a is not None and b is not None and a == b:
                tied.append((i, j))
            elif b is None or (a is not None and a < b):
                strict.append((i, j))
            else:
                strict.append((j, i))
    return strict, tied


def strict_credit(scores: Sequence[float], better: int, worse: int) -> float:
    """RewardBench/TRL convention: 1[r_better > r_worse]; an exact score tie counts as wrong."""
    return 1.0 if scores[better] > scores[worse] else 0.0


def example_credits(example: ScoredExample) -> tuple[float | None, float | None]:
    """(strict accuracy, accuracy with labelled ties at half credit) of one example, each the
    mean over its induced pairs; None when the example has no such pair."""
    strict, tied = induced_pairs(example.ranks)
    strict_credits = [strict_credit(example.scores, b, w) for b, w in strict]
    strict_accuracy = float(np.mean(strict_credits)) if strict_credits else None
    all_credits = strict_credits + [0.5] * len(tied)  # neither order of a labelled tie is wrong
    half_credit_accuracy = float(np.mean(all_credits)) if all_credits else None
    return strict_accuracy, half_credit_accuracy


def top1_credit(scores: Sequence[float], ranks: Sequence[int | None]) -> float:
    """Share of the completions tied at the maximum score that are ranked best (rank 0).

    With one correct completion this is RewardBench 2's rule: 1/(number tied at the max)
    when the correct one attains the max, else 0."""
    top = max(scores)
    at_max = [i for i, s in enumerate(scores) if s == top]
    return sum(1 for i in at_max if ranks[i] == 0) / len(at_max)


def completion_text(completion: Any) -> str:
    """The text of a completion; chat messages contribute their contents."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in completion)
    return str(completion)


def length_chars(completion: Any) -> int:
    return len(completion_text(completion))


def length_words(completion: Any) -> int:
    return len(completion_text(completion).split())


# =====================================================================================
# Aggregates
# =====================================================================================

def bootstrap_interval(values: Sequence[float], n_resamples: int, seed: int, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean, resampling examples with replacement.
    Each call uses its own generator from `seed`, so the interval of a subset does not
    depend on which other subsets were evaluated before it."""
    values = np.asarray(values, dtype=float)
    if n_resamples <= 0 or len(values) == 0:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // len(values))  # bound memory on large data sets
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        means[start:start + size] = values[rng.integers(0, len(values), (size, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]


def accuracy_summary(credits: Sequence[float], n_resamples: int, seed: int) -> dict:
    credits = [c for c in credits if c is not None]
    if not credits:
        return {"accuracy": None, "ci95": None, "n": 0}
    return {"accuracy": float(np.mean(credits)), "ci95": bootstrap_interval(credits, n_resamples, seed),
            "n": len(credits)}


def group_by_subset(examples: Iterable[ScoredExample]) -> dict[str, list[ScoredExample]]:
    groups: dict[str, list[ScoredExample]] = {}
    for example in examples:
        groups.setdefault(example.subset, []).append(example)
    return dict(sorted(groups.items()))


def accuracy_block(examples: list[ScoredExample], n_resamples: int, seed: int) -> dict:
    """Strict accuracy (and, with labelled ties, half-credit accuracy and the ties' mean |delta|)."""
    credits = [example_credits(e) for e in examples]
    block = accuracy_summary([c[0] for c in credits], n_resamples, seed)
    tie_gaps = [abs(e.scores[i] - e.scores[j]) for e in examples for i, j in induced_pairs(e.ranks)[1]]
    if tie_gaps:
        block["with_ties_half_credit"] = accuracy_summary([c[1] for c in credits], n_resamples, seed)
        block["labelled_ties"] = {"n_pairs": len(tie_gaps), "mean_abs_score_difference": float(np.mean(tie_gaps))}
    return block


def rewardbench_v1(subset_accuracy: dict[str, dict]) -> dict | None:
    """RewardBench v1 section scores and final score, or None unless every subset is a v1 subset.

    Section = example-count-weighted mean of its subsets' accuracies (math-prm counted as
    984 examples); score = unweighted mean of the sections present."""
    known = {s for subsets in REWARDBENCH_V1_SECTIONS.values() for s in subsets}
    if not subset_accuracy or not set(subset_accuracy) <= known:
        return None
    sections = {}
    for section, subsets in REWARDBENCH_V1_SECTIONS.items():
        present = [s for s in subsets if subset_accuracy.get(s, {}).get("accuracy") is not None]
        if not present:
            continue
        weights = [REWARDBENCH_V1_WEIGHT_OVERRIDES.get(s, subset_accuracy[s]["n"]) for s in present]
        accuracies = [subset_accuracy[s]["accuracy"] for s in present]
        sections[section] = float(np.dot(weights, accuracies) / sum(weights))
    if not sections:
        return None
    missing = sorted(known - set(subset_accuracy))
    return {"sections": sections, "score": float(np.mean(list(sections.values()))),
            "complete": not missing, "missing_subsets": missing}


def rewardbench_v2(examples: list[ScoredExample]) -> dict | None:
    """RewardBench 2 best-of-n accuracy per subset (rows with one correct completion) and the
    unweighted mean over subsets. Rows with several correct completions (the Ties subset)
    need the Ties formula, which is not implemented: they are counted, not scored."""
    rows = [e for e in examples if e.kind == "rewardbench2"]
    if not rows:
        return None
    subsets = {}
    for subset, group in group_by_subset(e for e in rows if e.is_best_of_n).items():
        credits = [top1_credit(e.scores, e.ranks) for e in group]
        subsets[subset] = {"accuracy": float(np.mean(credits)), "n": len(group),
                           "completions_per_row": sorted({len(e.scores) for e in group})}
    score = float(np.mean([s["accuracy"] for s in subsets.values()])) if subsets else None
    return {"subsets": subsets, "score": score,
            "rows_not_scored_several_correct": sum(1 for e in rows if not e.is_best_of_n)}


def margin_block(examples: list[ScoredExample]) -> dict:
    """Mean chosen and rejected reward and mean margin over the strict induced pairs."""
    chosen, rejected = [], []
    for e in examples:
        for better, worse in induced_pairs(e.ranks)[0]:
            chosen.append(e.scores[better])
            rejected.append(e.scores[worse])
    if not chosen:
        return {"mean_chosen": None, "mean_rejected": None, "mean_margin": None, "n_pairs": 0}
    chosen, rejected = np.array(chosen), np.array(rejected)
    return {"mean_chosen": float(chosen.mean()), "mean_rejected": float(rejected.mean()),
            "mean_margin": float((chosen - rejected).mean()), "n_pairs": len(chosen)}


def pair_probabilities(examples: list[ScoredExample]) -> tuple[np.ndarray, np.ndarray]:
    """p = sigmoid(r_a - r_b) and label y = P(a preferred) over every induced pair: strict
    pairs oriented (better, worse) so y = 1, labelled ties with y = 0.5."""
    deltas, labels = [], []
    for e in examples:
        strict, tied = induced_pairs(e.ranks)
        for a, b in strict:
            deltas.append(e.scores[a] - e.scores[b])
            labels.append(1.0)
        for a, b in tied:
            deltas.append(e.scores[a] - e.scores[b])
            labels.append(0.5)
    deltas = np.array(deltas, dtype=float)
    return 1.0 / (1.0 + np.exp(-deltas)), np.array(labels)


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
    whitespace-separated words (over every scored completion), and strict accuracy on the
    strict induced pairs split by whether the chosen completion is the shorter one (in
    characters)."""
    scores = np.array([s for e in examples for s in e.scores], dtype=float)
    chars = np.array([length_chars(c) for e in examples for c in e.completions], dtype=float)
    words = np.array([length_words(c) for e in examples for c in e.completions], dtype=float)
    split: dict[str, list[float]] = {"chosen_shorter": [], "chosen_longer": [], "same_length": []}
    rm_prefers_longer, human_prefers_longer = [], []
    for e in examples:
        for better, worse in induced_pairs(e.ranks)[0]:
            size_better, size_worse = length_chars(e.completions[better]), length_chars(e.completions[worse])
            key = "chosen_shorter" if size_better < size_worse else "chosen_longer" if size_better > size_worse \
                else "same_length"
            split[key].append(strict_credit(e.scores, better, worse))
            if size_better != size_worse and e.scores[better] != e.scores[worse]:
                longer_is_better = size_better > size_worse
                human_prefers_longer.append(longer_is_better)
                rm_prefers_longer.append(longer_is_better == (e.scores[better] > e.scores[worse]))
    return {
        "pearson_chars": _pearson(scores, chars),
        "pearson_words": _pearson(scores, words),
        "n_completions": len(scores),
        "accuracy_by_length": {key: {"accuracy": float(np.mean(v)) if v else None, "n_pairs": len(v)}
                               for key, v in split.items()},
        "share_rm_prefers_longer": float(np.mean(rm_prefers_longer)) if rm_prefers_longer else None,
        "share_human_prefers_longer": float(np.mean(human_prefers_longer)) if human_prefers_longer else None,
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """None when undefined (fewer than two values, or a constant)."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


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
        "rewards": margin_block(examples),
        "calibration": calibration_block(examples, n_bins),
        "ranking": ranking_block(examples),
        "length_bias": length_bias_block(examples),
        "bootstrap": {"resamples": bootstrap, "seed": seed, "level": 0.95, "method": "percentile, over examples"},
    }
    return report


# =====================================================================================
# Data: comparisons (core formats) and RewardBench rows
# =====================================================================================

def examples_from_comparisons(comparisons: list[Comparison]) -> tuple[list[ScoredExample], int]:
    """Unscored examples from comparisons; not-comparable answers are left out and counted."""
    examples, skipped = [], 0
    for index, c in enumerate(comparisons):
        if not c.trainable:
            skipped += 1
            continue
        examples.append(ScoredExample(id=c.id if c.id is not None else str(index),
                                      subset=str(c.meta.get("subset", DEFAULT_SUBSET)), completions=list(c.items),
                                      ranks=c.to_ranks(), scores=[], kind=c.kind, prompt=c.prompt))
    return examples, skipped


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, str) for v in value)


def parse_rewardbench_row(row: dict, index: int, source: str, line: int | None) -> ScoredExample:
    """A RewardBench row: v1 (TRL-style prompt/chosen/rejected text) or v2 (lists of chosen
    and rejected completions). Both need a `subset`; `id` falls back to the row number."""
    if not isinstance(row, dict):
        raise PreferenceDataError(f"expected a JSON object, got {type(row).__name__}", source, line)
    subset = row.get("subset")
    if not isinstance(subset, str) or not subset:
        raise PreferenceDataError("missing required field (RewardBench rows name their subset)", source, line, "subset")
    row_id = str(row["id"]) if row.get("id") is not None else str(index)
    # v2 rows hold lists of completion texts; a list of message dicts is a conversational v1 row.
    if any(isinstance(row.get(name), list) and all(isinstance(v, str) for v in row[name])
           for name in ("chosen", "rejected")):
        return _parse_rewardbench_v2_row(row, row_id, subset, source, line)
    c = parse_trl_row(row, source, line)
    return ScoredExample(id=row_id, subset=subset, completions=list(c.items), ranks=c.to_ranks(), scores=[],
                         kind="pair", prompt=c.prompt)


def _parse_rewardbench_v2_row(row: dict, row_id: str, subset: str, source: str, line: int | None) -> ScoredExample:
    for name in ("chosen", "rejected"):
        if not _is_text_list(row.get(name)) or any(not text.strip() for text in row[name]):
            raise PreferenceDataError("expected a non-empty list of non-empty completion texts", source, line, name)
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PreferenceDataError("missing or empty prompt", source, line, "prompt")
    completions = row["chosen"] + row["rejected"]
    return ScoredExample(id=row_id, subset=subset, completions=completions,
                         ranks=[0] * len(row["chosen"]) + [1] * len(row["rejected"]), scores=[],
                         kind="rewardbench2", prompt=prompt)


def load_examples(path: str | Path, format: str = "auto") -> tuple[list[ScoredExample], int]:
    """Unscored examples and the number of not-comparable answers left out."""
    if format not in FORMATS:
        raise PreferenceDataError(f"unknown format {format!r}; expected one of {FORMATS}")
    if format == "rewardbench":
        examples = [parse_rewardbench_row(row, index, source, line)
                    for index, (row, source, line) in enumerate(_iter_rows(path))]
        if not examples:
            raise PreferenceDataError(f"{path}: no rows found")
        return examples, 0
    examples, not_comparable = examples_from_comparisons(load_comparisons(path, format))
    if not examples:
        raise PreferenceDataError(f"{path}: all {not_comparable} comparisons are 'not comparable'; nothing to evaluate")
    return examples, not_comparable


# =====================================================================================
# Scoring with the model
# =====================================================================================

def score_examples(model, examples: list[ScoredExample], batch_size: int = 16, normalize: bool = False,
                   progress: bool = True) -> None:
    """Fill each example's scores, every completion scored once (in place)."""
    from tqdm.auto import tqdm

    prompts = [e.prompt for e in examples for _ in e.completions]
    completions = [c for e in examples for c in e.completions]
    flat: list[float] = []
    for start in tqdm(range(0, len(completions), batch_size), desc="scoring", unit="batch", disable=not progress):
        mean, _ = model.score(prompts[start:start + batch_size], completions[start:start + batch_size],
                              normalize=normalize, batch_size=batch_size)
        flat.extend(mean.tolist())
    position = 0
    for e in examples:
        e.scores = flat[position:position + len(e.completions)]
        position += len(e.completions)


# =====================================================================================
# Output files
# =====================================================================================

def score_rows(examples: list[ScoredExample]) -> list[dict]:
    return [{"id": e.id, "subset": e.subset, "kind": e.kind, "ranks": e.ranks, "scores": e.scores} for e in examples]


def plot_margins(examples: list[ScoredExample], path: Path) -> None:
    import matplotlib.pyplot as plt

    margins = [e.scores[b] - e.scores[w] for e in examples for b, w in induced_pairs(e.ranks)[0]]
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
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

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


def write_outputs(report: dict, examples: list[ScoredExample], out: Path) -> None:
    from rlhf.preferences import write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(score_rows(examples), out / "scores.jsonl")
    plot_margins(examples, out / "margins.png")
    plot_reliability(report["calibration"], out / "reliability.png")
    plot_subset_accuracy(report["subsets"], out / "subset_accuracy.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))


# =====================================================================================
# Command line
# =====================================================================================

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reward_model.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="reward model folder (output of reward_model.train)")
    parser.add_argument("--data", required=True, help="preference file (JSONL/JSON/parquet)")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--out", default=None, help="output folder (default: <model>/eval)")
    parser.add_argument("--batch-size", type=_positive_int, default=16)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--normalize", action="store_true",
                        help="use scores normalised with the training statistics (default: raw scores, whose "
                             "differences are the model's Bradley-Terry log-odds)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


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
    return f"{text}\nreport: {out / 'report.json'}"


def main(argv: list[str] | None = None) -> int:
    from reward_model.modeling import NotARewardModelError, RewardModel

    args = parse_args(argv)
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    try:
        # Data first: a bad file fails in a second, before the model loads.
        examples, not_comparable = load_examples(args.data, args.format)
        model = RewardModel.load(args.model)
    except (PreferenceDataError, NotARewardModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    score_examples(model, examples, batch_size=args.batch_size, normalize=args.normalize,
                   progress=not args.no_progress)
    report = evaluate_scores(examples, bootstrap=args.bootstrap, seed=args.seed)
    report = {"model": str(args.model), "data": str(args.data), "format": args.format,
              "score_scale": "normalized" if args.normalize else "raw",
              "skipped_not_comparable": not_comparable} | report
    write_outputs(report, examples, out)
    print(summary_line(report, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
