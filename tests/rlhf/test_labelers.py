"""Simulated B-Pref teachers: each teacher's defining statistic, determinism and errors."""

import math

import numpy as np
import pytest
from scipy.special import expit, softmax

from rlhf import labelers
from rlhf.preferences import Comparison, scores_to_ranks


def _labels(answers):
    return np.array([answer.label for answer in answers])


def _binomial_tolerance(p, n, sigmas=4.0):
    return sigmas * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def random_pairs():
    rng = np.random.default_rng(123)
    return rng.normal(size=10_000), rng.normal(size=10_000)


# -------------------------------------------------------------------------------------
# Pairs
# -------------------------------------------------------------------------------------


def test_oracle_agrees_with_gold_everywhere(random_pairs):
    gold_a, gold_b = random_pairs
    answers = labelers.oracle().label_pairs(gold_a, gold_b)
    assert all(isinstance(a, Comparison) and a.kind == "pair" and a.annotator == "oracle" for a in answers)
    assert np.array_equal(_labels(answers), (gold_a > gold_b).astype(float))


def test_mistake_teacher_flips_about_ten_percent(random_pairs):
    gold_a, gold_b = random_pairs
    truth = _labels(labelers.oracle().label_pairs(gold_a, gold_b))
    noisy = _labels(labelers.mistake(eps=0.1, seed=7).label_pairs(gold_a, gold_b))
    flips = int(np.sum(noisy != truth))
    print(f"mistake teacher flipped {flips} of {len(truth)} labels")
    assert np.all((noisy == truth) | (noisy == 1 - truth))
    assert 0.09 <= flips / len(truth) <= 0.11


def test_stochastic_label_frequency_matches_sigmoid():
    n, delta = 20_000, 0.7
    answers = labelers.stochastic(beta=1.0, seed=3).label_pairs(np.full(n, delta), np.zeros(n))
    frequency = _labels(answers).mean()
    expected = expit(delta)
    assert abs(frequency - expected) < _binomial_tolerance(expected, n)
    # beta scales the difference: beta = 2 on the same gold is sigmoid(1.4)
    sharper = _labels(labelers.stochastic(beta=2.0, seed=3).label_pairs(np.full(n, delta), np.zeros(n))).mean()
    assert abs(sharper - expit(2 * delta)) < _binomial_tolerance(expit(2 * delta), n)


def test_myopic_teacher_weights_the_segment_end():
    # A earns 10 at the first step, B 8 at the last: undiscounted A wins (10 > 8),
    # discounted with gamma = 0.9 B wins (0.9^3 * 10 = 7.29 < 8).
    segment_a = [[10.0, 0.0, 0.0, 0.0]]
    segment_b = [[0.0, 0.0, 0.0, 8.0]]
    assert labelers.oracle().label_pairs(segment_a, segment_b)[0].label == 1.0
    assert labelers.myopic(gamma=0.9).label_pairs(segment_a, segment_b)[0].label == 0.0


def test_equal_teacher_ties_exactly_when_returns_are_close():
    rng = np.random.default_rng(5)
    gold_a, gold_b = rng.normal(size=(2000, 5)), rng.normal(size=(2000, 5))  # per-step rewards
    threshold = 0.5
    labels = _labels(labelers.equal(threshold).label_pairs(gold_a, gold_b))
    difference = gold_a.sum(axis=1) - gold_b.sum(axis=1)  # undiscounted returns
    close = np.abs(difference) < threshold
    assert close.any() and not close.all()
    assert np.array_equal(labels == 0.5, close)
    assert np.array_equal(labels[~close], (difference[~close] > 0).astype(float))


def test_skip_teacher_returns_none_when_both_returns_are_low():
    gold_a = np.array([0.0, 1.0, 2.0, 0.5, -3.0])
    gold_b = np.array([0.5, 0.2, 0.0, 1.0, -1.0])
    answers = labelers.skip(threshold=1.0).label_pairs(gold_a, gold_b)
    skipped = [a is None for a in answers]
    assert skipped == [True, True, False, True, True]  # max(R) <= 1.0 is skipped, boundary included
    assert answers[2].label == 1.0


def test_rational_exact_ties_are_labelled_half():
    answers = labelers.oracle().label_pairs([3, 3, 4], [3, 2, 5])  # integer rubric scores
    assert _labels(answers).tolist() == [0.5, 1.0, 0.0]


