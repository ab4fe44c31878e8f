"""Evaluate a trained policy on the true reward.

    python -m robot.evaluate --checkpoint runs/robot/reach/checkpoint.pt --episodes 100

Prints the mean true return and the success rate (final flange-target distance < 5 cm on
reach) of the deterministic policy (the Gaussian mean; SAC: its tanh) on fresh episodes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf.config import ConfigError, parse_config, run_main
from robot.policy import Agent, evaluate_policy
from robot.sac import Actor


@dataclass
class EvaluateConfig:
    checkpoint: str = field(metadata={"help": "checkpoint.pt written by robot.train"})
    episodes: int = field(default=100, metadata={"help": "evaluation episodes"})
    seed: int = field(default=123_456, metadata={"help": "first episode seed"})
    stochastic: bool = field(default=False, metadata={"help": "sample actions instead of the Gaussian mean"})
    json: bool = field(default=False, metadata={"help": "print one JSON line"})

    def __post_init__(self):
        if self.episodes < 1:
            raise ConfigError("episodes", f"expected >= 1, got {self.episodes}")


def load_agent(checkpoint: str | Path) -> tuple[Agent | Actor, dict]:
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(str(path), "checkpoint not found (expected a checkpoint.pt written by robot.train)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = state["config"]
    if config.get("learner", "ppo") == "sac":  # checkpoints older than the SAC learner are PPO's
        agent = Actor(state["obs_dim"], state["action_dim"], config["sac_hidden_size"])
    else:
        agent = Agent(state["obs_dim"], state["action_dim"], config["hidden_size"], config["init_log_std"], config["obs_clip"])
    agent.load_state_dict(state["agent"])
    agent.eval()
    return agent, state


def main(argv: list[str] | None = None) -> int:
    args = parse_config(EvaluateConfig, argv, prog="python -m robot.evaluate")
    torch.set_num_threads(1)
    agent, state = load_agent(args.checkpoint)
    result = evaluate_policy(agent, state["config"]["task"], args.episodes, args.seed, deterministic=not args.stochastic)
    result.pop("rollouts")
    result.update(task=state["config"]["task"], mode=state["config"]["mode"], labels=state["labels"],
                  timesteps=state["timesteps"])
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['task']} ({result['mode']}, {result['timesteps']} steps, {result['labels']} labels): "
              f"true return {result['return']:.2f} +- {result['return_std']:.2f}, "
              f"success {result['success']:.1%} over {result['episodes']} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
