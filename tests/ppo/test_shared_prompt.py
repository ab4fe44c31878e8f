"""Each prompt runs once for its G answers (ppo.trainer.shared_prompt_logits): the same
logits and gradients as the full forward, and the same training run."""

from __future__ import annotations

import pytest
import torch

import ppo.trainer
from ppo.trainer import PPOTrainer, shared_prompt_logits
from rlhf.generation import pad_prompts_and_responses, position_ids_from_mask, sample_responses
from rlhf.models import load_model, load_tokenizer
from ppo_test_utils import planted_policy, tiny_config


def grouped_batch(group_size: int = 3, prompts=([5, 6, 7, 8, 9], [10, 11])):
    """Two prompts of different lengths (left padding), each answered group_size times with
    responses of different lengths (right padding)."""
    responses = [[20 + i + j for j in range(2 + (i % 4))] for i in range(2 * group_size)]
    rows = [p for p in prompts for _ in range(group_size)]
    return pad_prompts_and_responses(rows, responses, pad_token_id=0)


@pytest.mark.parametrize("prompts", [([5, 6, 7, 8, 9], [10, 11]),
                                     ([5, 6, 7, 8, 9], [10]),  # the cached part of [10] is all padding
                                     ([5], [10])])  # nothing to cache
def test_the_logits_and_gradients_are_the_full_forwards(prompts):
    model = load_model("tiny-random-llama", seed=0)
    input_ids, attention_mask, response_mask, width_p = grouped_batch(prompts=prompts)
    width_r = response_mask.shape[1]
    full = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                 use_cache=False, logits_to_keep=width_r + 1).logits
    shared = shared_prompt_logits(model, input_ids, attention_mask, width_p, 3)
    assert shared.shape == full.shape == (6, width_r + 1, model.config.vocab_size)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=0)
    weights = torch.randn_like(full)  # any loss of the logits
    full_grads = torch.autograd.grad((full * weights).sum(), list(model.parameters()))
    shared_grads = torch.autograd.grad((shared * weights).sum(), list(model.parameters()))
    assert max(g.abs().max().item() for g in full_grads) > 1e-2
    for a, b in zip(shared_grads, full_grads):  # float rounding: sums over 6 x R x vocabulary terms
        assert (a - b).abs().max() <= 1e-5 * b.abs().max(), ((a - b).abs().max(), b.abs().max())


def test_rows_that_are_not_groups_are_refused():
    model = load_model("tiny-random-llama", seed=0)
    input_ids, attention_mask, _, width_p = grouped_batch()
    with pytest.raises(ValueError, match="the 6 rows are not groups of 2 equal prompts"):
        shared_prompt_logits(model, input_ids, attention_mask, width_p, 2)  # rows 2-3 hold two prompts
    with pytest.raises(ValueError, match="the 6 rows are not groups of 2 equal prompts"):
        sample_responses(model, [[5, 6, 7]] * 3 + [[10, 11]] * 3, pad_token_id=0, stop_id=2, max_new_tokens=4,
                         temperature=1.0, seed=0, group_size=2)


def test_sampling_with_each_prompt_run_once_draws_the_same_tokens():
    """The prompt's KV cache computed once per group: the same seeded tokens, and per-step
    scores (logits / T) equal to 1e-5."""
    model, tokenizer = load_model("tiny-random-llama", seed=0), load_tokenizer("tiny-random-llama")
    prompts = [[5, 6, 7, 8, 9]] * 4 + [[10, 11]] * 4 + [[12, 13, 14]] * 4
    kwargs = dict(pad_token_id=tokenizer.pad_token_id, stop_id=tokenizer.eos_token_id, max_new_tokens=12,
                  temperature=0.7, seed=5, keep_scores=True)
    plain, shared = sample_responses(model, prompts, **kwargs), sample_responses(model, prompts, group_size=4, **kwargs)
    assert shared.responses == plain.responses and shared.has_stop == plain.has_stop
    assert len({tuple(r) for r in plain.responses[:4]}) == 4  # four different answers to one prompt
    assert len(shared.step_scores) == len(plain.step_scores) == 12
    for a, b in zip(shared.step_scores, plain.step_scores):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("estimator, overrides", [("grpo", {}), ("grpo", {"use_lora": True, "lora_r": 4}),
                                                  ("rloo", {})])
def test_a_run_with_shared_prompts_is_the_run_without(tmp_path, prompts_file, estimator, overrides, monkeypatch):
    """Two iterations: metrics (1e-5, relative above 1) and weights (1e-5) as with a full
    forward per row; the sampler shares prompts, the reference's forward in the rollout, the
    policy's in the rollout and the update (micro-batches of 4 = two groups of G = 2)."""
    calls = []
    original = ppo.trainer.shared_prompt_logits
    monkeypatch.setattr(ppo.trainer, "shared_prompt_logits", lambda *a: calls.append(a[-1]) or original(*a))
    runs = {}
    for shared in (True, False):
        policy, reward = planted_policy()
        config = tiny_config(tmp_path, prompts_file, advantage_estimator=estimator, num_generations=2,
                             per_device_train_batch_size=4, gradient_accumulation_steps=1, num_mini_batches=2,
                             total_episodes=16, kl_coef=0.2, output_dir=str(tmp_path / str(shared)), **overrides)
        trainer = PPOTrainer(config, reward_fn=reward, policy=policy)
        assert trainer.share_prompts
        trainer.share_prompts = shared
        metrics = [trainer.step(), trainer.step()]
        runs[shared] = metrics, [p.detach().clone() for p in trainer.unwrapped.parameters()]
        if shared:
            # per iteration: 2 rollout micro-batches x (reference + policy), 2 epochs x 2 micro-batches in the update
            assert calls == [2] * 2 * (2 * 2 + 4)
    for with_sharing, without in zip(runs[True][0], runs[False][0]):
        for key, value in without.items():
            if not key.startswith("time/") and key != "samples_per_second":
                assert abs(with_sharing[key] - value) < 1e-5 * max(1.0, abs(value)), (key, with_sharing[key], value)
    for a, b in zip(runs[True][1], runs[False][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
