"""Data-parallel training on 2 CPU processes equals 1 process with gradient accumulation 2.

What is compared: two runs of `python -m reward_model.train` on the 12-prompt K = 4
fixture, same config and seed, 2 epochs of 3 optimizer steps, each step covering 4
comparisons (16 sequences):

- distributed: `torchrun --nproc_per_node 2` (gloo), per-device batch 2;
- single: one process, batch 2, `gradient_accumulation_steps 2`.

Why they must agree: sampling is sequential (`train_sampling_strategy: sequential`) and
accelerate shards batches round-robin (rank r takes batches r, r + 2, ...), so optimizer
step s sees batches 2s and 2s + 1 in both setups: on ranks 0 and 1, or as the two
accumulated micro-batches. Each micro-batch is padded on its own in both setups, so every
micro-batch loss (the mean over its 2 prompts) is the same computation. The single run
steps on (grad L_a + grad L_b) / 2 (Trainer divides each micro-batch loss by the
accumulation steps), DDP on the all-reduce average of grad L_a and grad L_b: the same
gradient, which is the gradient of the mean over the 4 prompts because both halves have
2 prompts of equal weight (12 = 3 x 4, nothing dropped). The logged loss is the mean of
the two micro-batch losses in both setups (Trainer averages the ranks' losses).

Compared: every step's logged loss and grad norm (full precision from
`trainer_state.json` of a checkpoint saved at the last step) and the final weights. The
tolerance, 1e-5, covers float32 summation order only (all-reduce versus accumulation);
the weights comparison also proves the gradients were synchronised: without the
all-reduce, rank 0 would train on half the data and its saved weights would differ by
about the learning rate (1e-3) per step.
"""

import json
import pytest
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from reward_model.train import parse_config, train

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6  # 12 comparisons / (2 per device x 2) = 3 steps per epoch, 2 epochs


def common_args(output_dir: Path) -> list[str]:
    return ["--config", str(ROOT / "configs/reward_model/smoke.yaml"),
            "--train_data", str(ROOT / "tests/fixtures/ranked_small.jsonl"),
            "--output_dir", str(output_dir), "--use_cpu", "true", "--per_device_train_batch_size", "2",
            "--num_train_epochs", "2", "--train_sampling_strategy", "sequential", "--dataloader_drop_last", "true",
            "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", str(STEPS), "--seed", "0",
            "--disable_tqdm", "true", "--report_to", "none"]


def logged(output_dir: Path) -> dict[int, dict]:
    state = json.loads((output_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return {entry["step"]: entry for entry in state["log_history"] if "loss" in entry}


@pytest.mark.slow
def test_two_process_ddp_matches_gradient_accumulation(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "reward_model.train", *common_args(ddp_dir), "--ddp_backend", "gloo"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]

    train(parse_config([*common_args(single_dir), "--gradient_accumulation_steps", "2"]))

    ddp, single = logged(ddp_dir), logged(single_dir)
    assert sorted(ddp) == sorted(single) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert abs(ddp[step]["loss"] - single[step]["loss"]) <= 1e-5, (step, ddp[step], single[step])
        assert abs(ddp[step]["grad_norm"] - single[step]["grad_norm"]) <= 1e-5 * max(1.0, single[step]["grad_norm"])
        assert ddp[step]["num_tokens"] == single[step]["num_tokens"]  # the same sequences were seen
    assert single[STEPS]["loss"] < single[1]["loss"]  # it trained

    ddp_weights, single_weights = load_file(ddp_dir / "model.safetensors"), load_file(single_dir / "model.safetensors")
    assert ddp_weights.keys() == single_weights.keys()
    for name, tensor in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], tensor, atol=1e-5, rtol=0, msg=name)