def test_items_prompts_and_default_item_names():
    answers = labelers.oracle().label_pairs([1.0, 0.0], [0.0, 1.0], items_a=["x", "y"], items_b=["u", "v"],
                                            prompts=["p1", "p2"])
    assert [a.items for a in answers] == [["x", "u"], ["y", "v"]]
    assert [a.prompt for a in answers] == ["p1", "p2"]
    default = labelers.oracle().label_pairs([1.0], [0.0], prompts="shared")[0]
    assert default.items == ["0", "1"] and default.prompt == "shared"


def test_returns_discount_towards_the_start():
    gold = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert labelers._returns(gold, 0.5).tolist() == [0.25, 1.0]
    assert labelers._returns(gold, 1.0).tolist() == [1.0, 1.0]


# -------------------------------------------------------------------------------------
# Best of K
# -------------------------------------------------------------------------------------


def test_best_of_k_oracle_picks_the_argmax():
    gold = np.random.default_rng(8).normal(size=(500, 4))
    answers = labelers.oracle().label_best_of_k(gold)
    assert [a.choice for a in answers] == gold.argmax(axis=1).tolist()
    assert all(a.kind == "best_of_k" and a.items == ["0", "1", "2", "3"] for a in answers)


def test_best_of_k_stochastic_samples_softmax():
    n, returns = 20_000, np.array([0.0, 1.0, 2.0])
    answers = labelers.stochastic(beta=1.0, seed=9).label_best_of_k(np.tile(returns, (n, 1)))
    frequency = np.bincount([a.choice for a in answers], minlength=3) / n
    expected = softmax(returns)
    for f, p in zip(frequency, expected):
        assert abs(f - p) < _binomial_tolerance(p, n)


def test_best_of_k_mistake_picks_uniformly_among_the_others():
    n, k, eps = 20_000, 4, 0.2
    gold = np.tile([3.0, 2.0, 1.0, 0.0], (n, 1))
    choices = np.array([a.choice for a in labelers.mistake(eps=eps, seed=10).label_best_of_k(gold)])
    wrong_share = np.bincount(choices, minlength=k)[1:] / n
    assert abs(np.mean(choices != 0) - eps) < _binomial_tolerance(eps, n)
    for share in wrong_share:
        assert abs(share - eps / (k - 1)) < _binomial_tolerance(eps / (k - 1), n)


def test_best_of_k_ties_become_a_tied_best_ranking():
    answers = labelers.equal(0.5).label_best_of_k([[1.0, 1.3, 0.0], [2.0, 1.0, 0.0]])
    assert answers[0].kind == "ranking" and answers[0].ranks == [0, 0, None]
    assert answers[1].kind == "best_of_k" and answers[1].choice == 0
    exact = labelers.oracle().label_best_of_k([[4, 2, 4]])[0]  # rubric scores tied at the top
    assert exact.kind == "ranking" and exact.ranks == [0, None, 0]


def test_best_of_k_skip():
    answers = labelers.skip(threshold=1.0).label_best_of_k([[0.0, 1.0, 0.5], [0.0, 1.5, 0.5]])
    assert answers[0] is None and answers[1].choice == 1


# -------------------------------------------------------------------------------------
# Rankings
# -------------------------------------------------------------------------------------


def test_ranking_oracle_sorts_and_ties_equal_scores():
    gold = np.random.default_rng(11).integers(0, 4, size=(300, 5)).astype(float)  # many ties
    answers = labelers.oracle().label_rankings(gold)
    assert [a.ranks for a in answers] == [scores_to_ranks(row.tolist()) for row in gold]


def test_ranking_equal_threshold_groups_close_items():
    answers = labelers.equal(0.5).label_rankings([[3.0, 2.8, 1.0, 0.7, 0.0]])
    assert answers[0].ranks == [0, 0, 1, 1, 2]


def test_ranking_stochastic_is_plackett_luce():
    n, returns = 20_000, np.array([0.0, 1.0, 2.0])
    answers = labelers.stochastic(beta=1.0, seed=12).label_rankings(np.tile(returns, (n, 1)))
    strengths = np.exp(returns)
    p_full_order = strengths[2] / strengths.sum() * strengths[1] / (strengths[0] + strengths[1])
    frequency = np.mean([a.ranks == [2, 1, 0] for a in answers])
    assert abs(frequency - p_full_order) < _binomial_tolerance(p_full_order, n)
    top = np.mean([a.ranks[2] == 0 for a in answers])
    assert abs(top - softmax(returns)[2]) < _binomial_tolerance(softmax(returns)[2], n)


