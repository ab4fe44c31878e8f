"""Numeric tests for ppo.core: hand-computed values and plain-Python-loop references."""

import math

import pytest
import torch

from ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    gaussian_entropy,
    gaussian_log_prob,
    kl_penalty,
    masked_entropy,
    masked_mean,
    masked_var,
    policy_loss,
    pretraining_nll,
    sequence_kl,
    token_logprobs,
    token_logprobs_and_entropy,
    token_rewards,
    value_loss,
    whiten,
)

LOG2 = math.log(2.0)


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=tol)


def right_padded_mask(lengths, T):
    return torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths])


# ---------------------------------------------------------------------------
# KL estimators
# ---------------------------------------------------------------------------


def test_kl_estimators_hand_example():
    # p = 0.5, q = 0.25: l = log 2; r = q/p = 0.5.
    logp = torch.tensor([math.log(0.5)])
    logq = torch.tensor([math.log(0.25)])
    assert close(kl_penalty(logp, logq, "k1"), [LOG2])
    assert close(kl_penalty(logp, logq, "k2"), [0.5 * LOG2**2])  # 0.240227
    assert close(kl_penalty(logp, logq, "k3"), [(0.5 - 1) + LOG2])  # 0.193147
    # Identical log-probs (e.g. the shared pad value) give exactly 0 for every estimator.
    for estimator in ("k1", "k2", "k3"):
        assert kl_penalty(logp, logp, estimator).item() == 0.0


def test_kl_estimators_random_vs_loop():
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    logq = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    k1, k2, k3 = (kl_penalty(logp, logq, e) for e in ("k1", "k2", "k3"))
    for i in range(3):
        for t in range(5):
            lp, lq = logp[i, t].item(), logq[i, t].item()
            r = math.exp(lq - lp)
            assert math.isclose(k1[i, t].item(), lp - lq, abs_tol=1e-12)
            assert math.isclose(k2[i, t].item(), 0.5 * (lp - lq) ** 2, abs_tol=1e-12)
            assert math.isclose(k3[i, t].item(), (r - 1) - math.log(r), rel_tol=1e-12, abs_tol=1e-12)
    assert (k3 >= 0).all() and (k2 >= 0).all()
    assert (k1 < 0).any()  # single-token k1 can be negative


def test_k1_and_k3_are_unbiased_in_exact_expectation():
    # Exact expectation over a categorical p (no sampling noise).
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    true_kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    for estimator in ("k1", "k3"):
        expected = (p * kl_penalty(p.log(), q.log(), estimator)).sum().item()
        assert math.isclose(expected, true_kl, rel_tol=1e-12)
    k2_expected = (p * kl_penalty(p.log(), q.log(), "k2")).sum().item()
    assert not math.isclose(k2_expected, true_kl, rel_tol=1e-3)  # k2 is biased


def test_token_logprobs_vs_loop():
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    tokens = torch.tensor([[0, 4, 2], [3, 3, 1]])
    for temperature in (1.0, 0.7):
        got = token_logprobs(logits, tokens, temperature)
        for i in range(2):
            for t in range(3):
                row = [v / temperature for v in logits[i, t].tolist()]
                expected = row[tokens[i, t]] - math.log(sum(math.exp(v) for v in row))
                assert close(got[i, t], expected, 1e-6)  # computed in float32, as the trainer does
    assert got.dtype == torch.float32


def test_token_logprobs_and_entropy_vs_loop():
    gen = torch.Generator().manual_seed(13)
    logits = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64).requires_grad_()
    tokens = torch.tensor([[1, 4, 0], [2, 2, 3]])
    logprobs, entropy = token_logprobs_and_entropy(logits, tokens, 0.7)
    for i in range(2):
        for t in range(3):
            row = [v / 0.7 for v in logits[i, t].tolist()]
            log_z = math.log(sum(math.exp(v) for v in row))
            assert close(logprobs[i, t], row[tokens[i, t]] - log_z, 1e-6)
            assert close(entropy[i, t], -sum(math.exp(v - log_z) * (v - log_z) for v in row), 1e-5)
    # the same numbers as the two functions apart, bit for bit
    assert torch.equal(logprobs, token_logprobs(logits, tokens, 0.7))
    assert torch.equal(entropy, entropy_from_logits(logits.detach().float() / 0.7))
    assert logprobs.requires_grad and not entropy.requires_grad


