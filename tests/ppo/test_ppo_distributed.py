"""2 CPU processes (torchrun, gloo) give the same PPO run as 1 process with gradient
accumulation.

Set-up: rollout 8 prompts, one mini-batch of 8 per PPO epoch, micro-batch 2: one process
accumulates 4 micro-batches per optimizer step; two processes accumulate 2 each and DDP
all-reduces (averages) the gradients.

Why they must agree: generation is seeded per GLOBAL chunk of per_device_train_batch_size prompts, so
both set-ups sample the same responses (chunk c lives on process c // 2 or on the single
process); advantages are whitened with statistics pooled over both processes; the
pretraining stream hands out the same blocks per optimizer step (process p takes the p-th
slice). The tiny random model never emits EOS in 6 tokens, so every micro-batch holds the
same number of tokens and the mean of the micro-batch token-means is the same number
however rows are grouped. Tolerance 1e-5: float32 summation order only.
The same for GRPO: groups of 2 never straddle a process, the distinct prompts are the same
stream, and there is no critic.
"""

import json
import pytest
import os
import subprocess
import sys
from pathlib import Path

import torch

from rlhf.models import load_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMPARED = ["objective/scores", "objective/kl", "kl/coef", "kl/next_coef", "loss/policy_avg", "loss/value_avg",
            "loss/ptx_nll", "grad_norm", "policy/clipfrac_avg", "response/length", "episode"]


def prepare(folder: Path) -> None:
    folder.mkdir()
    (folder / "pretrain.txt").write_text("\n\n".join(f"line {i}: the cat sat on the mat." for i in range(60)))


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_two_processes_match_one_process_with_accumulation(tmp_path, prompts_file, estimator):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    prepare(ddp)
    prepare(single)
    script = str(HERE / "ppo_distributed_run.py")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             script, str(ddp), str(prompts_file), estimator], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=200)
    assert result.returncode == 0, result.stderr[-4000:]
    result = subprocess.run([sys.executable, script, str(single), str(prompts_file), estimator], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, result.stderr[-4000:]

    a, b = json.loads((ddp / "result.json").read_text()), json.loads((single / "result.json").read_text())
    assert a["num_processes"] == 2 and b["num_processes"] == 1, (a["distributed_type"], b["distributed_type"])
    assert a["ptx_position"] == b["ptx_position"]
    compared = COMPARED if estimator == "gae" else [k for k in COMPARED if k != "loss/value_avg"] + ["kl"]
    for step_a, step_b in zip(a["history"], b["history"], strict=True):
        assert ("loss/value_avg" in step_a) == (estimator == "gae")
        for key in compared:
            assert abs(step_a[key] - step_b[key]) <= 1e-5 * max(1.0, abs(step_b[key])), (key, step_a, step_b)
    assert abs(a["kl_coef"] - b["kl_coef"]) < 1e-9
    wa, wb = torch.load(ddp / "weights.pt"), torch.load(single / "weights.pt")
    for name in wb:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=0, msg=name)
    moved = max((wb[k] - v).abs().max().item() for k, v in _initial().items())
    assert moved > 1e-3  # it trained (so equal weights mean equal updates)


def _initial():
    return {"policy." + k: v for k, v in load_model("tiny-random-llama", seed=0).state_dict().items()}
