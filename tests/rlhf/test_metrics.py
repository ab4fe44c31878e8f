"""Metrics against published reference values and against plain loops over the formulas."""

import itertools
import math

import numpy as np
import pytest

from rlhf import metrics

# -------------------------------------------------------------------------------------
# Accuracy and margin
# -------------------------------------------------------------------------------------


def test_pairwise_accuracy_strict_pairs_and_score_ties():
    scores_a = [2.0, 1.0, 3.0, 0.5]
    scores_b = [1.0, 2.0, 3.0, 1.5]
    labels = [1, 1, 1, 0]  # right, wrong, score tie, right
    assert metrics.pairwise_accuracy(scores_a, scores_b, labels) == pytest.approx(2 / 4)
    assert metrics.pairwise_accuracy(scores_a, scores_b, labels, score_ties="half") == pytest.approx(2.5 / 4)


def test_pairwise_accuracy_labelled_ties_get_half_credit_whatever_the_scores():
    for scores_b in ([0.0], [5.0], [1.0]):
        assert metrics.pairwise_accuracy([1.0], scores_b, [0.5]) == 0.5
        assert metrics.pairwise_accuracy([1.0], scores_b, [0.5], score_ties="half") == 0.5


def test_pairwise_accuracy_defaults_to_a_chosen_and_matches_mean_indicator():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=200), rng.normal(size=200)
    expected = np.mean([c > r for c, r in zip(chosen, rejected)])
    assert metrics.pairwise_accuracy(chosen, rejected) == pytest.approx(expected)