def test_sequence_kl_vs_loop():
    gen = torch.Generator().manual_seed(12)
    logprobs = -torch.rand(3, 4, generator=gen, dtype=torch.float64)
    ref_logprobs = -torch.rand(3, 4, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([4, 1, 2], T=4)
    logprobs[1, 3] = float("inf")  # padding must not leak
    expected = [sum(logprobs[i, t].item() - ref_logprobs[i, t].item() for t in range(4) if mask[i, t])
                for i in range(3)]
    assert close(sequence_kl(logprobs, ref_logprobs, mask), expected, 1e-12)
    assert close(sequence_kl(logprobs[:1], ref_logprobs[:1]), expected[:1], 1e-12)  # no mask: every token


def test_pretraining_nll_vs_loop():
    gen = torch.Generator().manual_seed(13)
    logits = torch.randn(2, 4, 6, generator=gen)
    input_ids = torch.tensor([[1, 5, 0, 2], [4, 4, 3, 0]])
    terms = []
    for i in range(2):
        for t in range(3):  # logit t predicts token t + 1; the last logit predicts nothing
            row = logits[i, t].tolist()
            terms.append(-(row[input_ids[i, t + 1]] - math.log(sum(math.exp(v) for v in row))))
    assert close(pretraining_nll(logits, input_ids), sum(terms) / len(terms), 1e-5)


def test_kl_clamp_float_and_pair():
    logp = torch.tensor([0.0, 0.0, 0.0])
    logq = torch.tensor([-20.0, 1.0, 20.0])  # l = 20, -1, -20
    assert close(kl_penalty(logp, logq, "k1", clamp=10.0), [10.0, -1.0, -10.0])
    assert close(kl_penalty(logp, logq, "k1", clamp=(-0.5, 5.0)), [5.0, -0.5, -0.5])
    # k3 at l = -20 is e^20 - 21: huge, clamped to 10.
    assert close(kl_penalty(logp, logq, "k3", clamp=10.0)[2], 10.0)


def test_kl_unknown_estimator_names_valid_ones():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")


# ---------------------------------------------------------------------------
# Per-token rewards and score placement (eq. 15.8)
# ---------------------------------------------------------------------------


def reference_token_rewards(scores, kl, mask, kl_coef, score_clip=None, missing_stop_penalty=None, has_stop=None):
    rewards = []
    for i in range(len(scores)):
        row_mask = mask[i].tolist()
        last = max(t for t, m in enumerate(row_mask) if m)
        score = scores[i].item()
        if score_clip is not None:
            score = min(max(score, -score_clip), score_clip)
        if missing_stop_penalty is not None and not has_stop[i]:
            score = missing_stop_penalty
        row = []
        for t, m in enumerate(row_mask):
            r = -kl_coef * kl[i, t].item() if m else 0.0
            if t == last:
                r += score
            row.append(r)
        rewards.append(row)
    return torch.tensor(rewards)


def test_token_rewards_equal_lengths_hand():
    scores = torch.tensor([1.0, -2.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.1, 0.5]])
    mask = torch.ones(2, 3)
    rewards, non_score = token_rewards(scores, kl, mask, kl_coef=0.5)
    assert close(rewards, [[-0.05, -0.1, -0.15 + 1.0], [0.0, 0.05, -0.25 - 2.0]])
    assert close(non_score, [[-0.05, -0.1, -0.15], [0.0, 0.05, -0.25]])


