"""Evaluation metrics for reward models and agreement between labellers.

Reward-model metrics (definitions: docs/notes_reward_model_metrics.md; RewardBench,
Lambert et al. 2024, for accuracy; Guo et al. 2017 for calibration):

- `ranking_pairs`: the (better, worse) pairs and the labelled-tie pairs one ranking induces
  (InstructGPT, Ouyang et al. 2022, eq. 1: a K-way ranking gives C(K, 2) comparisons).
- `pairwise_accuracy`: share of pairs the model orders as the judge did, with the rule for
  exact score ties and for labelled ties as parameters (see its docstring for who uses which).
- `gold_pair_accuracy`: within-prompt pairwise accuracy against gold scores.
- `mean_margin`: mean score difference chosen - rejected.
- `brier_score`, `expected_calibration_error`, `reliability`: calibration of p = P(A preferred).
- `kendall_tau_b`: rank agreement of one K-way ranking (via `scipy.stats.kendalltau`).
- `top1_credit`: top-1 accuracy of one ranking, ties at the maximum share the credit.
- `length_split`: length bias of pairwise preferences (RewardBench's length categories).
- `bootstrap_interval`: percentile bootstrap CI of a mean (`scipy.stats.bootstrap`).
- `pearson`: Pearson correlation, None when undefined (`scipy.stats.pearsonr`).

Agreement between judges (the ceiling next to accuracy):

- `cohens_kappa`: two raters (via scikit-learn).
- `fleiss_kappa`: many raters, every subject rated by the same number of raters (via statsmodels).
- `krippendorff_alpha`: many raters with missing ratings (via the `krippendorff` package).

Labels follow `rlhf.preferences`: a pair label is P(item A preferred) in {1, 0, 0.5 (tie)};
ranks are 0 = best, equal ranks are ties, None = unranked.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np
from scipy.stats import bootstrap, kendalltau, pearsonr

TIE = 0.5  # the pair label of "equally good"


# =====================================================================================
# Input checks shared by the reward-model metrics
# =====================================================================================

def _as_finite_vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")


def _as_pair_labels(labels: Any, n: int) -> np.ndarray:
    """Pair labels as floats in {0, 0.5, 1}; ``None`` means "A is the chosen item" for all."""
    if labels is None:
        return np.ones(n)
    array = _as_finite_vector(labels, "labels")
    bad = ~np.isin(array, (0.0, TIE, 1.0))
    if bad.any():
        raise ValueError(f"labels must be P(A preferred) in {{0, 0.5, 1}}, got {array[bad][0]!r}")
    return array


def _as_probabilities(probs: Any) -> np.ndarray:
    array = _as_finite_vector(probs, "probs")
    if array.min() < 0 or array.max() > 1:
        raise ValueError("probs must lie in [0, 1]")
    return array


# =====================================================================================
# Accuracy and margin
# =====================================================================================

def ranking_pairs(ranks: Sequence[int | None]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The pairs one ranking induces: (strict pairs as (better, worse) indices, labelled-tie
    pairs as (i, j) with i < j), both in the order of i < j.

    Ranks follow `rlhf.preferences` (0 best, equal ranks tied, None unranked): ranked items
    beat unranked ones, two unranked items are not compared (a partial, top-k ranking). A
    K-way ranking without ties gives all C(K, 2) pairs (Ouyang et al. 2022, eq. 1)."""
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