def test_pairwise_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="labels"):
        metrics.pairwise_accuracy([1.0], [0.0], [0.7])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.pairwise_accuracy([1.0, 2.0], [0.0], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.pairwise_accuracy([math.nan], [0.0], [1])
    with pytest.raises(ValueError, match="score_ties"):
        metrics.pairwise_accuracy([1.0], [0.0], [1], score_ties="maybe")


def test_mean_margin():
    assert metrics.mean_margin([3.0, 1.0], [1.0, 2.0]) == pytest.approx(0.5)


# -------------------------------------------------------------------------------------
# Calibration
# -------------------------------------------------------------------------------------


def test_brier_score_note_example_and_ties():
    assert metrics.brier_score([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0]) == pytest.approx(0.125)
    assert metrics.brier_score([0.5, 0.7], [0.5, 0.5]) == pytest.approx((0 + 0.04) / 2)


def _ece_plain_loop(probs, labels, n_bins):
    """ECE = sum_b n_b/N |acc_b - conf_b| on conf = max(p, 1 - p), bins over [0.5, 1]."""
    width = 0.5 / n_bins
    bins = [[] for _ in range(n_bins)]
    for p, y in zip(probs, labels):
        confidence = max(p, 1 - p)
        if y == 0.5 or p == 0.5:
            correct = 0.5
        else:
            correct = 1.0 if (p > 0.5) == (y == 1) else 0.0
        bins[min(int((confidence - 0.5) / width), n_bins - 1)].append((confidence, correct))
    ece = 0.0
    for members in bins:
        if members:
            mean_confidence = sum(c for c, _ in members) / len(members)
            accuracy = sum(a for _, a in members) / len(members)
            ece += len(members) / len(probs) * abs(accuracy - mean_confidence)
    return ece, [len(members) for members in bins]


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_plain_loop(n_bins):
    rng = np.random.default_rng(1)
    probs = rng.uniform(size=500)
    labels = rng.choice([0.0, 0.5, 1.0], p=[0.45, 0.1, 0.45], size=500)
    expected, counts = _ece_plain_loop(probs, labels, n_bins)
    table = metrics.reliability(probs, labels, n_bins=n_bins)
    assert table["ece"] == pytest.approx(expected, abs=1e-12)
    assert metrics.expected_calibration_error(probs, labels, n_bins) == pytest.approx(expected, abs=1e-12)
    assert table["bin_count"].tolist() == counts
    assert table["brier"] == pytest.approx(np.mean((probs - labels) ** 2))
    assert len(table["bin_edges"]) == n_bins + 1 and table["bin_edges"][0] == 0.5


def test_reliability_of_a_perfectly_sure_correct_model_and_empty_bins():
    table = metrics.reliability([1.0, 0.0, 1.0], [1, 0, 1])
    assert table["ece"] == 0.0 and table["brier"] == 0.0
    assert table["bin_count"][-1] == 3
    assert np.isnan(table["bin_accuracy"][0]) and np.isnan(table["bin_confidence"][0])


def test_calibration_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.brier_score([1.2], [1])
    with pytest.raises(ValueError, match="n_bins"):
        metrics.reliability([0.7], [1], n_bins=0)


# -------------------------------------------------------------------------------------
# Kendall tau-b
# -------------------------------------------------------------------------------------


def _tau_b_plain_loop(x, y):
    """tau_b = (C - D) / sqrt((n0 - n1)(n0 - n2)) counting pairs one by one."""
    concordant = discordant = tied_x = tied_y = 0
    pairs = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        pairs += 1
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0:
            tied_x += 1
        if dy == 0:
            tied_y += 1
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    return (concordant - discordant) / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def test_kendall_tau_b_matches_plain_loop_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(20):
        k = int(rng.integers(3, 9))
        true = rng.integers(0, 4, size=k).tolist()
        pred = rng.integers(0, 4, size=k).tolist()
        if len(set(true)) < 2 or len(set(pred)) < 2:
            continue
        assert metrics.kendall_tau_b(true, pred) == pytest.approx(_tau_b_plain_loop(true, pred), abs=1e-12)


def test_kendall_tau_b_drops_unranked_items():
    true = [0, 1, 2, None, 3]
    pred = [0, 2, 1, 0, None]
    expected = _tau_b_plain_loop([0, 1, 2], [0, 2, 1])
    assert metrics.kendall_tau_b(true, pred) == pytest.approx(expected)
    assert metrics.kendall_tau_b([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert metrics.kendall_tau_b([0, 1, 2, 3], [3, 2, 1, 0]) == pytest.approx(-1.0)


def test_kendall_tau_b_undefined_cases_are_nan():
    assert math.isnan(metrics.kendall_tau_b([0, None], [0, 1]))
    assert math.isnan(metrics.kendall_tau_b([0, 0, 0], [0, 1, 2]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics.kendall_tau_b([0, 1], [0, 1, 2])


# -------------------------------------------------------------------------------------
# Agreement between judges
# -------------------------------------------------------------------------------------


def test_cohens_kappa_wikipedia_example():
    # 50 proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5, kappa = 0.4
    rater_a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    rater_b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert metrics.cohens_kappa(rater_a, rater_b) == pytest.approx(0.4)


def test_cohens_kappa_pair_labels_missing_values_and_undefined():
    # float categories (0.5 = tie) work; items with a missing rating are dropped
    a = [1.0, 0.0, 0.5, 1.0, None, 0.0]
    b = [1.0, 0.0, 0.5, 0.0, 1.0, math.nan]
    assert metrics.cohens_kappa(a, b) == pytest.approx(metrics.cohens_kappa([1.0, 0.0, 0.5, 1.0], [1.0, 0.0, 0.5, 0.0]))
    assert math.isnan(metrics.cohens_kappa([1, 1], [1, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics.cohens_kappa([1], [1, 0])


# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.210
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def _fleiss_plain(table):
    n_subjects, n_raters = len(table), sum(table[0])
    p_j = [sum(row[j] for row in table) / (n_subjects * n_raters) for j in range(len(table[0]))]
    p_i = [(sum(c * c for c in row) - n_raters) / (n_raters * (n_raters - 1)) for row in table]
    p_bar, p_e = sum(p_i) / n_subjects, sum(p * p for p in p_j)
    return (p_bar - p_e) / (1 - p_e)


def test_fleiss_kappa_wikipedia_example_from_table_and_from_ratings():
    assert metrics.fleiss_kappa(table=FLEISS_TABLE) == pytest.approx(0.210, abs=5e-4)
    assert metrics.fleiss_kappa(table=FLEISS_TABLE) == pytest.approx(_fleiss_plain(FLEISS_TABLE), abs=1e-12)
    ratings = [[category for category, count in enumerate(row) for _ in range(count)] for row in FLEISS_TABLE]
    assert metrics.fleiss_kappa(ratings) == pytest.approx(_fleiss_plain(FLEISS_TABLE), abs=1e-12)


def test_fleiss_kappa_rejects_bad_input():
    with pytest.raises(ValueError, match="exactly one"):
        metrics.fleiss_kappa()
    with pytest.raises(ValueError, match="same number"):
        metrics.fleiss_kappa(table=[[1, 1], [2, 1]])
    with pytest.raises(ValueError, match="missing"):
        metrics.fleiss_kappa([[1, None], [0, 1]])


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 coders,
# 12 units, missing values; nominal alpha = 0.743, interval alpha = 0.849.
KRIPPENDORFF_DATA = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _alpha_plain_loop(data, distance):
    """alpha = 1 - D_o / D_e from the coincidence matrix o_ck: each unit with m_u >= 2
    values adds 1 / (m_u - 1) for every ordered pair of values from different coders."""
    values = sorted({v for row in data for v in row if v is not None})
    coincidence = {(c, k): 0.0 for c in values for k in values}
    for unit in zip(*data):
        present = [v for v in unit if v is not None]
        if len(present) < 2:
            continue
        for i, j in itertools.permutations(range(len(present)), 2):
            coincidence[present[i], present[j]] += 1 / (len(present) - 1)
    n_c = {c: sum(coincidence[c, k] for k in values) for c in values}
    n = sum(n_c.values())
    observed = sum(coincidence[c, k] * distance(c, k) for c in values for k in values)
    expected = sum(n_c[c] * n_c[k] * distance(c, k) for c in values for k in values) / (n - 1)
    return 1 - observed / expected


def test_krippendorff_alpha_reference_example_nominal_and_interval():
    nominal = _alpha_plain_loop(KRIPPENDORFF_DATA, lambda c, k: float(c != k))
    interval = _alpha_plain_loop(KRIPPENDORFF_DATA, lambda c, k: (c - k) ** 2)
    assert round(nominal, 3) == 0.743 and round(interval, 3) == 0.849  # the published values
    assert metrics.krippendorff_alpha(KRIPPENDORFF_DATA) == pytest.approx(nominal, abs=1e-12)
    assert metrics.krippendorff_alpha(KRIPPENDORFF_DATA, level="interval") == pytest.approx(interval, abs=1e-12)


def test_krippendorff_alpha_accepts_nan_and_rejects_bad_input():
    with_nan = [[math.nan if v is None else v for v in row] for row in KRIPPENDORFF_DATA]
    assert metrics.krippendorff_alpha(with_nan) == pytest.approx(metrics.krippendorff_alpha(KRIPPENDORFF_DATA))
    with pytest.raises(ValueError, match="two distinct values"):
        metrics.krippendorff_alpha([[1, 1], [1, None]])
    with pytest.raises(ValueError, match="level"):
        metrics.krippendorff_alpha(KRIPPENDORFF_DATA, level="cardinal")
