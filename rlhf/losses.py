"""Preference losses on score tensors, shared by text reward models and robot segment rewards.

Equation numbers refer to chapters 14-15 of the seed text (`002_ffde984f27a57f88.txt`).
All losses are computed in log space (`logsigmoid`, `logsumexp`) so that large score
differences neither overflow nor lose their gradient. K-way losses take `scores` of shape
``(batch, K)`` and an optional boolean ``mask`` of the same shape (False = padding, for a
batch mixing different K). Every loss returns the (weighted) batch mean unless
``reduction="none"`` (one value per row) or ``"sum"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_row: torch.Tensor, weight: torch.Tensor | None, reduction: str) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        weight = torch.as_tensor(weight, dtype=per_row.dtype, device=per_row.device)
        if reduction == "none":
            return per_row * weight
        if reduction == "sum":
            return (per_row * weight).sum()
        return (per_row * weight).sum() / weight.sum().clamp_min(torch.finfo(per_row.dtype).tiny)
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.mean()


def _log_prob_noisy(diff: torch.Tensor, noise: float) -> torch.Tensor:
    """log P(A > B) with Christiano's random-answer noise: P = noise/2 + (1 - noise) * sigmoid(diff)."""
    if noise == 0.0:
        return F.logsigmoid(diff)
    return torch.logaddexp(torch.full_like(diff, math.log(noise / 2)), math.log1p(-noise) + F.logsigmoid(diff))