def pairwise_accuracy(scores_a: Sequence[float], scores_b: Sequence[float], labels: Sequence[float] | None = None,
                      score_ties: Literal["wrong", "half"] = "wrong",
                      labelled_ties: Literal["half", "skip"] = "half") -> float:
    """Mean credit over pairs for a reward model scoring items A and B.

    ``labels`` are P(A preferred) in {1, 0, 0.5}; ``None`` means A is always the chosen item
    (chosen/rejected columns). Credit per pair:

    - strict label, model orders the pair as labelled: 1, the other way: 0;
    - strict label, exactly equal scores: 0 with ``score_ties="wrong"`` (RewardBench and TRL:
      accuracy = mean 1[r_chosen > r_rejected]), 0.5 with ``score_ties="half"``;
    - labelled tie (0.5): with ``labelled_ties="half"`` 0.5 whatever the scores, since
      neither order is wrong; with ``labelled_ties="skip"`` the pair is left out (the
      RewardBench advice: report tie items apart).

    Returns NaN when no pair is left. Who uses which rule:

    - ``reward_model.evaluate`` strict accuracy: wrong / skip; its half-credit accuracy:
      wrong / half (a labelled tie cannot be ordered right, so it gets the coin's 0.5);
    - ``reward_model.trainer.pair_metrics`` (TRL's logged names): ``accuracy`` wrong / skip,
      ``accuracy_ties_half`` half / half;
    - `gold_pair_accuracy` and ``robot.reward`` (segments): wrong / skip, since pairs with
      equal gold (true) returns carry no order to get right.
    """
    a = _as_finite_vector(scores_a, "scores_a")
    b = _as_finite_vector(scores_b, "scores_b")
    _check_same_length(scores_a=a, scores_b=b)
    y = _as_pair_labels(labels, len(a))
    _check_same_length(scores_a=a, labels=y)
    if score_ties not in ("wrong", "half"):
        raise ValueError(f"score_ties must be 'wrong' or 'half', got {score_ties!r}")
    if labelled_ties not in ("half", "skip"):
        raise ValueError(f"labelled_ties must be 'half' or 'skip', got {labelled_ties!r}")
    if labelled_ties == "skip":
        decided = y != TIE
        a, b, y = a[decided], b[decided], y[decided]
        if len(y) == 0:
            return math.nan

    model_prefers_a = np.where(a > b, 1.0, np.where(a < b, 0.0, TIE))
    credit = np.where(model_prefers_a == y, 1.0, 0.0)  # strict label, strict scores
    score_tie_credit = 0.0 if score_ties == "wrong" else 0.5
    credit = np.where(model_prefers_a == TIE, score_tie_credit, credit)
    credit = np.where(y == TIE, 0.5, credit)
    return float(credit.mean())


def gold_pair_accuracy(model_scores: Any, gold_scores: Any) -> tuple[float, int]:
    """(accuracy, number of pairs) of a model against gold scores, over within-prompt pairs.

    ``model_scores`` and ``gold_scores`` are (prompts, K): row p holds the K completions of
    prompt p. Every pair of completions of one prompt with different gold scores counts;
    the model is right when it orders the pair like gold, strictly (an exact score tie is
    wrong, RewardBench's rule); pairs with equal gold are skipped. Accuracy is 0.0 when
    there is no such pair. The reward-model demo's headline "accuracy against gold"."""
    model = np.asarray(model_scores, dtype=float)
    gold = np.asarray(gold_scores, dtype=float)
    if model.shape != gold.shape or model.ndim != 2:
        raise ValueError(f"model_scores {model.shape} and gold_scores {gold.shape} must both be (prompts, K)")
    better, worse = [], []
    for model_row, gold_row in zip(model, gold):
        strict, _ = ranking_pairs((-gold_row).tolist())  # higher gold = better = lower rank
        better += [model_row[i] for i, _ in strict]
        worse += [model_row[j] for _, j in strict]
    if not better:
        return 0.0, 0
    return pairwise_accuracy(better, worse, score_ties="wrong"), len(better)


def mean_margin(scores_chosen: Sequence[float], scores_rejected: Sequence[float]) -> float:
    """Mean of r_chosen - r_rejected (DS-Chat and OpenRLHF log the two means it is made of)."""
    chosen = _as_finite_vector(scores_chosen, "scores_chosen")
    rejected = _as_finite_vector(scores_rejected, "scores_rejected")
    _check_same_length(scores_chosen=chosen, scores_rejected=rejected)
    return float(np.mean(chosen - rejected))


def top1_credit(scores: Sequence[float], ranks: Sequence[int | None]) -> float:
    """Share of the completions tied at the maximum score that are ranked best (rank 0).

    With one correct completion this is RewardBench 2's best-of-n rule (Malik et al. 2025):
    1/(number tied at the max) when the correct one attains the max, else 0."""
    top = max(scores)
    at_max = [i for i, s in enumerate(scores) if s == top]
    return sum(1 for i in at_max if ranks[i] == 0) / len(at_max)


