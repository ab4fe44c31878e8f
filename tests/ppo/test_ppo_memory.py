"""What saves time and memory changes no number: the LM head only at the response columns
(transformers' ``logits_to_keep``) gives the log-probs, values and entropy of the full-width
forward; the first update micro-batch, on the rollout's own policy, has ratio 1."""

import pytest
import torch

from ppo import core
from ppo.trainer import PPOTrainer
from rlhf.generation import chat_prompt_ids, pad_prompts_and_responses
from ppo_test_utils import planted_policy, tiny_config, tiny_reward_model


def trainer_for(tmp_path, prompts_file, critic: str, **overrides) -> PPOTrainer:
    """critic "head": a value head on the policy and a frozen reference copy; "reward_model": a
    separate critic network and a LoRA policy whose reference is itself with adapters disabled."""
    policy, reward = planted_policy()
    if critic == "reward_model":
        overrides |= dict(reward_models=[{"path": tiny_reward_model(tmp_path / "rm", 1), "weight": 1.0}],
                          value_init="reward_model", use_lora=True, lora_r=4, lora_alpha=8)
    trainer = PPOTrainer(tiny_config(tmp_path, prompts_file, **overrides), reward_fn=reward, policy=policy)
    with torch.no_grad():  # move the policy away from its reference, and the value head off zero
        generator = torch.Generator().manual_seed(0)
        for name, parameter in trainer.unwrapped.named_parameters():
            if "lora_B" in name or "value_head" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            elif "down_proj" in name and critic == "head":  # the frozen reference copy keeps the old weights
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return trainer


@pytest.mark.parametrize("critic", ["head", "reward_model"])
def test_response_statistics_equal_the_full_width_forward(tmp_path, prompts_file, critic):
    trainer = trainer_for(tmp_path, prompts_file, critic, temperature=0.7)
    prompts = [chat_prompt_ids(trainer.tokenizer, p) for p in ["Say hi.", "Name a colour for me, please."]]
    responses = [[100, 200, 300, 400], [500, 600]]
    stats = trainer.response_statistics(prompts, responses)

    # the earlier computation: logits at every column, then columns P - 1 .. end - 1
    input_ids, mask, _, width = pad_prompts_and_responses(prompts, responses, trainer.tokenizer.pad_token_id)
    tokens = input_ids[:, width:]
    with torch.no_grad():
        logits, values, _ = trainer.unwrapped(input_ids, mask)
        ref_logits = trainer._reference_logits(input_ids, mask)
    assert logits.shape[1] == input_ids.shape[1] == ref_logits.shape[1]
    tempered = logits[:, width - 1:-1] / 0.7
    expected = {"logprobs": core.token_logprobs(tempered, tokens),
                "ref_logprobs": core.token_logprobs(ref_logits[:, width - 1:-1], tokens, 0.7),
                "values": values[:, width - 1:-1], "entropy": core.entropy_from_logits(tempered)}
    for name, full in expected.items():
        for i, response in enumerate(responses):
            torch.testing.assert_close(getattr(stats, name)[i], full[i, :len(response)], atol=1e-6, rtol=0)
    assert (stats.logprobs[0] - stats.ref_logprobs[0]).abs().max() > 1e-3  # policy and reference differ
    assert stats.values[0].abs().max() > 1e-3


@pytest.mark.parametrize("critic", ["head", "reward_model"])
def test_first_update_micro_batch_has_ratio_one(tmp_path, prompts_file, critic):
    trainer = trainer_for(tmp_path, prompts_file, critic)
    rollout = trainer.rollout(step=0)
    loss, stats = trainer._micro_loss(rollout, [0, 3], None)
    assert abs(stats["val/ratio"].item() - 1.0) < 1e-6
    assert abs(stats["policy/approxkl_avg"].item()) < 1e-6
    assert stats["val/clipfrac_avg"].item() == 0.0  # the values are the rollout's: nothing to clip


@pytest.mark.parametrize("critic", ["head", "reward_model"])
def test_gradient_checkpointing_changes_no_number(tmp_path, prompts_file, critic):
    """One PPO iteration (rollout, 2 epochs x 2 optimizer steps) with TrainingArguments'
    gradient_checkpointing on and off: the same metrics and the same trained weights."""
    runs = {}
    for checkpointing in (False, True):
        trainer = trainer_for(tmp_path / str(checkpointing), prompts_file, critic, total_episodes=8,
                              gradient_checkpointing=checkpointing)
        networks = [trainer.unwrapped.policy] + ([trainer.unwrapped.value_model] if critic == "reward_model" else [])
        assert all(net.is_activation_checkpointing == checkpointing for net in networks)
        metrics = trainer.step()
        weights = {name: p.detach().clone() for name, p in trainer.unwrapped.named_parameters() if p.requires_grad}
        runs[checkpointing] = {k: v for k, v in metrics.items() if not k.startswith(("time/", "samples_per"))}, weights
    (off, off_weights), (on, on_weights) = runs[False], runs[True]
    assert off.keys() == on.keys() and "loss/value_avg" in on
    for key in off:
        assert abs(off[key] - on[key]) < 1e-5, (key, off[key], on[key])
    assert off_weights.keys() == on_weights.keys()
    for name in off_weights:
        torch.testing.assert_close(on_weights[name], off_weights[name], atol=1e-6, rtol=0)