def test_token_rewards_right_padded_and_single_token_rows():
    scores = torch.tensor([1.0, 2.0, 3.0])
    # Garbage KL at pads must not leak into the rewards.
    kl = torch.tensor([[0.2, 0.2, 0.2, 9.0], [0.4, 9.0, 9.0, 9.0], [0.1, 0.1, 0.1, 0.1]])
    mask = right_padded_mask([3, 1, 4], T=4)
    rewards, _ = token_rewards(scores, kl, mask, kl_coef=0.1)
    expected = [
        [-0.02, -0.02, -0.02 + 1.0, 0.0],  # stop token at index 2, not on the pad at 3
        [-0.04 + 2.0, 0.0, 0.0, 0.0],  # single generated token carries score and KL
        [-0.01, -0.01, -0.01, -0.01 + 3.0],  # fills the whole length
    ]
    assert close(rewards, expected)


def test_token_rewards_left_padded_responses_also_work():
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])
    rewards, _ = token_rewards(torch.tensor([5.0, 7.0]), torch.zeros(2, 4), mask, kl_coef=0.1)
    assert close(rewards, [[0, 0, 0, 5.0], [0, 0, 0, 7.0]])


def test_token_rewards_missing_stop_replaces_score():
    scores = torch.tensor([3.0, 3.0])
    kl = torch.full((2, 3), 0.5)
    mask = right_padded_mask([2, 3], T=3)
    has_stop = torch.tensor([True, False])  # row 1 hit the length limit
    rewards, _ = token_rewards(scores, kl, mask, kl_coef=0.2, missing_stop_penalty=-1.0, has_stop=has_stop)
    assert close(rewards, [[-0.1, -0.1 + 3.0, 0.0], [-0.1, -0.1, -0.1 - 1.0]])
    with pytest.raises(ValueError, match="has_stop"):
        token_rewards(scores, kl, mask, kl_coef=0.2, missing_stop_penalty=-1.0)


def test_token_rewards_score_clip_then_penalty():
    scores = torch.tensor([12.0, -7.0, 0.5, 100.0])
    mask = torch.ones(4, 2)
    has_stop = torch.tensor([True, True, True, False])
    rewards, _ = token_rewards(
        scores, torch.zeros(4, 2), mask, kl_coef=0.1, score_clip=5.0, missing_stop_penalty=-1.0, has_stop=has_stop
    )
    assert close(rewards[:, -1], [5.0, -5.0, 0.5, -1.0])  # penalty is exact, not clipped
    assert close(rewards[:, 0], [0.0, 0.0, 0.0, 0.0])


def test_token_rewards_random_vs_loop():
    gen = torch.Generator().manual_seed(1)
    lengths = [1, 4, 6, 2, 6]
    mask = right_padded_mask(lengths, T=6)
    scores = torch.randn(5, generator=gen) * 4
    kl = torch.randn(5, 6, generator=gen)
    has_stop = torch.tensor([True, False, True, True, False])
    kwargs = dict(kl_coef=0.07, score_clip=3.0, missing_stop_penalty=-0.5)
    rewards, non_score = token_rewards(scores, kl, mask, has_stop=has_stop, **kwargs)
    assert close(rewards, reference_token_rewards(scores, kl, mask, has_stop=has_stop, **kwargs))
    assert close(non_score, -0.07 * kl * mask)


def test_token_rewards_empty_row_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        token_rewards(torch.zeros(2), torch.zeros(2, 3), right_padded_mask([2, 0], T=3), kl_coef=0.1)


# ---------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------


def reference_gae(rewards, values, mask, gamma, lam, bootstrap=None):
    """Plain backward loop over the real steps of each row."""
    advantages = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        steps = [t for t in range(rewards.shape[1]) if mask[i, t]]
        next_value = 0.0 if bootstrap is None else bootstrap[i].item()
        next_advantage = 0.0
        for t in reversed(steps):
            delta = rewards[i, t].item() + gamma * next_value - values[i, t].item()
            next_advantage = delta + gamma * lam * next_advantage
            next_value = values[i, t].item()
            advantages[i, t] = next_advantage
    return advantages, (advantages + values) * mask


