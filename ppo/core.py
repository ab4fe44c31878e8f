"""PPO math for RLHF on language models and for continuous control.

Pure tensor functions: no models, no I/O, no global state (except the two small
KL-coefficient controllers at the bottom). Every formula cites its source: a paper
and equation, or "the textbook's eq. N (ch. C)", meaning Rossi, "A Gentle Principled
Introduction to Deep Reinforcement Learning" (2024): ch. 5 GAE, ch. 8 PPO-Clip, ch. 15
RLHF for LLMs. Where our formulas differ from a printed one, docs/notes_ppo.md says how.

Tensor conventions
------------------
* Time is always the LAST dimension. Language models use ``(batch, T_resp)``; the
  robot stage uses ``(num_envs, T)``; a single trajectory can be a flat ``(T,)``.
* Response tensors hold only the generated tokens (prompts, which are left-padded,
  are cut off before these functions see anything). Responses are right-padded:
  ``mask`` is 1 for every real generated token, including the stop token, and 0 for
  the padding after it. ``mask=None`` means every position is valid.
* Masks may be bool, int or float tensors; they are only tested for "non-zero".
* Log-probs at padded positions should hold the same constant in both policies so
  the per-token KL there is 0, but every function below also ignores pads itself.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from rlhf.generation import last_token_index

KL_ESTIMATORS = ("k1", "k2", "k3")


# ---------------------------------------------------------------------------
# Masked statistics
# ---------------------------------------------------------------------------


def _valid(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Boolean mask of valid entries, broadcast to ``x``."""
    if mask is None:
        return torch.ones_like(x, dtype=torch.bool)
    return mask.bool().expand_as(x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is non-zero (all entries if ``mask`` is None).

    ``dim=None`` reduces over everything. Padded entries are replaced by 0 before
    summing (not multiplied by 0), so inf/NaN sitting in padding cannot leak in.
    """
    valid = _valid(x, mask)
    total = torch.where(valid, x, torch.zeros_like(x))
    if dim is None:
        count = valid.sum()
        if count == 0:
            raise ValueError("masked_mean: the mask selects no entries")
        return total.sum() / count
    return total.sum(dim) / valid.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor | None = None, unbiased: bool = True) -> torch.Tensor:
    """Variance of the valid entries of ``x`` (a scalar over all valid entries).

    ``unbiased=True`` applies Bessel's correction n/(n-1), the convention of TRL's
    former ``masked_var``/``masked_whiten`` (removed from TRL 1.16, hence this copy).
    """
    valid = _valid(x, mask)
    count = valid.sum()
    if unbiased and count < 2:
        raise ValueError(f"masked_var: unbiased variance needs at least 2 valid entries, got {int(count)}")
    mean = masked_mean(x, valid)
    variance = masked_mean((x - mean) ** 2, valid)
    if unbiased:
        variance = variance * count / (count - 1)
    return variance


def whiten(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    shift_mean: bool = True,
    eps: float = 1e-8,
    sum_across_processes: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Normalise the valid entries of ``x`` to mean 0 and (unbiased) std 1.

    The batch normalisation of the textbook's sec. 15.2.9 (ch. 15). Statistics are pooled
    over all valid entries of the whole tensor (batch-level advantage whitening, as in
    TRL). Variance is unbiased (TRL's ``masked_whiten`` convention). With
    ``shift_mean=False`` the original mean is added back, so only the scale changes (used
    when the sign of a quantity must survive, e.g. rewards). Padded entries are returned
    as 0 so they cannot leak into later sums.

    ``sum_across_processes``: in a run over several processes, a function that sums a
    tensor over all of them (e.g. ``accelerator.reduce(t, "sum")``); the statistics are
    then those of every process's valid entries together, from the pooled sum, sum of
    squares and count (mean = S/n, var = (S2/n - mean^2) * n/(n-1)). None: this tensor only
    (two-pass mean and variance).
    """
    valid = _valid(x, mask)
    if sum_across_processes is None:
        mean = masked_mean(x, valid)
        variance = masked_var(x, valid, unbiased=True)
    else:
        moments = torch.stack([torch.where(valid, x, 0.0).sum(), torch.where(valid, x * x, 0.0).sum(),
                               valid.sum().to(x.dtype)])
        total, total_sq, count = sum_across_processes(moments)
        mean = total / count
        variance = (total_sq / count - mean**2) * count / (count - 1)
    whitened = (x - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(valid, whitened, torch.zeros_like(whitened))


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 - Var[returns - values] / Var[returns] over valid entries.

    1 = perfect value function, 0 = no better than predicting the mean return,
    negative = worse than that. NaN when the returns have zero variance.
    """
    valid = _valid(returns, mask)
    # Same count in numerator and denominator, so the Bessel factor cancels.
    var_returns = masked_var(returns, valid, unbiased=False)
    var_residual = masked_var(returns - values, valid, unbiased=False)
    if var_returns == 0:
        return torch.tensor(float("nan"), dtype=returns.dtype, device=returns.device)
    return 1 - var_residual / var_returns


# ---------------------------------------------------------------------------
# KL penalty and per-token rewards (ch. 15)
# ---------------------------------------------------------------------------


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(a_t | s_t) of the sampled tokens, with pi = softmax(logits / temperature).

    The log-probabilities in the ratio r_t of Schulman et al. 2017, eq. 7 and in the KL
    of the textbook's eq. 15.7 (ch. 15). Tempered with the SAMPLING temperature, so the ratio
    and the KL are those of the distribution the tokens were drawn from. ``logits`` is
    ``(..., T, vocab)`` aligned with ``tokens`` ``(..., T)`` (logit t predicts token t).
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor,
                               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs`` and the per-position entropy of softmax(logits / temperature)
    (``entropy_from_logits``; the textbook's eq. 11.1, ch. 11), from one log-softmax.

    The log-softmax over the vocabulary is the costly step of both (49,152 columns for
    SmolLM2); computing it once halves that work where a forward needs both (the rollout's
    statistics, the update's logging). The log-probs carry gradient; the entropy does not.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    logprobs = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        detached = logp.detach()
        entropy = -detached.exp().mul_(detached).sum(-1)
    return logprobs, entropy


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(pi || pi_ref) per sequence: the k1 estimate summed over each row's valid tokens.

    log pi(y|x) - log pi_ref(y|x) = sum_t [log pi(y_t|...) - log pi_ref(y_t|...)], the
    sequence-level log-ratio of Ouyang et al. 2022, eq. 2 (the textbook's eq. 15.7 per
    token), in nats per response: the unit of Ziegler et al. 2019's KL target.
    """
    return torch.where(_valid(logprobs, mask), logprobs - ref_logprobs, 0.0).sum(-1)


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    estimator: str = "k1",
    clamp: float | tuple[float, float] | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (the textbook's
    eq. 15.7 (ch. 15); the log-ratio inside Ouyang et al. 2022, eq. 2).

    With l = logprobs - ref_logprobs (log pi - log pi_ref of the sampled token):

    * ``"k1"``: l. The log-ratio of eq. 15.7 (the penalty there is its negative).
      Unbiased, but single tokens can be negative.
    * ``"k2"``: l**2 / 2. Biased, low variance; meant for loss terms.
    * ``"k3"``: (r - 1) - log r with r = pi_ref / pi = exp(-l). Unbiased and >= 0.

    (Schulman's estimators, "Approximating KL divergence", 2020.)
    ``clamp`` bounds the returned estimate: a float c means [-c, c], a pair means
    (min, max); OpenRLHF and verl clamp to +-10 to stop single outlier tokens from
    dominating the reward.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio**2
    elif estimator == "k3":
        # (r - 1) - log r with log r = -log_ratio; expm1 keeps precision near r = 1.
        kl = torch.expm1(-log_ratio) + log_ratio
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")

    if clamp is not None:
        low, high = (-clamp, clamp) if isinstance(clamp, (int, float)) else clamp
        if low > high:
            raise ValueError(f"clamp min {low} is above max {high}")
        kl = kl.clamp(min=low, max=high)
    return kl


def final_scores(
    scores: torch.Tensor,
    score_clip: float | None = None,
    missing_stop_penalty: float | None = None,
    has_stop: torch.Tensor | None = None,
) -> torch.Tensor:
    """The score each response is trained on: the RM score clipped to [-score_clip, score_clip],
    then REPLACED by ``missing_stop_penalty`` where ``has_stop`` is False (see
    ``token_rewards``, which puts it on the last real token). ``(batch,)`` in and out."""
    if missing_stop_penalty is not None and has_stop is None:
        raise ValueError("missing_stop_penalty needs has_stop (which rows produced the stop token)")
    scores = scores.reshape(-1)
    if score_clip is not None:
        scores = scores.clamp(-score_clip, score_clip)
    if missing_stop_penalty is not None:
        scores = torch.where(has_stop.bool().reshape(-1), scores, torch.full_like(scores, missing_stop_penalty))
    return scores


def token_rewards(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    score_clip: float | None = None,
    missing_stop_penalty: float | None = None,
    has_stop: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards of the textbook's eq. 15.8 (ch. 15): r_k = -kl_coef * KL_k, plus the
    RM score at k = m-1 (Ouyang et al. 2022, eq. 2, spread over tokens; Ziegler et al. 2019).

    Args:
        scores: reward-model score per response, shape ``(batch,)``.
        kl: per-token KL estimate, ``(batch, T_resp)`` (see ``kl_penalty``).
        mask: response mask, ``(batch, T_resp)``: 1 for real generated tokens
            including the stop token, 0 for right padding.
        kl_coef: beta of eq. 15.8 (``AdaptiveKLController.value``).
        score_clip: if set, scores are clipped to [-score_clip, score_clip].
        missing_stop_penalty: if set, the score of every row with ``has_stop`` False
            is REPLACED by this constant (e.g. -1.0), as in Ziegler et al. and the
            N+ implementation: the RM never saw truncated text, so its score there
            is not trusted. Replacement happens after clipping, so the penalty is
            exactly the configured value.
        has_stop: bool ``(batch,)``, True where the response ended with the stop
            token. Required when ``missing_stop_penalty`` is set.

    Returns:
        ``(rewards, non_score_rewards)``, both ``(batch, T_resp)`` and 0 at padding.
        The score sits on the LAST REAL token of each row (the stop token, or the
        final token of a truncated response), not on the first pad after it.
    """
    if missing_stop_penalty is not None and has_stop is None:
        raise ValueError("missing_stop_penalty needs has_stop (which rows produced the stop token)")
    valid = mask.bool()
    zeros = torch.zeros_like(kl)
    non_score_rewards = torch.where(valid, -kl_coef * kl, zeros)

    scores = scores.reshape(-1).to(kl.dtype)
    if scores.shape[0] != kl.shape[0]:
        raise ValueError(f"{scores.shape[0]} scores for {kl.shape[0]} responses")
    scores = final_scores(scores, score_clip, missing_stop_penalty, has_stop)

    rows = torch.arange(kl.shape[0], device=kl.device)
    score_rewards = zeros.index_put((rows, last_token_index(mask)), scores)
    return non_score_rewards + score_rewards, non_score_rewards


# ---------------------------------------------------------------------------
# Advantages (ch. 5)
# ---------------------------------------------------------------------------


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
    bootstrap_value: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation along the last dimension: Schulman et al. 2016,
    eq. 16 (as a backward recursion); the textbook's eq. 5.1 and 5.7 (ch. 5).

    delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1},
    returns R_t = A_t + V_t (computed before any advantage whitening). With lam = 1
    the returns are the reward-to-go sum_k gamma^(k-t) r_k of the textbook's eq. 15.10
    (see docs/notes_ppo.md for two misprints there and in eq. 5.7).

    Masked positions are skipped: they get A = R = 0 and the recursion passes over
    them unchanged. The value after the last real step is ``bootstrap_value``
    (shape ``rewards.shape[:-1]`` or a scalar); None means 0, i.e. the episode ended
    there, which is the case for every LM response. The robot stage passes the
    critic's value of the next observation when a rollout is cut by a time limit.
    Works on ``(T,)``, ``(batch, T)`` or ``(num_envs, T)``. Results carry no grad:
    they are regression/policy targets.
    """
    valid = _valid(rewards, mask)
    next_value = torch.zeros_like(rewards[..., 0])
    if bootstrap_value is not None:
        next_value = next_value + bootstrap_value
    next_advantage = torch.zeros_like(next_value)
    advantages = torch.zeros_like(rewards)

    for t in reversed(range(rewards.shape[-1])):
        step_is_real = valid[..., t]
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        advantage = delta + gamma * lam * next_advantage
        advantages[..., t] = torch.where(step_is_real, advantage, torch.zeros_like(advantage))
        # Carry only through real steps, so padding is invisible to the recursion.
        next_value = torch.where(step_is_real, values[..., t], next_value)
        next_advantage = torch.where(step_is_real, advantage, next_advantage)

    returns = torch.where(valid, advantages + values, torch.zeros_like(values))
    return advantages, returns


# ---------------------------------------------------------------------------
# Critic-free advantages: one number per sampled response (GRPO, Dr. GRPO, RLOO) or
# batch-normalised returns (REINFORCE++)
# ---------------------------------------------------------------------------

ADVANTAGE_ESTIMATORS = ("gae", "grpo", "dr_grpo", "rloo", "reinforce_pp")
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "sequence_sum")


def _groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``scores`` (n,) as (n / G, G): the G responses to one prompt are consecutive rows."""
    scores = scores.reshape(-1)
    if group_size < 2 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not form groups of {group_size} (need G >= 2 dividing them)")
    return scores.view(-1, group_size)


def group_relative_advantages(scores: torch.Tensor, group_size: int, scale: bool = True,
                              eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage of each response: A_i = (r_i - mean(r_group)) / (std(r_group) + eps),
    the same for every token of response i (Shao et al. 2024, eq. 3 and sec. 4.1.2 "outcome
    supervision"; the textbook's sec. 15.1).

    ``scores`` (n,) holds G consecutive responses per prompt. std is the unbiased sample std
    and eps = 1e-4 is added to it, as TRL's ``GRPOTrainer`` (``scale_rewards="group"``) does.
    ``scale=False`` is Dr. GRPO (Liu et al. 2025, sec. 3.2, eq. 4): r_i - mean(r_group), no
    division by the std (TRL's ``scale_rewards="none"``). Returns (n,).
    """
    grouped = _groups(scores, group_size)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    return advantages.reshape(-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out: A_i = r_i - 1/(G-1) sum_{j != i} r_j, the baseline of response i
    being the mean score of the other G-1 responses to the same prompt (Ahmadian et al. 2024,
    eq. 4; Kool et al. 2019). ``scores`` (n,) holds G consecutive responses per prompt; (n,)
    out. Equals TRL's ``RLOOTrainer`` advantages with ``normalize_advantages=False``.
    """
    grouped = _groups(scores, group_size)
    baselines = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baselines).reshape(-1)


@torch.no_grad()
def reinforce_pp_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    sum_across_processes: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """REINFORCE++ (Hu 2025, sec. 3, eq. 4-6): per-token rewards that already hold the k1 KL
    penalty (eq. 15.8 of the textbook, ``token_rewards``), their discounted returns
    G_t = sum_{s >= t} gamma^(s - t) r_s along each response, then normalised over every valid
    token of the whole batch: A_t = (G_t - mean G) / std G (``whiten``; all processes with
    ``sum_across_processes``). No critic, no group. ``(b, T)`` in and out, 0 at padding.
    """
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    valid = _valid(rewards, mask)
    for t in reversed(range(rewards.shape[-1])):
        running = torch.where(valid[..., t], rewards[..., t] + gamma * running, running)
        returns[..., t] = torch.where(valid[..., t], running, torch.zeros_like(running))
    return whiten(returns, mask, sum_across_processes=sum_across_processes)


def aggregate_loss(per_token_loss: torch.Tensor, mask: torch.Tensor | None = None, aggregation: str = "token_mean",
                   normalizer: float | None = None) -> torch.Tensor:
    """Reduce a ``(b, T)`` per-token loss to a scalar, the three ways the estimators' papers do.

    * ``"token_mean"``: sum over all valid tokens / their count (PPO as in TRL and OpenRLHF;
      DAPO, Yu et al. 2025, eq. 8; TRL's ``loss_type="bnpo"``);
    * ``"sequence_mean"``: mean over responses of each response's token mean, 1/G sum_i
      1/|o_i| sum_t (GRPO, Shao et al. 2024, eq. 3; TRL's ``loss_type="grpo"``);
    * ``"sequence_sum"``: sum over all valid tokens / (b * ``normalizer``), a constant
      instead of each response's length (Dr. GRPO, Liu et al. 2025, eq. 4; TRL's
      ``loss_type="dr_grpo"`` with ``normalizer`` = ``max_completion_length``).
    """
    if aggregation == "token_mean":
        return masked_mean(per_token_loss, mask)
    valid = _valid(per_token_loss, mask)
    per_sequence_sum = torch.where(valid, per_token_loss, torch.zeros_like(per_token_loss)).sum(-1)
    if aggregation == "sequence_mean":
        return (per_sequence_sum / valid.sum(-1).clamp(min=1)).mean()
    if aggregation == "sequence_sum":
        if normalizer is None or normalizer <= 0:
            raise ValueError("sequence_sum aggregation needs a positive normalizer (e.g. the response length)")
        return per_sequence_sum.sum() / (per_token_loss.shape[0] * normalizer)
    raise ValueError(f"unknown loss aggregation {aggregation!r}; valid: {', '.join(LOSS_AGGREGATIONS)}")


# ---------------------------------------------------------------------------
# PPO-Clip losses (ch. 8)
# ---------------------------------------------------------------------------


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_range: float = 0.2,
    aggregation: str = "token_mean",
    normalizer: float | None = None,
    extra_token_loss: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-Clip surrogate (Schulman et al. 2017, eq. 7; the textbook's eq. 8.1/8.2, ch. 8),
    as a loss to minimise.

    per-token loss = -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A), ratio = exp(logprobs -
    old_logprobs), reduced over the tokens by ``aggregate_loss(..., aggregation, normalizer)``
    (default: the masked mean over all tokens). ``advantages`` is per token ``(b, T)`` or per
    sequence ``(b,)`` (the critic-free estimators), broadcast over the tokens. ``old_logprobs``
    and ``advantages`` are constants (detached here, as eq. 8.2's text requires).
    ``extra_token_loss`` (``(b, T)``) is added per token before the reduction: GRPO's
    beta * k3 KL term (Shao et al. 2024, eq. 3), aggregated exactly like the surrogate.

    Stats (detached): ``clip_fraction``, the share of tokens where the clipped term
    is the active one (its gradient is 0); ``approx_kl``, the k3 estimate of
    KL(pi_old || pi_new) on the sampled tokens, the quantity of eq. 8.3 used for
    early stopping, but non-negative and lower-variance than eq. 8.3's k1 form.
    """
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    if advantages.dim() == logprobs.dim() - 1:  # one advantage per sequence
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    per_token = torch.maximum(unclipped, clipped)
    if extra_token_loss is not None:
        per_token = per_token + extra_token_loss
    loss = aggregate_loss(per_token, mask, aggregation, normalizer)

    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            # Tokens were sampled from pi_old: kl_penalty(p=old, q=new) has r = ratio.
            "approx_kl": masked_mean(kl_penalty(old_logprobs, logprobs, "k3"), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_range_value: float | None = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: 0.5 * masked mean of max((V - R)^2, (clip(V, V_old +- eps) - R)^2).

    The least-squares regression of the value function on the returns (the L^VF term
    of Schulman et al. 2017, eq. 9; the textbook's Algorithm 8.1 and sec. 15.2.4), with
    the value clipping used by PPO implementations (OpenAI baselines' ppo2) so the
    critic also moves at most ``eps`` per update. ``clip_range_value=None`` gives
    the plain 0.5 * (V - R)^2 loss.

    Stats (detached): ``value_clip_fraction`` (share of tokens where the clipped
    error is the larger one) and ``value_error`` (masked mean of (V - R)^2).
    """
    old_values = old_values.detach()
    returns = returns.detach()
    unclipped_error = (values - returns) ** 2
    if clip_range_value is None:
        worst_error = clipped_error = unclipped_error
    else:
        clipped_values = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
        clipped_error = (clipped_values - returns) ** 2
        worst_error = torch.maximum(unclipped_error, clipped_error)
    loss = 0.5 * masked_mean(worst_error, mask)

    with torch.no_grad():
        stats = {
            "value_clip_fraction": masked_mean((clipped_error > unclipped_error).to(values.dtype), mask),
            "value_error": masked_mean(unclipped_error, mask),
        }
    return loss, stats


def pretraining_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token negative log-likelihood of pretraining text, -1/N sum_t log pi(x_t | x_<t).

    The ptx term of Ouyang et al. 2022, eq. 2 (gamma * E_{x ~ D_pretrain}[log pi(x)]) and of
    the textbook's eq. 15.12 (ch. 15), as a loss per token: ``logits`` (b, L, vocab) of the
    policy on ``input_ids`` (b, L); logit t predicts token t + 1.
    """
    logits = logits[:, :-1].float()
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))


# ---------------------------------------------------------------------------
# Entropy and Gaussian policies
# ---------------------------------------------------------------------------


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy (nats) of softmax(logits) over the last dim, the textbook's
    eq. 11.1 (ch. 11).

    Delegates to TRL's chunked ``trl.trainer.utils.entropy_from_logits``. Imported
    lazily because importing TRL costs seconds and the robot stage never needs it.
    """
    from trl.trainer.utils import entropy_from_logits as trl_entropy_from_logits

    return trl_entropy_from_logits(logits)


def masked_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-token entropy over valid positions (for logging or an entropy bonus)."""
    return masked_mean(entropy_from_logits(logits), mask)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-density of ``actions`` under a diagonal Gaussian policy, summed over the action dim.

    log N(a; mu, sigma^2) = -(a - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2 per
    dimension (the density of the textbook's appendix A.9; see docs/notes_ppo.md on its
    eq. 13.3). ``log_std`` broadcasts, so
    a state-independent ``(action_dim,)`` parameter works. Output shape:
    ``actions.shape[:-1]``, ready for ``policy_loss``.
    """
    per_dim = -0.5 * ((actions - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return per_dim.sum(dim=-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Differential entropy of a diagonal Gaussian, summed over the last dim, the textbook's eq. a.43:
    sum_i 0.5 * log(2 pi e sigma_i^2)."""
    return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(dim=-1)


# ---------------------------------------------------------------------------
# KL coefficient controllers (beta of eq. 15.8)
# ---------------------------------------------------------------------------


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019, sec. 2.2 (lm-human-preferences).

    After each batch: e = clip(current_kl / target - 1, -0.2, 0.2) and
    value *= 1 + e * n_steps / horizon.

    Units: ``current_kl`` is the batch mean of the per-SEQUENCE KL, i.e. the sum of
    the k1 estimate over each response's real tokens (nats per response), and
    ``n_steps`` is the number of responses (episodes) in the batch; ``horizon`` is
    in episodes too (Ziegler: 10,000). A target of 6.0 thus means 6 nats per
    response; feeding a per-token mean instead needs a much smaller target.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError("target and horizon must be positive")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        """Adapt ``value`` to the measured per-sequence KL; returns the new value."""
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])


class FixedKLController:
    """Constant KL coefficient with the same interface as ``AdaptiveKLController``."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        """No-op: the coefficient stays fixed."""
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
