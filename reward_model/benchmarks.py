"""Evaluation data for reward models: comparisons and RewardBench rows as scored examples.

Every comparison becomes a `ScoredExample`: its completions, their ranks (0 best, equal
ranks are labelled ties, None unranked, as `Comparison.to_ranks`) and their scores. A pair
is a K = 2 ranking, so pairs, best-of-K answers, rankings and RewardBench 2 rows (one or
more chosen vs several rejected) share one code path: the *induced pairs* of an example
(`rlhf.metrics.ranking_pairs`) are every (better, worse) pair of its ranking; tied pairs
are its labelled ties.

RewardBench v1 (Lambert et al. 2024; allenai/reward-bench) rows are TRL-style
prompt/chosen/rejected text with a ``subset``; RewardBench 2 (Malik et al. 2025) rows hold
lists of chosen and rejected completions. Their section and best-of-n scores are here too;
docs/notes_reward_model_metrics.md has the weighting rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm.auto import tqdm

from rlhf.metrics import top1_credit
from rlhf.preferences import Comparison, PreferenceDataError, iter_rows, load_comparisons, parse_trl_row

FORMATS = ("auto", "trl", "hh", "ranked", "rewardbench")

# RewardBench v1 (allenai/reward-bench, rewardbench/constants.py).
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


def group_by_subset(examples: Iterable[ScoredExample]) -> dict[str, list[ScoredExample]]:
    groups: dict[str, list[ScoredExample]] = {}
    for example in examples:
        groups.setdefault(example.subset, []).append(example)
    return dict(sorted(groups.items()))


# =====================================================================================
# Loading: core formats and RewardBench rows
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
                    for index, (row, source, line) in enumerate(iter_rows(path))]
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
    """Fill each example's scores with a `RewardModel`'s, every completion scored once (in place)."""
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


def score_rows(examples: list[ScoredExample]) -> list[dict]:
    """The rows of scores.jsonl."""
    return [{"id": e.id, "subset": e.subset, "kind": e.kind, "ranks": e.ranks, "scores": e.scores} for e in examples]


# =====================================================================================
# RewardBench scores
# =====================================================================================

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
