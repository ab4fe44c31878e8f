"""Shared PPO test helpers: short prompts, a tiny policy with a planted, learnable reward."""

import torch

from ppo.config import PPOConfig
from rlhf.models import load_model, load_tokenizer

SHORT_PROMPTS = ["Say hi.", "Name a colour.", "Count to three.", "Pick a fruit.", "Greet me.", "Name a planet.",
                 "Say yes.", "Name a tree.", "Pick a number.", "Say bye.", "Name a bird.", "Name a river."]


def planted_policy(name="tiny-random-llama", seed=0):
    """A tiny random Llama whose embeddings (initializer_range 0.3) make next-token
    distributions non-uniform, plus a planted reward: the share of response tokens in a
    fixed half of the vocabulary (first coordinate of the initial embedding > 0). The
    set is learnable: moving the last hidden state along that coordinate raises all of
    its tokens at once (tied embeddings)."""
    torch.set_num_threads(1)
    policy = load_model(name, seed=seed, initializer_range=0.3)
    good = policy.get_input_embeddings().weight.detach()[:, 0] > 0

    def reward(prompts, completions, responses):
        return [good[torch.tensor(r)].float().mean().item() for r in responses]

    return policy, reward


def tiny_config(tmp_path, prompts_file, **overrides) -> PPOConfig:
    """4 iterations of 8 episodes: micro-batches of 2, mini-batches of 4 (2 micro-batches), 2 per epoch;
    fp32, so the numbers do not depend on this CPU's bf16 speed."""
    fields = dict(sft_model_path="tiny-random-llama", prompts=str(prompts_file), per_device_train_batch_size=2,
                  gradient_accumulation_steps=2, num_mini_batches=2, num_ppo_epochs=2, total_episodes=32,
                  response_length=6, temperature=1.0, learning_rate=1e-2, lr_scheduler_type="constant",
                  output_dir=str(tmp_path / "run"), disable_tqdm=True, sample_table_every=0, precision="fp32")
    fields.update(overrides)
    return PPOConfig(**fields)


def tiny_reward_model(folder, seed):
    """A randomly initialised one-label reward model folder (no reward_stats.json: the trainer
    normalises it on the initial policy's responses)."""
    load_model("tiny-random-llama", kind="seq_cls", seed=seed).save_pretrained(folder)
    load_tokenizer("tiny-random-llama").save_pretrained(folder)
    return str(folder)
