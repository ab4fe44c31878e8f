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


# -------------------------------------------------------------------------------------
# Ranking to pairs, the tie rules, gold accuracy, top-1, length split
# -------------------------------------------------------------------------------------


def test_ranking_pairs_by_hand():
    # item 0 best, items 1 and 2 tied, item 3 unranked, item 4 unranked
    strict, tied = metrics.ranking_pairs([0, 1, 1, None, None])
    assert strict == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 3), (1, 4), (2, 3), (2, 4)]
    assert tied == [(1, 2)]
    assert metrics.ranking_pairs([2, 0, 1]) == ([(1, 0), (2, 0), (1, 2)], [])
    assert metrics.ranking_pairs([None, 0]) == ([(1, 0)], [])


def test_ranking_pairs_count_is_k_choose_2_without_ties():
    strict, tied = metrics.ranking_pairs([3, 1, 4, 0, 2])
    assert len(strict) == 10 and tied == []
    ranks = [3, 1, 4, 0, 2]
    assert all(ranks[b] < ranks[w] for b, w in strict)


def test_pairwise_accuracy_labelled_ties_skipped():
    scores_a, scores_b = [2.0, 1.0, 3.0, 0.0], [1.0, 2.0, 3.0, 9.0]
    labels = [1, 1, 1, 0.5]  # right, wrong, score tie, labelled tie
    assert metrics.pairwise_accuracy(scores_a, scores_b, labels, labelled_ties="skip") == pytest.approx(1 / 3)
    assert metrics.pairwise_accuracy(scores_a, scores_b, labels, score_ties="half",
                                     labelled_ties="skip") == pytest.approx(1.5 / 3)
    assert metrics.pairwise_accuracy(scores_a, scores_b, labels) == pytest.approx(1.5 / 4)
    assert math.isnan(metrics.pairwise_accuracy([1.0], [2.0], [0.5], labelled_ties="skip"))
    with pytest.raises(ValueError, match="labelled_ties"):
        metrics.pairwise_accuracy([1.0], [0.0], [1], labelled_ties="maybe")


def test_gold_pair_accuracy_by_hand_and_against_the_demo_loop():
    gold = np.array([[3.0, 1.0, 1.0], [0.0, 2.0, 5.0]])
    model = np.array([[0.5, 0.9, 0.1], [1.0, 1.0, 0.0]])
    # prompt 0: pairs (0,1) wrong, (0,2) right, (1,2) equal gold: skipped
    # prompt 1: (1 beats 0) equal scores: wrong, (2 beats 0) wrong, (2 beats 1) wrong
    assert metrics.gold_pair_accuracy(model, gold) == (pytest.approx(1 / 5), 5)
    assert metrics.gold_pair_accuracy(np.zeros((1, 2)), np.ones((1, 2))) == (0.0, 0)

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, (30, 4)).astype(float)
    model = rng.normal(size=(30, 4)).astype(np.float32)
    correct = total = 0  # the reward-model demo's loop, as it was written
    for model_row, gold_row in zip(model, gold):
        for i in range(4):
            for j in range(i + 1, 4):
                if gold_row[i] == gold_row[j]:
                    continue
                total += 1
                correct += (model_row[i] - model_row[j]) * (gold_row[i] - gold_row[j]) > 0
    assert metrics.gold_pair_accuracy(model, gold) == (correct / total, total)


def test_top1_credit_shares_ties_at_the_max():
    assert metrics.top1_credit([2.0, 1.0, 0.0], [0, 1, 2]) == 1.0
    assert metrics.top1_credit([2.0, 2.0, 0.0], [0, 1, 1]) == 0.5
    assert metrics.top1_credit([1.0, 2.0], [0, 1]) == 0.0


def test_length_split_by_hand():
    split = metrics.length_split([1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 1.0, 1.0], [2, 6, 6, 3], [4, 1, 5, 3])
    assert split["accuracy_by_length"] == {"chosen_shorter": {"accuracy": 1.0, "n_pairs": 1},
                                           "chosen_longer": {"accuracy": 0.5, "n_pairs": 2},
                                           "same_length": {"accuracy": 0.0, "n_pairs": 1}}
    # different lengths, scores not equal: 3 pairs; the judge chose the longer one in 2,
    # the model prefers the longer one in pair 3 only (pair 1: shorter, pair 2: shorter).
    assert split["share_human_prefers_longer"] == pytest.approx(2 / 3)
    assert split["share_rm_prefers_longer"] == pytest.approx(1 / 3)


# -------------------------------------------------------------------------------------
# Bootstrap interval and correlation
# -------------------------------------------------------------------------------------


def hand_bootstrap(values, n_resamples, seed, level=0.95):
    """The percentile bootstrap as the evaluator computed it before scipy: the same draws."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return np.percentile(means, [tail, 100 - tail])


@pytest.mark.parametrize("seed", [0, 3])
def test_bootstrap_interval_equals_the_hand_percentile_bootstrap(seed):
    rng = np.random.default_rng(seed)
    credits = (rng.random(57) < 0.7).astype(float)
    normal = rng.normal(size=40)
    for values in (credits, normal):
        assert metrics.bootstrap_interval(values, 500, seed) == pytest.approx(hand_bootstrap(values, 500, seed),
                                                                              abs=1e-12)
    assert metrics.bootstrap_interval([0.25], 100, seed) == [0.25, 0.25]
    assert metrics.bootstrap_interval(credits, 0, seed) is None and metrics.bootstrap_interval([], 10, seed) is None


def test_pearson_against_numpy_and_undefined_cases():
    x, y = [1.0, 2.0, 3.0, 5.0], [2.0, 1.0, 4.0, 4.5]
    assert metrics.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert metrics.pearson([1.0, 1.0], [0.0, 1.0]) is None and metrics.pearson([1.0], [2.0]) is None
