"""PPO-ptx fine-tuning entry point.

    python -m ppo.train --config configs/ppo/smoke.yaml
    python -m ppo.train --config configs/ppo/quickstart.yaml --total_episodes 1600 --ptx_coef 0
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m ppo.train --config configs/ppo/quickstart.yaml

Every field of ``ppo.config.PPOConfig`` can be set in the YAML file and overridden on the
command line; unknown keys are an error. Bad inputs (too-long prompts, empty pretraining
data, batch sizes that do not divide, ...) fail before any model is loaded. An output_dir
holding an earlier run is refused unless ``--overwrite true`` or ``--resume_from_checkpoint latest``
(``rlhf.outputs``).
"""

from __future__ import annotations

import json
import sys

from ppo.config import parse_config, resume_target
from ppo.trainer import PPOTrainer
from rlhf.config import run_main
from rlhf.outputs import check_output_folder


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)  # a ConfigError here or in PPOTrainer: "error: ..." and exit 2 (run_main)
    check_output_folder(config.output_dir, "--output_dir", config.overwrite, resume=resume_target(config) is not None,
                        resume_flag="--resume_from_checkpoint latest")
    trainer = PPOTrainer(config)
    summary = trainer.train()
    if trainer.accelerator.is_main_process:
        first, final = summary["first"], summary["final"]
        print(json.dumps({"steps": summary["steps"], "episodes": final.get("episode"),
                          "score_first": first.get("objective/scores"), "score_final": final.get("objective/scores"),
                          "kl_final": final.get("objective/kl"),
                          "kl_coef": summary["kl_coef"], "policy_dir": summary["policy_dir"],
                          "seconds": round(summary["seconds"], 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
