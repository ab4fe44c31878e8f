"""Evaluate a trained policy on the true reward.

    python -m robot.evaluate --checkpoint runs/robot/reach/checkpoint.pt --episodes 100

Prints the mean true return and the success rate (final flange-target distance < 5 cm on
reach) of the deterministic policy (the Gaussian mean) on fresh episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from robot.policy import Agent, evaluate_policy


def load_agent(checkpoint: str | Path) -> tuple[Agent, dict]:
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = state["config"]
    agent = Agent(state["obs_dim"], state["action_dim"], config["hidden_size"], config["init_log_std"], config["obs_clip"])
    agent.load_state_dict(state["agent"])
    agent.eval()
    return agent, state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by robot.train")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes (default 100)")
    parser.add_argument("--seed", type=int, default=123_456, help="first episode seed (default 123456)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the Gaussian mean")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
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
    sys.exit(main())