def test_gae_hand_three_tokens():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.3]])
    advantages, returns = compute_gae(rewards, values, gamma=1.0, lam=0.5)
    # delta = [-0.1, -0.1, 0.7]; A2 = 0.7, A1 = -0.1 + 0.5*0.7, A0 = -0.1 + 0.5*0.25
    assert close(advantages, [[0.025, 0.25, 0.7]])
    assert close(returns, [[0.525, 0.65, 1.0]])


def test_gae_lambda_one_gives_reward_to_go():
    # lam = 1: returns = sum_k gamma^(k-t) r_k, the reward-to-go of eq. 15.10/15.11.
    rewards = torch.tensor([[-0.1, -0.2, 2.0]], dtype=torch.float64)
    values = torch.tensor([[0.3, -0.7, 1.1]], dtype=torch.float64)
    _, returns = compute_gae(rewards, values, gamma=1.0, lam=1.0)
    assert close(returns, [[1.7, 1.8, 2.0]])
    _, returns = compute_gae(rewards, values, gamma=0.5, lam=1.0)
    assert close(returns, [[-0.1 - 0.1 + 0.5, -0.2 + 1.0, 2.0]])


def test_gae_random_masked_vs_loop():
    gen = torch.Generator().manual_seed(2)
    mask = right_padded_mask([5, 1, 3, 7], T=7)
    rewards = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    values = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    for gamma, lam in [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0)]:
        advantages, returns = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
        ref_adv, ref_ret = reference_gae(rewards, values, mask, gamma, lam)
        assert close(advantages, ref_adv, 1e-10)
        assert close(returns, ref_ret, 1e-10)
        assert (advantages[mask == 0] == 0).all() and (returns[mask == 0] == 0).all()


def test_gae_pad_values_do_not_matter():
    mask = right_padded_mask([2, 3], T=4)
    rewards = torch.tensor([[0.0, 1.0, 5.0, 5.0], [0.0, 0.0, 1.0, 5.0]])
    values = torch.tensor([[0.2, 0.1, 0.0, 0.0], [0.3, 0.2, 0.1, 0.0]])
    garbage = torch.where(mask.bool(), values, torch.full_like(values, 99.0))
    garbage_rewards = torch.where(mask.bool(), rewards, torch.full_like(rewards, -99.0))
    a1, r1 = compute_gae(rewards, values, mask)
    a2, r2 = compute_gae(garbage_rewards, garbage, mask)
    assert torch.equal(a1, a2) and torch.equal(r1, r2)


def test_gae_continuous_control_shapes_and_bootstrap():
    gen = torch.Generator().manual_seed(3)
    rewards = torch.randn(3, 6, generator=gen, dtype=torch.float64)  # (num_envs, T)
    values = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    bootstrap = torch.randn(3, generator=gen, dtype=torch.float64)
    ones = torch.ones(3, 6)
    advantages, returns = compute_gae(rewards, values, None, gamma=0.99, lam=0.95, bootstrap_value=bootstrap)
    ref_adv, ref_ret = reference_gae(rewards, values, ones, 0.99, 0.95, bootstrap)
    assert close(advantages, ref_adv, 1e-10) and close(returns, ref_ret, 1e-10)
    # Flat (T,) trajectory gives the same as its row.
    flat_adv, flat_ret = compute_gae(rewards[1], values[1], gamma=0.99, lam=0.95, bootstrap_value=bootstrap[1])
    assert close(flat_adv, ref_adv[1], 1e-10) and close(flat_ret, ref_ret[1], 1e-10)


def test_gae_outputs_carry_no_grad():
    values = torch.zeros(1, 3, requires_grad=True)
    advantages, returns = compute_gae(torch.ones(1, 3), values)
    assert not advantages.requires_grad and not returns.requires_grad


# ---------------------------------------------------------------------------
# Masked statistics and whitening
# ---------------------------------------------------------------------------


