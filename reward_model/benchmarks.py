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

FORMATS = ("auto", "trl", "hh", "ranked", "rewardbench", "rmbench")

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
    if format == "rmbench" or (format == "auto" and looks_like_rmbench(path)):
        return load_rmbench(path), 0
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


# =====================================================================================
# RM-Bench (Liu et al. 2025, "RM-Bench: Benchmarking Reward Models of Language Models
# with Subtlety and Style"; github.com/THU-KEG/RM-Bench)
# =====================================================================================

# The order of the three answers in `chosen` and in `rejected` (the official README).
RMBENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")
# The official total splits rows by domain prefix (scripts/utils.py, `split_dataset_by_domain`):
# "safety-refuse" and "safety-response" rows are one "safety" domain.
RMBENCH_DOMAINS = ("chat", "math", "code", "safety")
RMBENCH_KIND = "rmbench"


def _is_rmbench_row(row: Any) -> bool:
    return (isinstance(row, dict) and isinstance(row.get("domain"), str) and isinstance(row.get("prompt"), str)
            and all(_is_text_list(row.get(name)) and len(row[name]) == len(RMBENCH_STYLES)
                    for name in ("chosen", "rejected")))


def looks_like_rmbench(path: str | Path) -> bool:
    """Whether the first row is in RM-Bench's layout: a prompt, a `domain` and lists of
    exactly three chosen and three rejected texts (TRL's conversational rows hold message
    dicts, RewardBench 2 rows a `subset`). Unreadable data is left to the regular loader's error."""
    try:
        first = next(iter_rows(path), None)
    except PreferenceDataError:
        return False
    row = first[0] if first else None
    return _is_rmbench_row(row) and "subset" not in row


def parse_rmbench_row(row: dict, index: int, source: str, line: int | None) -> ScoredExample:
    """An RM-Bench row: `prompt`, `chosen` and `rejected` (three texts each, in the order
    of `RMBENCH_STYLES`) and `domain` (chat, code, math, safety-refuse, safety-response);
    `id` falls back to the row number. Completions are the 3 chosen then the 3 rejected
    answers, ranked [0, 0, 0, 1, 1, 1]: every chosen answer beats every rejected one, and
    the answers of one side (same content, other style) are labelled ties."""
    if not isinstance(row, dict):
        raise PreferenceDataError(f"expected a JSON object, got {type(row).__name__}", source, line)
    domain = row.get("domain")
    if not isinstance(domain, str) or not domain:
        raise PreferenceDataError("missing required field (RM-Bench rows name their domain)", source, line, "domain")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PreferenceDataError("missing or empty prompt", source, line, "prompt")
    for name in ("chosen", "rejected"):
        value = row.get(name)
        if not _is_text_list(value) or len(value) != len(RMBENCH_STYLES) or any(not t.strip() for t in value):
            raise PreferenceDataError(f"expected a list of {len(RMBENCH_STYLES)} non-empty texts "
                                      f"({', '.join(RMBENCH_STYLES)})", source, line, name)
    n = len(RMBENCH_STYLES)
    return ScoredExample(id=str(row["id"]) if row.get("id") is not None else str(index), subset=domain,
                         completions=row["chosen"] + row["rejected"], ranks=[0] * n + [1] * n, scores=[],
                         kind=RMBENCH_KIND, prompt=prompt)


def load_rmbench(path: str | Path) -> list[ScoredExample]:
    """RM-Bench rows from the official JSON array (data/total_dataset.json) or JSONL."""
    examples = [parse_rmbench_row(row, index, source, line) for index, (row, source, line) in enumerate(iter_rows(path))]
    if not examples:
        raise PreferenceDataError(f"{path}: no rows found")
    return examples


def rmbench_domain(domain: str) -> str:
    """The official domain a row counts in: the first of `RMBENCH_DOMAINS` its domain starts
    with, else its own name (such rows are outside the official score)."""
    return next((d for d in RMBENCH_DOMAINS if domain.startswith(d)), domain)


def rmbench_matrix(examples: list[ScoredExample]) -> np.ndarray:
    """M[i][j] = share of rows whose chosen answer in style i scores strictly above the
    rejected answer in style j (an exact score tie is wrong), styles in `RMBENCH_STYLES`
    order: rows are chosen styles, columns rejected styles."""
    n = len(RMBENCH_STYLES)
    wins = np.zeros((n, n))
    for e in examples:
        chosen, rejected = np.asarray(e.scores[:n]), np.asarray(e.scores[n:])
        wins += chosen[:, None] > rejected[None, :]
    return wins / len(examples)


def rmbench_difficulties(matrix: np.ndarray) -> dict[str, float]:
    """Hard = mean of the strict upper triangle (chosen plainer than rejected: i < j),
    normal = mean of the diagonal (same style), easy = mean of the strict lower triangle
    (chosen fancier than rejected), as the official `compute_accuracy` (scripts/utils.py)."""
    upper, lower = np.triu_indices_from(matrix, 1), np.tril_indices_from(matrix, -1)
    return {"hard": float(matrix[upper].mean()), "normal": float(np.diag(matrix).mean()),
            "easy": float(matrix[lower].mean())}


def rmbench(examples: list[ScoredExample]) -> dict | None:
    """RM-Bench's scores of the rmbench rows, or None when there are none.

    As the official `compute_accuracy` (THU-KEG/RM-Bench, scripts/utils.py) on the total
    dataset: per official domain, the 3x3 matrix over its rows and its hard/normal/easy
    accuracies, `average` = mean of the three; overall hard/normal/easy = unweighted means
    over domains, `score` (the leaderboard's Overall) = mean of the domain averages. Since
    these are linear in the matrix, the overall `matrix` is the unweighted mean of the
    domain matrices. Domains outside the official four get their own block but stay out of
    the overall numbers; `missing_domains` lists official ones absent (the official script
    needs all four)."""
    rows = [e for e in examples if e.kind == RMBENCH_KIND]
    if not rows:
        return None
    groups: dict[str, list[ScoredExample]] = {}
    for e in rows:
        groups.setdefault(rmbench_domain(e.subset), []).append(e)
    domains = {}
    for name, group in sorted(groups.items()):
        matrix = rmbench_matrix(group)
        difficulties = rmbench_difficulties(matrix)
        domains[name] = {"matrix": matrix.tolist(), **difficulties,
                         "average": float(np.mean(list(difficulties.values()))), "n": len(group)}
    official = [d for d in RMBENCH_DOMAINS if d in domains]
    block = {"styles": list(RMBENCH_STYLES), "domains": domains, "matrix": None, "hard": None, "normal": None,
             "easy": None, "score": None}
    if official:
        block |= {"matrix": np.mean([domains[d]["matrix"] for d in official], axis=0).tolist(),
                  **{k: float(np.mean([domains[d][k] for d in official])) for k in ("hard", "normal", "easy")},
                  "score": float(np.mean([domains[d]["average"] for d in official]))}
    return block | {"complete": len(official) == len(RMBENCH_DOMAINS),
                    "missing_domains": [d for d in RMBENCH_DOMAINS if d not in domains],
                    "other_domains": sorted(set(domains) - set(RMBENCH_DOMAINS))}
