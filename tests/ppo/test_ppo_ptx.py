"""The ptx term (eq. 15.12) keeps the policy's likelihood of pretraining text: with the
same seed and planted reward, the NLL on HELD-OUT pretraining text rises less (here it
falls) with ptx_coef > 0 than with ptx_coef = 0, while the reward still rises."""

import random
import pytest

import torch

from ppo.trainer import PPOTrainer, PretrainBlocks
from ppo_test_utils import planted_policy, tiny_config

WORDS = "the a cat dog bird sat ran slept on under near mat tree house and then quietly happily".split()


def sentences(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(n))


@torch.no_grad()
def nll(policy, blocks: torch.Tensor) -> float:
    logits = policy(input_ids=blocks).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1)).item()


def run(tmp_path, prompts_file, ptx_coef: float):
    train_text = tmp_path / "pretrain.txt"
    train_text.write_text(sentences(0, 200))
    policy, reward = planted_policy()
    config = tiny_config(tmp_path, prompts_file, total_episodes=64, per_device_train_batch_size=4,
                         gradient_accumulation_steps=2, num_mini_batches=1, response_length=8, learning_rate=1e-2, ptx_coef=ptx_coef,
                         pretrain_data=str(train_text), ptx_batch_size=4, ptx_max_length=24,
                         output_dir=str(tmp_path / f"ptx_{ptx_coef}"))
    trainer = PPOTrainer(config, reward_fn=reward, policy=policy)
    held_out = PretrainBlocks(sentences(1, 40), trainer.tokenizer, 24, seed=0).blocks[:16]
    before = nll(trainer.unwrapped.policy, held_out)
    summary = trainer.train()
    after = nll(trainer.unwrapped.policy, held_out)
    return before, after, summary


@pytest.mark.slow
def test_ptx_reduces_nll_drift_on_held_out_pretraining_text(tmp_path, prompts_file):
    before_0, after_0, plain = run(tmp_path, prompts_file, ptx_coef=0.0)
    before_1, after_1, with_ptx = run(tmp_path, prompts_file, ptx_coef=1.0)
    assert abs(before_0 - before_1) < 1e-6  # same starting model
    drift_plain, drift_ptx = after_0 - before_0, after_1 - before_1
    assert drift_ptx < drift_plain - 0.5, (drift_plain, drift_ptx)
    assert "loss/ptx_nll" in with_ptx["final"] and "loss/ptx_nll" not in plain["final"]
    assert with_ptx["final"]["loss/ptx_nll"] < with_ptx["first"]["loss/ptx_nll"]
    # PPO still does its job with the extra term
    scores = [h["objective/scores"] for h in with_ptx["history"]]
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3
