"""Numeric tests for the critic-free estimators and loss aggregations of ppo.core: hand values,
plain-Python loops, and TRL 1.16's GRPO/RLOO formulas on the same inputs."""

import math
import statistics

import pytest
import torch
from trl.trainer.utils import nanstd

from ppo.core import (
    aggregate_loss,
    group_relative_advantages,
    kl_penalty,
    policy_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    whiten,
)


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=tol)


def right_padded_mask(lengths, T):
    return torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths])


SCORES = [1.0, 2.0, 4.0, 1.0,   0.5, 0.5, -1.0, 3.0]  # two prompts, G = 4


def test_grpo_hand_values():
    # group 1: mean 2, unbiased std sqrt(((1)+(0)+(4)+(1))/3) = sqrt(2)
    advantages = group_relative_advantages(torch.tensor(SCORES), 4, eps=0.0)
    assert close(advantages[:4], [-1 / math.sqrt(2), 0.0, 2 / math.sqrt(2), -1 / math.sqrt(2)])


def test_grpo_and_dr_grpo_vs_loop():
    expected_grpo, expected_dr = [], []
    for g in range(2):
        group = SCORES[4 * g:4 * g + 4]
        mean, std = statistics.mean(group), statistics.stdev(group)
        expected_grpo += [(r - mean) / (std + 1e-4) for r in group]
        expected_dr += [r - mean for r in group]
    scores = torch.tensor(SCORES, dtype=torch.float64)
    assert close(group_relative_advantages(scores, 4), expected_grpo, 1e-12)
    assert close(group_relative_advantages(scores, 4, scale=False), expected_dr, 1e-12)


def test_grpo_equals_trl_formula():
    """TRL 1.16 GRPOTrainer._generate_and_score_completions, scale_rewards='group':
    (r - group mean) / (nanstd(group) + 1e-4), nanstd from trl.trainer.utils."""
    rewards = torch.randn(12, generator=torch.Generator().manual_seed(0))
    grouped = rewards.view(-1, 3)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(3)
    std = nanstd(grouped, dim=1).repeat_interleave(3)
    assert close(group_relative_advantages(rewards, 3), (rewards - mean) / (std + 1e-4), 1e-6)
    assert close(group_relative_advantages(rewards, 3, scale=False), rewards - mean, 1e-6)


def test_rloo_hand_and_loop():
    advantages = rloo_advantages(torch.tensor(SCORES), 4)
    # first response: 1 - (2 + 4 + 1) / 3
    assert close(advantages[0], 1 - 7 / 3)
    expected = []
    for g in range(2):
        group = SCORES[4 * g:4 * g + 4]
        expected += [r - sum(group[j] for j in range(4) if j != i) / 3 for i, r in enumerate(group)]
    assert close(advantages, expected)
    # RLOO's advantage is G/(G-1) times Dr. GRPO's (both centre on the group mean)
    assert close(advantages, group_relative_advantages(torch.tensor(SCORES), 4, scale=False) * 4 / 3)


def test_groups_must_divide():
    with pytest.raises(ValueError, match="groups of 3"):
        rloo_advantages(torch.ones(8), 3)
    with pytest.raises(ValueError, match="G >= 2"):
        group_relative_advantages(torch.ones(4), 1)


def test_reinforce_pp_vs_loop():
    gen = torch.Generator().manual_seed(3)
    rewards = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([5, 2, 4], T=5)
    gamma = 0.9
    returns = []
    for i in range(3):
        n = int(mask[i].sum())
        for t in range(n):
            returns.append(sum(gamma ** (s - t) * rewards[i, s].item() for s in range(t, n)))
    mean, std = statistics.mean(returns), statistics.stdev(returns)
    advantages = reinforce_pp_advantages(rewards, mask, gamma=gamma)
    got = [advantages[i, t].item() for i in range(3) for t in range(int(mask[i].sum()))]
    assert close(got, [(g - mean) / math.sqrt(std**2 + 1e-8) for g in returns], 1e-9)
    assert (advantages[mask == 0] == 0).all()


