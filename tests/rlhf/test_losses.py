"""Losses against hand-computed values and plain-loop references (gradients included)."""

import itertools
import math

import pytest
import torch

from rlhf.losses import (
    best_of_k_loss,
    bradley_terry_loss,
    center_rewards_penalty,
    pairwise_ranking_loss,
    plackett_luce_loss,
)



@pytest.fixture(autouse=True)
def float64_by_default():
    """Reference values are compared in float64; restore the default for other test files."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- plain-loop references
def bt_reference(a, b, label, margin=None, noise=0.0):
    d = a - b
    if margin is not None:
        d -= (2 * label - 1) * margin
    p = noise / 2 + (1 - noise) * sigmoid(d)
    q = noise / 2 + (1 - noise) * sigmoid(-d)
    return -(label * math.log(p) + (1 - label) * math.log(q))


def pairwise_reference(scores, ranks):
    """Loop over all item pairs of one prompt; unranked (None) lose to ranked, never compared together."""
    losses = []
    for i, j in itertools.combinations(range(len(scores)), 2):
        ri, rj = ranks[i], ranks[j]
        if ri is None and rj is None:
            continue
        ri = math.inf if ri is None else ri
        rj = math.inf if rj is None else rj
        label = 1.0 if ri < rj else 0.0 if ri > rj else 0.5
        losses.append(bt_reference(scores[i], scores[j], label))
    return sum(losses) / len(losses)


def plackett_luce_reference(scores, ranks):
    """Stage by stage: each tie group's stage is the mean of its members' log-probabilities."""
    remaining = set(range(len(scores)))
    total = 0.0
    ranked_levels = sorted({r for r in ranks if r is not None})
    for level in ranked_levels:
        group = [i for i, r in enumerate(ranks) if r == level]
        log_den = math.log(sum(math.exp(scores[j]) for j in remaining))
        total += sum(scores[i] - log_den for i in group) / len(group)
        remaining -= set(group)
    return -total


# ---------------------------------------------------------------- Bradley-Terry
def test_bt_hand_values():
    zero, one = torch.tensor([0.0]), torch.tensor([1.0])
    assert bradley_terry_loss(zero, zero).item() == pytest.approx(0.693147, abs=1e-6)
    assert bradley_terry_loss(one, zero).item() == pytest.approx(0.313262, abs=1e-6)
    # Label 0: B preferred, loss = -log sigmoid(-1) = 1.313262
    assert bradley_terry_loss(one, zero, 0.0).item() == pytest.approx(1.313262, abs=1e-6)
    # Tie at d = 0 is the minimum, log 2.
    assert bradley_terry_loss(zero, zero, 0.5).item() == pytest.approx(math.log(2))
    # Margin 1 on d = 1 behaves like d = 0.
    assert bradley_terry_loss(one, zero, 1.0, margin=1.0).item() == pytest.approx(math.log(2))
    # Christiano noise 0.1 at d = 0: P = 0.5; floor for a confident correct answer: -log 0.95.
    assert bradley_terry_loss(zero, zero, noise=0.1).item() == pytest.approx(math.log(2))
    assert bradley_terry_loss(torch.tensor([60.0]), zero, noise=0.1).item() == pytest.approx(-math.log(0.95), abs=1e-9)


def test_bt_matches_loop_on_random_inputs_with_gradients():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, generator=gen, requires_grad=True)
    b = torch.randn(64, generator=gen, requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 0.5, 0.3])[torch.randint(0, 4, (64,), generator=gen)]
    margins = torch.rand(64, generator=gen)
    for noise in (0.0, 0.1):
        loss = bradley_terry_loss(a, b, labels, margin=margins, noise=noise)
        expected = sum(bt_reference(a[i].item(), b[i].item(), labels[i].item(), margins[i].item(), noise)
                       for i in range(64)) / 64
        assert loss.item() == pytest.approx(expected, rel=1e-10)
    # Gradient against central finite differences of the loop reference.
    loss = bradley_terry_loss(a, b, labels, margin=margins, noise=0.1)
    (grad_a,) = torch.autograd.grad(loss, a)
    eps = 1e-6
    for i in (0, 7, 33):
        plus = bt_reference(a[i].item() + eps, b[i].item(), labels[i].item(), margins[i].item(), 0.1)
        minus = bt_reference(a[i].item() - eps, b[i].item(), labels[i].item(), margins[i].item(), 0.1)
        assert grad_a[i].item() == pytest.approx((plus - minus) / (2 * eps) / 64, rel=1e-5)


def test_bt_is_stable_for_huge_differences():
    big = torch.tensor([1e4], requires_grad=True)
    loss = bradley_terry_loss(torch.zeros(1), big)  # A labelled better but scored far lower
    loss.backward()
    assert loss.item() == pytest.approx(1e4)
    assert big.grad.item() == pytest.approx(1.0)


def test_bt_weights_and_reductions():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    per = bradley_terry_loss(a, b, reduction="none")
    assert per.tolist() == pytest.approx([0.313262, 0.693147], abs=1e-6)
    weighted = bradley_terry_loss(a, b, weight=torch.tensor([3.0, 1.0]))
    assert weighted.item() == pytest.approx((3 * 0.313262 + 0.693147) / 4, abs=1e-6)
    assert bradley_terry_loss(a, b, reduction="sum").item() == pytest.approx(1.006409, abs=1e-6)


def test_bt_bad_arguments():
    with pytest.raises(ValueError, match="label must be"):
        bradley_terry_loss(torch.zeros(1), torch.zeros(1), 1.5)
    with pytest.raises(ValueError, match="noise"):
        bradley_terry_loss(torch.zeros(1), torch.zeros(1), noise=1.0)
    with pytest.raises(ValueError, match="reduction"):
        bradley_terry_loss(torch.zeros(1), torch.zeros(1), reduction="avg")


# ---------------------------------------------------------------- best-of-K
def test_best_of_k_hand_value_and_loop():
    scores = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    expected = -2.0 + math.log(math.exp(1) + math.exp(2) + math.exp(3) + 1)
    assert best_of_k_loss(scores, torch.tensor([1])).item() == pytest.approx(expected)
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(16, 5, generator=gen)
    choice = torch.randint(0, 5, (16,), generator=gen)
    ref = sum(-scores[i, choice[i]].item() + math.log(sum(math.exp(s) for s in scores[i].tolist())) for i in range(16)) / 16
    assert best_of_k_loss(scores, choice).item() == pytest.approx(ref)


def test_best_of_k_mask_equals_unpadded():
    scores = torch.tensor([[0.3, -1.0, 2.0, 99.0], [0.5, 0.1, -0.2, 0.7]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    padded = best_of_k_loss(scores, torch.tensor([2, 3]), mask, reduction="none")
    assert padded[0].item() == pytest.approx(best_of_k_loss(scores[:1, :3], torch.tensor([2])).item())
    assert padded[1].item() == pytest.approx(best_of_k_loss(scores[1:], torch.tensor([3])).item())
    with pytest.raises(ValueError, match="masked"):
        best_of_k_loss(scores, torch.tensor([3, 0]), mask)


# ---------------------------------------------------------------- InstructGPT pairwise
def test_pairwise_ranking_hand_value():
    # K = 3, ranking 0 > 1 > 2 with scores (2, 1, 0): pair diffs 1, 2, 1.
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    expected = (2 * -math.log(sigmoid(1)) + -math.log(sigmoid(2))) / 3
    assert pairwise_ranking_loss(scores, torch.tensor([[0, 1, 2]])).item() == pytest.approx(expected)


def test_pairwise_ranking_matches_loop_with_ties_partial_and_masks():
    gen = torch.Generator().manual_seed(2)
    cases = [
        ([0.1, 0.5, -0.3, 1.2], [0, 1, 1, 2]),
        ([0.4, -0.2, 0.9, 0.0], [1, 0, None, None]),  # partial ranking
        ([1.0, 2.0, 3.0], [0, 0, 0]),  # all tied
    ]
    k = 4
    scores = torch.zeros(len(cases), k)
    ranks = torch.full((len(cases), k), -1)
    mask = torch.zeros(len(cases), k, dtype=torch.bool)
    for row, (s, r) in enumerate(cases):
        scores[row, : len(s)] = torch.tensor(s)
        ranks[row, : len(r)] = torch.tensor([-1 if x is None else x for x in r])
        mask[row, : len(s)] = True
    scores += 0 * torch.randn(scores.shape, generator=gen)
    scores.requires_grad_(True)
    per_row = pairwise_ranking_loss(scores, ranks, mask, reduction="none")
    for row, (s, r) in enumerate(cases):
        assert per_row[row].item() == pytest.approx(pairwise_reference(s, r), rel=1e-10)
    # Gradient of the prompt mean against finite differences of the loop reference.
    (grad,) = torch.autograd.grad(per_row.mean(), scores)
    s, r = cases[0]
    eps = 1e-6
    bumped = list(s)
    bumped[1] += eps
    plus = pairwise_reference(bumped, r)
    bumped[1] -= 2 * eps
    minus = pairwise_reference(bumped, r)
    assert grad[0, 1].item() == pytest.approx((plus - minus) / (2 * eps) / len(cases), rel=1e-5)


def test_pairwise_ranking_each_prompt_counts_once():
    # A K = 9 prompt (36 pairs) and a K = 2 prompt weigh the same in the batch mean.
    scores = torch.zeros(2, 9)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0] = True
    mask[1, :2] = True
    ranks = torch.arange(9).repeat(2, 1)
    loss = pairwise_ranking_loss(scores, ranks, mask)
    assert loss.item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------- Plackett-Luce
def test_plackett_luce_hand_value():
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    e = math.exp
    expected = -((2 - math.log(e(2) + e(1) + e(0))) + (1 - math.log(e(1) + e(0))))
    assert plackett_luce_loss(scores, torch.tensor([[0, 1, 2]])).item() == pytest.approx(expected)


def test_plackett_luce_matches_loop_with_ties_partial_and_masks():
    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        k = int(torch.randint(2, 7, (1,), generator=gen))
        s = torch.randn(k, generator=gen).tolist()
        levels = torch.randint(0, k, (k,), generator=gen).tolist()
        dense = {v: i for i, v in enumerate(sorted(set(levels)))}
        r = [dense[v] for v in levels]
        if trial % 3 == 0 and k > 2:  # make it partial: drop the worst level(s)
            top = max(r)
            r = [None if x == top else x for x in r]
        padded_scores = torch.tensor([s + [0.0] * (7 - k)])
        padded_ranks = torch.tensor([[(-1 if x is None else x) for x in r] + [5] * (7 - k)])
        mask = torch.tensor([[True] * k + [False] * (7 - k)])
        got = plackett_luce_loss(padded_scores, padded_ranks, mask).item()
        assert got == pytest.approx(plackett_luce_reference(s, r), rel=1e-10), (s, r)


# ---------------------------------------------------------------- K = 2 agreement
@pytest.mark.parametrize("label", [1.0, 0.0, 0.5])
def test_k2_losses_agree_with_bradley_terry(label):
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(32, 2, generator=gen)
    bt = bradley_terry_loss(scores[:, 0], scores[:, 1], label)
    ranks = {1.0: [0, 1], 0.0: [1, 0], 0.5: [0, 0]}[label]
    ranks = torch.tensor(ranks).repeat(32, 1)
    assert pairwise_ranking_loss(scores, ranks).item() == pytest.approx(bt.item(), rel=1e-12)
    assert plackett_luce_loss(scores, ranks).item() == pytest.approx(bt.item(), rel=1e-12)
    if label != 0.5:
        choice = torch.full((32,), 0 if label == 1.0 else 1)
        assert best_of_k_loss(scores, choice).item() == pytest.approx(bt.item(), rel=1e-12)


def test_kway_shape_and_mask_errors():
    with pytest.raises(ValueError, match="shape"):
        plackett_luce_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 unmasked"):
        best_of_k_loss(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([[True, False, False]]))
    with pytest.raises(ValueError, match="no compared pair"):
        pairwise_ranking_loss(torch.zeros(1, 3), torch.tensor([[-1, -1, -1]]))


def test_center_rewards_penalty_on_pairs_is_trls_term_by_hand():
    # TRL: mean over pairs of (r_chosen + r_rejected)^2, not the mean of r^2 over completions.
    pairs = [(1.0, -3.0), (2.0, 0.0), (0.5, 0.25)]
    expected = sum((a + b) ** 2 for a, b in pairs) / len(pairs)  # (4 + 4 + 0.5625) / 3
    scores = torch.tensor(pairs)
    assert center_rewards_penalty(scores).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(8.5625 / 3)
    assert expected != pytest.approx((scores**2).mean().item())  # the old, different objective
    chosen, rejected = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    trl_term = torch.mean((chosen + rejected) ** 2)  # trl RewardTrainer.compute_loss, verbatim
    assert center_rewards_penalty(torch.stack([chosen, rejected], dim=1)).item() == pytest.approx(
        trl_term.item(), rel=1e-12)
    # Order and labels play no part: a tie or a reversed pair is centred alike.
    assert center_rewards_penalty(scores.flip(1)).item() == pytest.approx(expected, rel=1e-12)


def test_center_rewards_penalty_kway_with_padding_and_weights_by_hand():
    scores = torch.tensor([[1.0, -3.0, 4.0], [2.0, 0.0, 5.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])  # row 2 is a pair; 5.0 is padding
    weight = torch.tensor([1.0, 3.0])
    per_row = []
    for row, keep in zip(scores.tolist(), mask.tolist()):
        items = [r for r, k in zip(row, keep) if k]
        per_row.append((2 * sum(items) / len(items)) ** 2)  # (2 * mean r)^2
    assert per_row == pytest.approx([16 / 9, 4.0])
    assert center_rewards_penalty(scores, mask, reduction="none").tolist() == pytest.approx(per_row)
    assert center_rewards_penalty(scores, mask).item() == pytest.approx((16 / 9 + 4) / 2)
    assert center_rewards_penalty(scores, mask, weight).item() == pytest.approx((16 / 9 + 3 * 4) / 4)
    # Zero exactly when the comparison's mean reward is zero, whatever the spread.
    assert center_rewards_penalty(torch.tensor([[3.0, -1.0, -2.0]])).item() == 0.0