"""A run interrupted at step 2 and resumed from its checkpoint ends exactly where the
uninterrupted 4-step run ends: same weights, same per-step metrics, same KL coefficient,
same pretraining-stream position. Covers the model, optimizer (AdamW moments),
scheduler, adaptive KL controller and data positions (prompts, ptx). The interrupted run
got one step past its checkpoint: the resumed run's metrics.jsonl has each step once.
The same for GRPO (groups of 2, no critic, KL in the loss)."""

import json

import torch
import pytest

from ppo.trainer import PPOTrainer
from ppo_test_utils import planted_policy, tiny_config

NUM_STEPS = 4


def make(tmp_path, prompts_file, name, **overrides):
    text = tmp_path / "pretrain.txt"
    text.write_text("\n\n".join(f"the cat number {i} sat on the mat and looked at the dog." for i in range(40)))
    policy, reward = planted_policy()
    config = tiny_config(tmp_path, prompts_file, total_episodes=NUM_STEPS * 8, output_dir=str(tmp_path / name),
                         save_steps=2, ptx_coef=0.5, pretrain_data=str(text), ptx_batch_size=2, ptx_max_length=16,
                         target_kl=0.5, kl_horizon=50, lr_scheduler_type="linear", learning_rate=3e-3, **overrides)
    return PPOTrainer(config, reward_fn=reward, policy=policy)


def weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.unwrapped.state_dict().items()}


ESTIMATORS = {"gae": {}, "grpo": {"advantage_estimator": "grpo", "num_generations": 2}}


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_resume_continues_the_same_trajectory(tmp_path, prompts_file, estimator):
    settings = ESTIMATORS[estimator]
    straight = make(tmp_path, prompts_file, "straight", **settings)
    full = straight.train()

    interrupted = make(tmp_path, prompts_file, "resumed", **settings)
    partial = interrupted.train(max_steps=3)  # killed after step 3; the last checkpoint is step 2
    assert partial["steps"] == 3 and partial["policy_dir"] is None
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step_2"
    assert (checkpoint / "trainer_state.json").exists()
    # weights in safetensors; no pytorch_model.bin (pickle)
    assert (checkpoint / "model.safetensors").exists() and not list(checkpoint.glob("pytorch_model*"))

    resumed = make(tmp_path, prompts_file, "resumed", resume_from_checkpoint="latest", **settings)
    assert resumed.state.step == 2
    rest = resumed.train()
    assert rest["steps"] == NUM_STEPS and len(rest["history"]) == 2
    logged = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]

    keys = ["objective/scores", "objective/kl", "kl/coef", "loss/policy_avg", "loss/ptx_nll", "lr", "grad_norm"]
    keys += ["loss/value_avg"] if estimator == "gae" else ["kl", "frac_reward_zero_std"]
    for a, b in zip(full["history"][2:], rest["history"]):
        for key in keys:
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (key, a[key], b[key])
    assert full["kl_coef"] != 0.05  # the adaptive controller moved...
    assert abs(full["kl_coef"] - rest["kl_coef"]) < 1e-12  # ...and its state was restored
    assert straight.ptx.position == resumed.ptx.position == NUM_STEPS * 2 * 2 * 2 * 2  # steps x epochs x minis x micros x ptx_batch
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)
    # and training did change the weights
    fresh = planted_policy()[0].state_dict()
    moved = max((a["policy." + k] - v).abs().max().item() for k, v in fresh.items())
    assert moved > 1e-3