def test_ranking_mistake_swaps_one_adjacent_pair():
    n, eps = 10_000, 0.1
    gold = np.tile([4.0, 3.0, 2.0, 1.0, 0.0], (n, 1))
    answers = labelers.mistake(eps=eps, seed=13).label_rankings(gold)
    truth = [0, 1, 2, 3, 4]
    wrong = [a.ranks for a in answers if a.ranks != truth]
    assert abs(len(wrong) / n - eps) < _binomial_tolerance(eps, n)
    for ranks in wrong:  # exactly two items with neighbouring ranks changed places
        moved = [i for i in range(5) if ranks[i] != truth[i]]
        assert len(moved) == 2 and abs(truth[moved[0]] - truth[moved[1]]) == 1
        assert sorted(ranks) == truth


def test_ranking_skip_and_segments():
    segments = np.zeros((2, 3, 4))
    segments[1, 2, -1] = 5.0
    answers = labelers.skip(threshold=0.0).label_rankings(segments)
    assert answers[0] is None and answers[1].ranks == [1, 1, 0]


# -------------------------------------------------------------------------------------
# Determinism, factories and errors
# -------------------------------------------------------------------------------------


def test_same_seed_same_answers_and_different_seed_different_answers(random_pairs):
    gold_a, gold_b = random_pairs[0][:500], random_pairs[1][:500]
    first = _labels(labelers.stochastic(seed=1).label_pairs(gold_a, gold_b))
    again = _labels(labelers.stochastic(seed=1).label_pairs(gold_a, gold_b))
    other = _labels(labelers.stochastic(seed=2).label_pairs(gold_a, gold_b))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    gold = np.tile([0.0, 1.0, 2.0], (50, 1))
    assert ([a.ranks for a in labelers.stochastic(seed=4).label_rankings(gold)]
            == [a.ranks for a in labelers.stochastic(seed=4).label_rankings(gold)])


def test_make_teacher_builds_the_bpref_table():
    assert labelers.make_teacher("oracle") == labelers.Teacher(name="oracle")
    assert labelers.make_teacher("mistake", eps=0.2, seed=3) == labelers.Teacher(eps_mistake=0.2, seed=3, name="mistake")
    assert labelers.make_teacher("myopic").gamma == 0.9
    assert labelers.make_teacher("stochastic").beta == 1.0
    assert labelers.make_teacher("skip", threshold=1.5).skip_threshold == 1.5
    assert labelers.make_teacher("equal", threshold=0.3).equal_threshold == 0.3


def test_bad_names_and_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"unknown teacher 'noisy'.*'equal'.*'oracle'"):
        labelers.make_teacher("noisy")
    with pytest.raises(ValueError, match=r"does not take \['gamma'\]"):
        labelers.make_teacher("mistake", gamma=0.5)
    with pytest.raises(ValueError, match="threshold"):
        labelers.make_teacher("skip")
    for bad in (dict(beta=-1.0), dict(gamma=0.0), dict(gamma=1.5), dict(eps_mistake=1.5),
                dict(equal_threshold=-0.1), dict(skip_threshold=math.nan)):
        with pytest.raises(ValueError):
            labelers.Teacher(**bad)


def test_bad_gold_items_and_prompts_raise():
    teacher = labelers.oracle()
    with pytest.raises(ValueError, match="differ in shape"):
        teacher.label_pairs([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="shape"):
        teacher.label_best_of_k([1.0, 2.0])
    with pytest.raises(ValueError, match="K >= 2"):
        teacher.label_rankings([[1.0], [2.0]])
    with pytest.raises(ValueError, match="NaN"):
        teacher.label_pairs([math.nan], [1.0])
    with pytest.raises(ValueError, match="items_a and items_b"):
        teacher.label_pairs([1.0], [0.0], items_a=["x"])
    with pytest.raises(ValueError, match="prompts"):
        teacher.label_pairs([1.0, 0.0], [0.0, 1.0], prompts=["only one"])
    with pytest.raises(ValueError, match="items"):
        teacher.label_best_of_k([[1.0, 0.0]], items=[["a", "b", "c"]])


def test_bpref_threshold_applies_eps_once():
    # margin = mean(last 10 returns) * segment / max steps = 100 * 50 / 500 = 10; delta = 10 * 0.1
    returns = [0.0] * 5 + [100.0] * 10
    assert labelers.bpref_threshold(returns, segment_length=50, max_episode_steps=500, eps=0.1) == pytest.approx(1.0)