def test_reinforce_pp_pooled_over_processes_equals_whole():
    gen = torch.Generator().manual_seed(4)
    rewards = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([6, 3, 5, 1], T=6)
    whole = reinforce_pp_advantages(rewards, mask)
    halves = [(rewards[:2], mask[:2]), (rewards[2:], mask[2:])]

    def moments(r, m):  # what each process contributes; the sum plays the all-reduce
        returns = torch.flip(torch.cumsum(torch.flip(torch.where(m.bool(), r, 0.0), [-1]), -1), [-1])
        valid = m.bool()
        return torch.stack([torch.where(valid, returns, 0.0).sum(), torch.where(valid, returns**2, 0.0).sum(),
                            valid.sum().to(r.dtype)])

    total = moments(*halves[0]) + moments(*halves[1])
    parts = [reinforce_pp_advantages(r, m, sum_across_processes=lambda _: total) for r, m in halves]
    assert close(torch.cat(parts), whole, 1e-9)


def test_aggregations_hand_values():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert close(aggregate_loss(loss, mask, "token_mean"), (1 + 2 + 3 + 4) / 4)
    assert close(aggregate_loss(loss, mask, "sequence_mean"), (2.0 + 4.0) / 2)
    assert close(aggregate_loss(loss, mask, "sequence_sum", normalizer=5), (6 + 4) / (2 * 5))
    with pytest.raises(ValueError, match="normalizer"):
        aggregate_loss(loss, mask, "sequence_sum")
    with pytest.raises(ValueError, match="token_mean, sequence_mean, sequence_sum"):
        aggregate_loss(loss, mask, "mean")


def test_aggregations_equal_trl_loss_types():
    """TRL 1.16 GRPOTrainer._compute_loss: grpo = ((l*m).sum(-1)/m.sum(-1).clamp(min=1)).mean();
    bnpo = (l*m).sum()/m.sum().clamp(min=1); dr_grpo = (l*m).sum()/(l.size(0)*max_completion_length)."""
    gen = torch.Generator().manual_seed(7)
    loss = torch.randn(4, 6, generator=gen)
    mask = right_padded_mask([6, 3, 5, 1], T=6)
    assert close(aggregate_loss(loss, mask, "sequence_mean"),
                 ((loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean())
    assert close(aggregate_loss(loss, mask, "token_mean"), (loss * mask).sum() / mask.sum().clamp(min=1.0))
    assert close(aggregate_loss(loss, mask, "sequence_sum", normalizer=8), (loss * mask).sum() / (4 * 8))


def test_policy_loss_sequence_advantages_and_kl_term_equal_trl_grpo():
    """The GRPO loss of TRL 1.16 (loss_type='grpo', beta > 0, token-level ratios), computed as
    TRL writes it, equals policy_loss with per-sequence advantages, the k3 KL as an extra
    per-token loss and sequence_mean aggregation."""
    gen = torch.Generator().manual_seed(11)
    old = torch.randn(4, 5, generator=gen, dtype=torch.float64) * 0.3 - 1
    new = old + torch.randn(4, 5, generator=gen, dtype=torch.float64) * 0.2
    ref = old + torch.randn(4, 5, generator=gen, dtype=torch.float64) * 0.2
    mask = right_padded_mask([5, 2, 4, 3], T=5)
    advantages = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    beta, eps = 0.04, 0.2
    # TRL's lines
    per_token_kl = torch.exp(ref - new) - (ref - new) - 1
    coef_1 = torch.exp(new - old)
    coef_2 = torch.clamp(coef_1, 1 - eps, 1 + eps)
    per_token_loss = -torch.min(coef_1 * advantages[:, None], coef_2 * advantages[:, None]) + beta * per_token_kl
    trl_loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    ours, _ = policy_loss(new, old, advantages, mask, clip_range=eps, aggregation="sequence_mean",
                          extra_token_loss=beta * kl_penalty(new, ref, "k3"))
    assert close(ours, trl_loss, 1e-12)


def test_policy_loss_default_is_unchanged_token_mean():
    gen = torch.Generator().manual_seed(2)
    old = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    new = old + 0.1
    adv = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([4, 1, 3], T=4)
    default, _ = policy_loss(new, old, adv, mask)
    explicit, _ = policy_loss(new, old, adv, mask, aggregation="token_mean")
    ratio = torch.exp(new - old)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    assert close(default, (per_token * mask).sum() / mask.sum(), 1e-12)
    assert close(default, explicit, 0)


def test_whiten_is_what_reinforce_pp_normalises_with():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    mask = torch.ones(1, 3)
    returns = torch.tensor([[3.0, 2.0, 2.0]])
    assert close(reinforce_pp_advantages(rewards, mask), whiten(returns, mask))