def bradley_terry_loss(
    scores_a: torch.Tensor,
    scores_b: torch.Tensor,
    label: torch.Tensor | float = 1.0,
    margin: torch.Tensor | float | None = None,
    noise: float = 0.0,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Bradley-Terry cross-entropy for pairs (eq. 14.5-14.7; eq. 15.4 for LM outputs).

    ``label`` is mu = P(A preferred): 1 (A better), 0 (B better), 0.5 (tie), or any soft
    value in [0, 1]. With d = r_A - r_B:

        loss = -[mu * log P(A > B) + (1 - mu) * log P(B > A)],   P(A > B) = sigmoid(d)

    ``margin`` m (TRL's margin column, Llama-2 style) asks the preferred item to win by m:
    d is replaced by d - (2 mu - 1) m, so it applies in full to strict pairs and not at all
    to ties. ``noise`` is Christiano et al.'s assumed probability of a uniformly random
    answer: P(A > B) = noise/2 + (1 - noise) * sigmoid(d).
    """
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    diff = scores_a - scores_b
    label = torch.as_tensor(label, dtype=diff.dtype, device=diff.device)
    if ((label < 0) | (label > 1)).any():
        raise ValueError("label must be P(A preferred) in [0, 1] (1 = A better, 0 = B better, 0.5 = tie)")
    if margin is not None:
        diff = diff - (2 * label - 1) * torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
    per_pair = -(label * _log_prob_noisy(diff, noise) + (1 - label) * _log_prob_noisy(-diff, noise))
    return _reduce(per_pair, weight, reduction)


def _check_kway(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must have shape (batch, K) with K >= 2, got {tuple(scores.shape)}")
    if mask is None:
        return torch.ones_like(scores, dtype=torch.bool)
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match scores {tuple(scores.shape)}")
    mask = mask.bool()
    if (mask.sum(dim=1) < 2).any():
        raise ValueError("every row needs at least 2 unmasked items")
    return mask


def best_of_k_loss(
    scores: torch.Tensor,
    choice: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Ziegler et al.'s best-of-K loss (eq. 15.5): softmax over the K items of one prompt,
    cross-entropy on the chosen index: -r_best + logsumexp_j r_j over unmasked j."""
    mask = _check_kway(scores, mask)
    choice = torch.as_tensor(choice, device=scores.device).long()
    if not mask.gather(1, choice[:, None]).all():
        raise ValueError("choice points at a masked (padding) item")
    masked = scores.masked_fill(~mask, float("-inf"))
    per_row = torch.logsumexp(masked, dim=1) - scores.gather(1, choice[:, None]).squeeze(1)
    return _reduce(per_row, weight, reduction)


def _unranked(ranks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Items with a negative rank are unranked (a partial ranking); padding is not."""
    return (ranks < 0) & mask


def pairwise_ranking_loss(
    scores: torch.Tensor,
    ranks: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """InstructGPT's loss over all ranked pairs of one prompt (eq. 15.6).

    ``ranks``: 0 is best, equal ranks are ties (entering as 0.5 labels), a negative rank
    marks an unranked item of a partial ranking (it loses to every ranked item; two
    unranked items are not compared). The loss of a prompt is the mean over its compared
    pairs, so each prompt counts once however large K is; the batch mean is over prompts.
    """
    mask = _check_kway(scores, mask)
    ranks = torch.as_tensor(ranks, device=scores.device)
    unranked = _unranked(ranks, mask)
    # Unranked items rank below everything ranked: give them a rank past the largest one.
    effective = torch.where(unranked, torch.full_like(ranks, ranks.max().item() + 1), ranks)
    # label[b, i, j] = P(i preferred over j): 1 if i ranks better, 0 if worse, 0.5 if tied.
    label = (effective[:, :, None] < effective[:, None, :]).to(scores.dtype)
    label = label + 0.5 * (effective[:, :, None] == effective[:, None, :]).to(scores.dtype)
    upper = torch.triu(torch.ones(scores.shape[1], scores.shape[1], dtype=torch.bool, device=scores.device), 1)
    compared = upper & mask[:, :, None] & mask[:, None, :] & ~(unranked[:, :, None] & unranked[:, None, :])
    n_pairs = compared.sum(dim=(1, 2))
    if (n_pairs == 0).any():
        raise ValueError("a row has no compared pair (all its items are unranked or masked)")
    per_pair = bradley_terry_loss(scores[:, :, None], scores[:, None, :], label, reduction="none")
    per_row = (per_pair * compared).sum(dim=(1, 2)) / n_pairs
    return _reduce(per_row, weight, reduction)


def plackett_luce_loss(
    scores: torch.Tensor,
    ranks: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Listwise Plackett-Luce negative log-likelihood of a ranking.

    The ranking is read as successive choices: the best item is chosen among all, the next
    among the rest, and so on: log P = sum_stages [r_chosen - logsumexp_{j remaining} r_j].
    Best-of-K (eq. 15.5) is its first stage alone; with K = 2 it is Bradley-Terry (eq. 15.4).

    Ties (documented choice): a group of g tied items is one stage whose log-probability
    is the mean of its members' first-choice log-probabilities among the remaining items
    (the geometric mean of their probabilities); the whole group then leaves the pool. For
    K = 2 this is exactly the Bradley-Terry tie loss with label 0.5. Unranked items
    (negative rank, a partial ranking) stay in every denominator and are never chosen,
    which is the likelihood of a top-k ranking.
    """
    mask = _check_kway(scores, mask)
    ranks = torch.as_tensor(ranks, device=scores.device)
    unranked = _unranked(ranks, mask)
    ranked = mask & ~unranked
    n_levels = int(ranks.max().item()) + 1
    per_row = torch.zeros(scores.shape[0], dtype=scores.dtype, device=scores.device)
    for level in range(n_levels):
        group = ranked & (ranks == level)
        remaining = mask & ~(ranked & (ranks < level))  # this level, worse levels, unranked
        group_size = group.sum(dim=1)
        active = group_size > 0  # (a lone last item contributes r - r = 0 by itself)
        log_denominator = torch.logsumexp(scores.masked_fill(~remaining, float("-inf")), dim=1)
        mean_chosen = (scores * group).sum(dim=1) / group_size.clamp_min(1)
        per_row = per_row - torch.where(active, mean_chosen - log_denominator, torch.zeros_like(per_row))
    return _reduce(per_row, weight, reduction)


def center_rewards_penalty(
    scores: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Reward centering (Eisenstein et al. 2023, "Helping or Herding?", arXiv 2312.09244,
    eq. 2), to be multiplied by ``center_rewards_coefficient`` and added to the loss.

    On pairs it is exactly TRL's ``RewardTrainer.compute_loss`` term: (r_A + r_B)^2 per
    pair, mean over the batch. A comparison of K items generalises it as

        (2 * mean_i r_i)^2 = (2/K * sum_i r_i)^2     over its K unmasked items,

    which is (r_A + r_B)^2 at K = 2 and, like the paper's term, is zero exactly when the
    comparison's mean reward is zero: it pins the offset the preference loss leaves free
    and nothing else. The mean over the C(K, 2) pairs of (r_i + r_j)^2 was not chosen: it
    equals [(K - 2) sum r_i^2 + (sum r_i)^2] / C(K, 2), whose first term (K >= 3) shrinks
    every reward towards 0, fighting the ranking loss's scale. Ranks play no part: tied
    and unranked items (a partial ranking) count like any other item; padding does not.
    The batch mean is weighted by ``weight`` as the preference loss is, which is TRL's
    plain mean with a comparison of weight w repeated w times.
    """
    mask = _check_kway(scores, mask)
    n_items = mask.sum(dim=1).to(scores.dtype)
    per_row = (2 * scores.masked_fill(~mask, 0.0).sum(dim=1) / n_items) ** 2
    return _reduce(per_row, weight, reduction)