def length_split(scores_better: Sequence[float], scores_worse: Sequence[float],
                 length_better: Sequence[int], length_worse: Sequence[int]) -> dict:
    """Length bias of pairwise preferences (RewardBench's length categories).

    Pairs are (better, worse) as the judge said. Returns the strict accuracy (exact score
    ties wrong) split by whether the chosen completion is shorter, longer or the same
    length, and, over pairs of different lengths that the model does not score equal, the
    share where the model prefers the longer one and the share where the judge did."""
    split: dict[str, tuple[list[float], list[float]]] = {"chosen_shorter": ([], []), "chosen_longer": ([], []),
                                                         "same_length": ([], [])}
    rm_prefers_longer, human_prefers_longer = [], []
    for better, worse, size_better, size_worse in zip(scores_better, scores_worse, length_better, length_worse,
                                                      strict=True):
        key = "chosen_shorter" if size_better < size_worse else "chosen_longer" if size_better > size_worse \
            else "same_length"
        split[key][0].append(better)
        split[key][1].append(worse)
        if size_better != size_worse and better != worse:
            longer_is_better = size_better > size_worse
            human_prefers_longer.append(longer_is_better)
            rm_prefers_longer.append(longer_is_better == (better > worse))
    return {
        "accuracy_by_length": {key: {"accuracy": pairwise_accuracy(b, w) if b else None, "n_pairs": len(b)}
                               for key, (b, w) in split.items()},
        "share_rm_prefers_longer": float(np.mean(rm_prefers_longer)) if rm_prefers_longer else None,
        "share_human_prefers_longer": float(np.mean(human_prefers_longer)) if human_prefers_longer else None,
    }


# =====================================================================================
# Confidence intervals and correlation
# =====================================================================================

def bootstrap_interval(values: Sequence[float], n_resamples: int, seed: int, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean (Efron and Tibshirani 1993, ch. 13), by
    `scipy.stats.bootstrap` with ``method="percentile"``, resampling values with replacement.

    Each call uses its own generator from ``seed``, so the interval of a subset does not
    depend on which others were computed before it. Resamples are drawn in batches of at
    most 2e6 values (bounded memory on large data sets). None when ``n_resamples`` is 0 or
    there are no values; a single value gives the interval [value, value]."""
    values = np.asarray(values, dtype=float)
    if n_resamples <= 0 or len(values) == 0:
        return None
    if len(values) == 1:  # scipy needs two observations; every resample is the value itself
        return [float(values[0]), float(values[0])]
    result = bootstrap((values,), np.mean, n_resamples=n_resamples, batch=max(1, 2_000_000 // len(values)),
                       vectorized=True, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r (`scipy.stats.pearsonr`); None when undefined (fewer than two values,
    or either input constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _check_same_length(x=x, y=y)
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(pearsonr(x, y).statistic)


# =====================================================================================
# Calibration
# =====================================================================================

def brier_score(probs: Sequence[float], labels: Sequence[float]) -> float:
    """Brier score = mean (p - y)^2 with y = P(A preferred) in {1, 0, 0.5 for ties}.

    Brier 1950; e.g. p = [0.9, 0.8, 0.3, 0.6], y = [1, 1, 0, 0] gives 0.125."""
    p = _as_probabilities(probs)
    y = _as_pair_labels(labels, len(p))
    _check_same_length(probs=p, labels=y)
    return float(np.mean((p - y) ** 2))


def _confidence_and_correctness(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conf = max(p, 1 - p) is the probability given to the predicted side; correctness is
    1 if that side was preferred, 0 if not, and 0.5 when the label is a tie or p = 0.5
    (no side predicted): the expected credit of a coin flip."""
    confidence = np.maximum(p, 1.0 - p)
    predicted_a = np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, TIE))
    correct = np.where(predicted_a == y, 1.0, 0.0)
    correct = np.where((predicted_a == TIE) | (y == TIE), 0.5, correct)
    return confidence, correct


