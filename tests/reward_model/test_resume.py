"""Resuming from a checkpoint continues the interrupted run exactly.

One uninterrupted run of 8 optimizer steps saves a checkpoint at step 4; a second run,
in a fresh output folder holding only a copy of that checkpoint, resumes from it. Batches
of 2 comparisons over 12 prompts make 6 steps per epoch, so the checkpoint falls in the
middle of a shuffled epoch and the resumed run must also skip the batches already seen
and reshuffle the second epoch the same way (Trainer saves the RNG states; `data_seed`
fixes the sampler). Everything runs on one CPU process in float32, so the second half is
the same computation: losses and final weights must agree to 1e-6 (in practice exactly).
"""

import shutil
import pytest

import torch
from safetensors.torch import load_file

from reward_model.train import RewardModelConfig, train

FIXTURE = "tests/fixtures/ranked_small.jsonl"  # 12 prompts x K = 4 rankings


def config(output_dir, **overrides):
    return RewardModelConfig(
        output_dir=str(output_dir), model_name_or_path="tiny-random-llama", train_data=FIXTURE,
        loss="pairwise_ranking", per_device_train_batch_size=2, max_steps=8, learning_rate=1e-2,
        save_strategy="steps", save_steps=4, logging_steps=1, use_cpu=True, disable_tqdm=True,
        report_to="none", seed=3, data_seed=5, **overrides)


def step_losses(summary):
    return {entry["step"]: entry["loss"] for entry in summary["log_history"][0] if "loss" in entry}


@pytest.mark.slow
def test_resume_from_mid_checkpoint_matches_uninterrupted_run(tmp_path):
    full = train(config(tmp_path / "full"))
    assert (tmp_path / "full" / "checkpoint-4").is_dir()

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-4", resumed_dir / "checkpoint-4")
    resumed = train(config(resumed_dir, resume_from_checkpoint=str(resumed_dir / "checkpoint-4")))

    losses, resumed_losses = step_losses(full), step_losses(resumed)
    assert sorted(losses) == list(range(1, 9))
    # the resumed history holds steps 1-4 from the checkpoint's trainer_state.json, then its own
    assert sorted(resumed_losses) == list(range(1, 9))
    second_half = range(5, 9)
    for step in second_half:
        assert abs(resumed_losses[step] - losses[step]) <= 1e-6, (step, resumed_losses[step], losses[step])
    # the token count goes on from the checkpoint's count, not from zero
    tokens = {entry["step"]: entry["num_tokens"] for entry in full["log_history"][0] if "num_tokens" in entry}
    resumed_tokens = {entry["step"]: entry["num_tokens"] for entry in resumed["log_history"][0] if "num_tokens" in entry}
    assert tokens[8] > tokens[4] > 0
    assert resumed_tokens[8] == tokens[8]
    # not a trivially flat curve: the second half really trained
    assert losses[8] < losses[5] < losses[1]

    weights = load_file(tmp_path / "full" / "model.safetensors")
    resumed_weights = load_file(resumed_dir / "model.safetensors")
    assert weights.keys() == resumed_weights.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, atol=1e-6, rtol=0, msg=name)
    # and the step-4 checkpoint alone differs from the final model (resuming did train)
    mid = load_file(tmp_path / "full" / "checkpoint-4" / "model.safetensors")
    assert any(not torch.allclose(mid[name], tensor) for name, tensor in weights.items())
