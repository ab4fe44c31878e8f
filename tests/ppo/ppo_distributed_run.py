"""Helper for test_ppo_distributed.py: one small PPO run, launched either as one process
or under torchrun. Writes rank 0's per-step metrics and final weights to OUTPUT_DIR.
Arguments: OUTPUT_DIR PROMPTS [ESTIMATOR] (gae, or a critic-free one with groups of 2)."""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ppo.config import PPOConfig  # noqa: E402
from ppo.trainer import PPOTrainer  # noqa: E402


def reward(prompts, completions, responses):
    return [sum(t < 24576 for t in r) / len(r) for r in responses]  # share of low token ids


def main(output_dir: str, prompts: str, estimator: str = "gae") -> None:
    torch.set_num_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    # one mini-batch of 8 episodes per epoch: micro-batches of 2, 4 // world_size of them per process
    config = PPOConfig(sft_model_path="tiny-random-llama", prompts=prompts, per_device_train_batch_size=2,
                       gradient_accumulation_steps=4 // world_size, num_mini_batches=1, num_ppo_epochs=2,
                       total_episodes=24, response_length=6, temperature=1.0,
                       learning_rate=1e-2, ptx_coef=0.5, pretrain_data=str(Path(output_dir) / "pretrain.txt"),
                       ptx_batch_size=2, ptx_max_length=16, output_dir=output_dir, disable_tqdm=True,
                       sample_table_every=0, target_kl=1.0, kl_horizon=40, advantage_estimator=estimator,
                       num_generations=1 if estimator == "gae" else 2)
    trainer = PPOTrainer(config, reward_fn=reward)
    summary = trainer.train()
    if trainer.accelerator.is_main_process:
        torch.save({k: v.cpu() for k, v in trainer.unwrapped.state_dict().items()}, Path(output_dir) / "weights.pt")
        (Path(output_dir) / "result.json").write_text(json.dumps({
            "history": summary["history"], "kl_coef": summary["kl_coef"],
            "num_processes": trainer.accelerator.num_processes, "ptx_position": trainer.ptx.position,
            "distributed_type": str(trainer.accelerator.distributed_type)}))
    trainer.accelerator.wait_for_everyone()
    if os.environ.get("WORLD_SIZE"):
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