def reliability(probs: Sequence[float], labels: Sequence[float], n_bins: int = 10) -> dict:
    """Reliability table, ECE and Brier score of pair probabilities p = P(A preferred).

    Confidence is conf = max(p, 1 - p), which lies in [0.5, 1]; the ``n_bins`` equal-width
    bins therefore span [0.5, 1] (bins below 0.5 would always be empty). A bin holds
    lower <= conf < upper; conf = 1 falls in the last bin.

    ECE = sum_b (n_b / N) * |acc_b - conf_b|   (Guo et al. 2017, eq. 3).

    Returns ``{"ece", "brier", "n", "bin_edges" (n_bins + 1), "bin_confidence",
    "bin_accuracy", "bin_count"}``; empty bins have NaN confidence and accuracy.
    """
    p = _as_probabilities(probs)
    y = _as_pair_labels(labels, len(p))
    _check_same_length(probs=p, labels=y)
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")

    confidence, correct = _confidence_and_correctness(p, y)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    bin_index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(bin_index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become NaN
        bin_confidence = np.bincount(bin_index, weights=confidence, minlength=n_bins) / count
        bin_accuracy = np.bincount(bin_index, weights=correct, minlength=n_bins) / count
    filled = count > 0
    ece = np.sum(count[filled] / len(p) * np.abs(bin_accuracy[filled] - bin_confidence[filled]))
    return {
        "ece": float(ece),
        "brier": brier_score(p, y),
        "n": int(len(p)),
        "bin_edges": edges,
        "bin_confidence": bin_confidence,
        "bin_accuracy": bin_accuracy,
        "bin_count": count,
    }


def expected_calibration_error(probs: Sequence[float], labels: Sequence[float], n_bins: int = 10) -> float:
    """ECE of pair probabilities; see `reliability` for the binning."""
    return reliability(probs, labels, n_bins)["ece"]


# =====================================================================================
# Rankings
# =====================================================================================

def kendall_tau_b(ranks_true: Sequence[int | None], ranks_pred: Sequence[int | float | None]) -> float:
    """Kendall's tau-b between two rankings of the same K items (`scipy.stats.kendalltau`,
    variant 'b'):

        tau_b = (C - D) / sqrt((n0 - n1) (n0 - n2)),  n0 = C(K, 2), n1, n2 = pairs tied in each.

    Ranks follow `rlhf.preferences` (0 = best, equal = tie) but any numbers work as long as
    both rankings use the same direction (predicted scores would need negating). Items
    that are unranked (None or NaN) in either ranking are dropped from both before
    counting pairs; this ignores the "ranked beats unranked" information of partial
    rankings. Returns NaN when fewer than two items remain or a ranking is all ties.
    """
    true = _ranks_with_nan(ranks_true, "ranks_true")
    pred = _ranks_with_nan(ranks_pred, "ranks_pred")
    _check_same_length(ranks_true=true, ranks_pred=pred)
    both_ranked = ~np.isnan(true) & ~np.isnan(pred)
    true, pred = true[both_ranked], pred[both_ranked]
    if len(true) < 2 or np.all(true == true[0]) or np.all(pred == pred[0]):
        return math.nan  # undefined; checked here so scipy does not warn
    return float(kendalltau(true, pred, variant="b").statistic)


def _ranks_with_nan(ranks: Sequence, name: str) -> np.ndarray:
    array = np.array([math.nan if r is None else r for r in ranks], dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if np.any(np.isinf(array)):
        raise ValueError(f"{name} contains infinite values")
    return array


# =====================================================================================
# Agreement between judges
# =====================================================================================

def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cohens_kappa(ratings_a: Sequence, ratings_b: Sequence,
                 weights: Literal["linear", "quadratic"] | None = None) -> float:
    """Cohen's kappa between two raters, kappa = (p_o - p_e) / (1 - p_e)
    (`sklearn.metrics.cohen_kappa_score`).

    Ratings are categories of any kind (pair labels 0 / 0.5 / 1, strings, ints). Items that
    either rater left missing (None or NaN) are dropped. ``weights`` gives weighted kappa
    for ordered categories (their sorted order). Returns NaN when kappa is undefined
    (both raters used one and the same category).
    """
    from sklearn.metrics import cohen_kappa_score  # heavy; only the labelling app's agreement needs it

    if len(ratings_a) != len(ratings_b):
        raise ValueError(f"inputs differ in length: {len(ratings_a)} vs {len(ratings_b)}")
    kept = [(a, b) for a, b in zip(ratings_a, ratings_b) if not (_is_missing(a) or _is_missing(b))]
    if not kept:
        raise ValueError("no item is rated by both raters")
    # scikit-learn refuses float categories such as 0.5 ("continuous"): use category codes,
    # which keep the sorted order that weighted kappa needs.
    categories, codes = np.unique(np.array(kept), return_inverse=True)
    codes = codes.reshape(len(kept), 2)
    if len(categories) < 2:
        return math.nan
    return float(cohen_kappa_score(codes[:, 0], codes[:, 1], weights=weights))


def fleiss_kappa(ratings: Any = None, *, table: Any = None) -> float:
    """Fleiss' kappa for a fixed number of raters per subject
    (`statsmodels.stats.inter_rater.fleiss_kappa`, method "fleiss"; Fleiss 1971).

    Give exactly one of:

    - ``ratings``: a subjects x raters matrix of categories, turned into counts with
      `statsmodels.stats.inter_rater.aggregate_raters`; no missing values (use
      `krippendorff_alpha` for those);
    - ``table``: a subjects x categories matrix of counts, every row with the same sum
      (the number of raters).
    """
    from statsmodels.stats import inter_rater  # heavy; only the labelling app's agreement needs it

    if (ratings is None) == (table is None):
        raise ValueError("give exactly one of `ratings` (subjects x raters) or `table` (subjects x categories counts)")
    if ratings is not None:
        if any(_is_missing(r) for row in ratings for r in row):
            raise ValueError("ratings contain missing values; Fleiss' kappa needs every rater on every subject "
                             "(use krippendorff_alpha for missing ratings)")
        ratings = np.asarray(ratings)
        if ratings.ndim != 2 or ratings.shape[1] < 2:
            raise ValueError(f"ratings must be a subjects x raters matrix with >= 2 raters, got shape {ratings.shape}")
        table, _ = inter_rater.aggregate_raters(ratings)
    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[0] < 1:
        raise ValueError(f"table must be a subjects x categories matrix of counts, got shape {table.shape}")
    if np.any(table < 0) or np.any(table != np.round(table)):
        raise ValueError("table must hold non-negative integer counts")
    raters_per_subject = table.sum(axis=1)
    if np.any(raters_per_subject != raters_per_subject[0]) or raters_per_subject[0] < 2:
        raise ValueError("every subject needs the same number (>= 2) of raters; "
                         f"row sums are {sorted(set(raters_per_subject.tolist()))}")
    return float(inter_rater.fleiss_kappa(table, method="fleiss"))


def krippendorff_alpha(reliability_data: Any,
                       level: Literal["nominal", "ordinal", "interval", "ratio"] = "nominal") -> float:
    """Krippendorff's alpha = 1 - D_o / D_e (Krippendorff 2011, "Computing Krippendorff's
    alpha-reliability"; the `krippendorff` package).

    ``reliability_data`` is a raters x units matrix of numeric values (e.g. pair labels
    0 / 0.5 / 1); None or NaN marks a missing rating. Units rated by fewer than two raters
    do not contribute. Raises ValueError when fewer than two distinct values occur.
    """
    import krippendorff  # only the labelling app's agreement needs it

    if level not in ("nominal", "ordinal", "interval", "ratio"):
        raise ValueError(f"level must be nominal, ordinal, interval or ratio, got {level!r}")
    rows = [[math.nan if v is None else v for v in row] for row in reliability_data]
    try:
        data = np.array(rows, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"reliability_data must be a raters x units matrix of numbers or None ({err})") from None
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"reliability_data must be raters x units with >= 2 raters, got shape {data.shape}")
    if len(np.unique(data[~np.isnan(data)])) < 2:
        raise ValueError("alpha is undefined when fewer than two distinct values are used")
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