def test_masked_mean_and_var_vs_loop():
    x = torch.tensor([[1.0, 2.0, float("inf")], [4.0, float("nan"), 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    kept = [1.0, 2.0, 4.0, 0.0]
    mean = sum(kept) / 4
    assert close(masked_mean(x, mask), mean)  # inf/NaN in pads do not leak
    assert close(masked_var(x, mask), sum((v - mean) ** 2 for v in kept) / 3)
    assert close(masked_var(x, mask, unbiased=False), sum((v - mean) ** 2 for v in kept) / 4)
    assert close(masked_mean(x, mask, dim=1), [1.5, 2.0])
    assert close(masked_mean(torch.tensor([1.0, 3.0])), 2.0)


def test_whiten_masked_entries():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64) * 3 + 2
    mask = right_padded_mask([6, 2, 4, 1], T=6).to(torch.float64)
    white = whiten(x, mask)
    kept = white[mask.bool()]
    assert abs(kept.mean().item()) < 1e-10
    assert math.isclose(kept.std(unbiased=True).item(), 1.0, rel_tol=1e-6)
    assert (white[mask == 0] == 0).all()
    # Against a loop over the kept entries.
    values = x[mask.bool()].tolist()
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    assert close(kept, [(v - mean) / std for v in values], 1e-6)


def test_whiten_shift_mean_false_keeps_mean():
    x = torch.tensor([1.0, 2.0, 3.0, 10.0, 100.0])
    mask = torch.tensor([1, 1, 1, 1, 0])
    white = whiten(x, mask, shift_mean=False)
    kept = white[:4]
    assert close(kept.mean(), 4.0, 1e-5)  # mean of [1, 2, 3, 10]
    assert close(kept.std(unbiased=True), 1.0, 1e-5)


def test_whiten_pooled_over_processes_equals_whitening_the_whole():
    """Two 'processes' each hold some rows; with their moments summed, each shard is
    whitened with the statistics of all kept entries (plain loop over both shards)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64) * 2 - 1
    mask = right_padded_mask([4, 1, 3, 2, 4], T=4).to(torch.float64)
    shards = [(x[:2], mask[:2]), (x[2:], mask[2:])]
    local_moments = []
    for xs, ms in shards:  # an identity "all-reduce" records each shard's (sum, sum of squares, count)
        whiten(xs, ms, sum_across_processes=lambda m: local_moments.append(m) or m)
    pooled = local_moments[0] + local_moments[1]
    values = x[mask.bool()].tolist()
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    for shift_mean in (True, False):
        white = torch.cat([whiten(xs, ms, shift_mean=shift_mean, sum_across_processes=lambda m: pooled)
                           for xs, ms in shards])
        expected = [[((x[i, t].item() - mean) / std + (0.0 if shift_mean else mean)) if mask[i, t] else 0.0
                     for t in range(4)] for i in range(5)]
        assert close(white, expected, 1e-9)
    # one process: the pooled formula agrees with the two-pass one
    identity = whiten(x, mask, sum_across_processes=lambda m: m)
    assert close(identity, whiten(x, mask), 1e-9)


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0, 50.0])
    mask = torch.tensor([1, 1, 1, 1, 0])
    assert close(explained_variance(returns, returns, mask), 1.0)
    assert close(explained_variance(torch.full((5,), 2.5), returns, mask), 0.0)
    values = torch.tensor([1.5, 1.5, 3.5, 3.5, 0.0])
    # residuals [-0.5, 0.5, -0.5, 0.5]: var 0.25; var(returns) 1.25 -> 1 - 0.2
    assert close(explained_variance(values, returns, mask), 0.8)
    assert math.isnan(explained_variance(values, torch.ones(5)).item())


# ---------------------------------------------------------------------------
# PPO-Clip losses
# ---------------------------------------------------------------------------


def test_policy_loss_hand_values():
    ratios = torch.tensor([1.5, 0.5, 0.5, 1.5, 7.0])
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0, 3.0])
    mask = torch.tensor([1, 1, 1, 1, 0])  # last token is padding
    old_logprobs = torch.full((5,), -1.0)
    loss, stats = policy_loss(old_logprobs + ratios.log(), old_logprobs, advantages, mask, clip_range=0.2)
    # per token: -min(rA, clip(r)A) = -1.2 (clipped), -0.5, +0.8 (clipped), +1.5
    assert close(loss, (-1.2 - 0.5 + 0.8 + 1.5) / 4)
    assert close(stats["clip_fraction"], 0.5)
    k3 = [(r - 1) - math.log(r) for r in [1.5, 0.5, 0.5, 1.5]]
    assert close(stats["approx_kl"], sum(k3) / 4)


def test_policy_loss_random_vs_loop():
    gen = torch.Generator().manual_seed(5)
    logprobs = torch.randn(3, 5, generator=gen, dtype=torch.float64) * 0.3 - 1
    old_logprobs = logprobs + torch.randn(3, 5, generator=gen, dtype=torch.float64) * 0.3
    advantages = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([5, 2, 4], T=5)
    terms, clipped = [], []
    for i in range(3):
        for t in range(5):
            if mask[i, t]:
                r = math.exp(logprobs[i, t].item() - old_logprobs[i, t].item())
                a = advantages[i, t].item()
                terms.append(-min(r * a, min(max(r, 0.8), 1.2) * a))
                clipped.append(-min(max(r, 0.8), 1.2) * a > -r * a)
    loss, stats = policy_loss(logprobs, old_logprobs, advantages, mask)
    assert close(loss, sum(terms) / len(terms), 1e-12)
    assert close(stats["clip_fraction"], sum(clipped) / len(clipped), 1e-12)
    assert 0 < stats["clip_fraction"] < 1


def test_policy_loss_gradients():
    old_logprobs = torch.tensor([-1.0, -1.0, -2.0, -0.5], dtype=torch.float64)
    advantages = torch.tensor([1.0, -2.0, 0.5, 1.0], dtype=torch.float64)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    # ratios 1.05, 0.9, 1.5: the first two are inside the clip range, the third is clipped (A > 0).
    logprobs = (old_logprobs + torch.tensor([1.05, 0.9, 1.5, 1.0], dtype=torch.float64).log()).requires_grad_()
    loss, _ = policy_loss(logprobs, old_logprobs, advantages, mask)
    (grad,) = torch.autograd.grad(loss, logprobs)
    # d/dlogp of -r*A/N is -r*A/N; clipped and padded tokens get 0.
    assert close(grad, [-1.05 * 1.0 / 3, 0.9 * 2.0 / 3, 0.0, 0.0], 1e-12)
    assert torch.autograd.gradcheck(lambda lp: policy_loss(lp, old_logprobs, advantages, mask)[0], (logprobs,))


def test_value_loss_hand_values():
    values = torch.tensor([1.0, 1.0, 0.55, 9.0])
    old_values = torch.tensor([0.5, 0.5, 0.5, 0.0])
    returns = torch.tensor([0.0, 2.0, 0.6, 0.0])
    mask = torch.tensor([1, 1, 1, 0])
    loss, stats = value_loss(values, old_values, returns, mask, clip_range_value=0.2)
    # token 0: max(1, 0.7^2) = 1; token 1: max(1, (0.7-2)^2 = 1.69); token 2: inside range, 0.05^2
    assert close(loss, 0.5 * (1.0 + 1.69 + 0.0025) / 3)
    assert close(stats["value_clip_fraction"], 1 / 3)
    assert close(stats["value_error"], (1.0 + 1.0 + 0.0025) / 3)
    unclipped, _ = value_loss(values, old_values, returns, mask, clip_range_value=None)
    assert close(unclipped, 0.5 * (1.0 + 1.0 + 0.0025) / 3)


def test_value_loss_random_vs_loop_and_gradcheck():
    gen = torch.Generator().manual_seed(6)
    values = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    old_values = values + torch.randn(2, 4, generator=gen, dtype=torch.float64) * 0.3
    returns = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    terms = []
    for i in range(2):
        for t in range(4):
            v, vo, r = values[i, t].item(), old_values[i, t].item(), returns[i, t].item()
            vc = vo + min(max(v - vo, -0.2), 0.2)
            terms.append(0.5 * max((v - r) ** 2, (vc - r) ** 2))
    loss, _ = value_loss(values, old_values, returns)  # mask=None: all valid
    assert close(loss, sum(terms) / len(terms), 1e-12)
    values.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: value_loss(v, old_values, returns)[0], (values,))


# ---------------------------------------------------------------------------
# Entropy and Gaussian policies
# ---------------------------------------------------------------------------


def test_entropy_from_logits_vs_loop():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [2.0, -1.0, 0.5, 0.0]]])
    entropy = entropy_from_logits(logits)
    assert entropy.shape == (1, 2)
    assert close(entropy[0, 0], math.log(4))  # uniform over 4
    z = [math.exp(v) for v in [2.0, -1.0, 0.5, 0.0]]
    p = [v / sum(z) for v in z]
    assert close(entropy[0, 1], -sum(pi * math.log(pi) for pi in p), 1e-5)
    assert close(masked_entropy(logits, torch.tensor([[1, 0]])), math.log(4), 1e-5)


def test_gaussian_log_prob_and_entropy():
    half_log_2pi = 0.5 * math.log(2 * math.pi)  # 0.918939
    assert close(gaussian_log_prob(torch.zeros(1), torch.zeros(1), torch.zeros(1)), -half_log_2pi)
    # Two dims, sigma = 2, action one sigma away in dim 0: -0.5 - 2 log 2 - log(2 pi)
    value = gaussian_log_prob(torch.zeros(2), torch.full((2,), LOG2), torch.tensor([2.0, 0.0]))
    assert close(value, -0.5 - 2 * LOG2 - 2 * half_log_2pi)

    gen = torch.Generator().manual_seed(7)
    mean = torch.randn(4, 3, 2, generator=gen, dtype=torch.float64)  # (num_envs, T, action_dim)
    log_std = torch.randn(2, generator=gen, dtype=torch.float64)  # state-independent
    actions = torch.randn(4, 3, 2, generator=gen, dtype=torch.float64)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
    assert close(gaussian_log_prob(mean, log_std, actions), expected, 1e-12)
    assert close(gaussian_entropy(log_std), torch.distributions.Normal(0.0, log_std.exp()).entropy().sum(), 1e-12)
    assert close(gaussian_entropy(torch.zeros(1)), 0.5 * math.log(2 * math.pi * math.e))


# ---------------------------------------------------------------------------
# KL controllers
# ---------------------------------------------------------------------------


def test_adaptive_kl_controller_trajectory():
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    # kl 9.0: e = clip(0.5) = 0.2 -> x (1 + 0.2 * 256/10000) = x 1.00512
    assert close(controller.update(9.0, n_steps=256), 0.201024, 1e-12)
    # kl 6.6: e = 0.1 -> x 1.00256
    assert close(controller.update(6.6, n_steps=256), 0.20153862144, 1e-12)
    # kl 3.0: e = clip(-0.5) = -0.2 -> x 0.99488
    assert close(controller.update(torch.tensor(3.0), n_steps=256), 0.20050674369823, 1e-12)
    # kl on target: unchanged
    assert close(controller.update(6.0, n_steps=256), 0.20050674369823, 1e-12)
    assert close(controller.value, 0.20050674369823, 1e-12)


def test_kl_controller_state_dict_round_trip():
    controller = AdaptiveKLController(0.15, target=6.0, horizon=10000)
    controller.update(8.0, 64)
    resumed = AdaptiveKLController(1.0, target=1.0, horizon=1.0)
    resumed.load_state_dict(controller.state_dict())
    assert resumed.state_dict() == controller.state_dict()
    for kl in [2.0, 7.5, 6.1]:
        assert controller.update(kl, 64) == resumed.update(kl, 64)
    assert all(isinstance(v, float) for v in controller.state_dict().values())

    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 512) == 0.05 and fixed.value == 0.05
    other = FixedKLController(0.3)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05
