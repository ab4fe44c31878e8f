"""Env steps per second of the two robot learners, PPO (robot.policy) and SAC (robot.sac),
learning included, on the same task, sub-envs and reward (#18: SAC's speed beside PPO's).

Both learners run `train(steps, TrueReward())` from the same config (configs/robot/reach.yaml
unless --config), in one process, one thread, interleaved rounds (PPO, SAC, PPO, SAC, ...);
the best round of each is kept, timed by CPU time (the machine is shared) and by wall time.
SAC is first taken past `sac_learning_starts` (random warm-up, no gradient steps) so every
timed round includes its gradient steps. Prints each learner's env steps/s and the ratio
SAC / PPO.

Usage:  .venv/bin/python benchmarks/robot_learner_throughput.py [--config configs/robot/reach.yaml]
            [--steps 4000] [--rounds 3] [--field value ...]   (any RobotConfig field)
"""

from __future__ import annotations

import argparse
import time

import torch

from rlhf.config import parse_config
from robot.config import RobotConfig
from robot.policy import PPO, TrueReward
from robot.sac import SAC


def timed_train(learner, steps: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `steps` more env steps of learning."""
    cpu, wall = time.process_time(), time.perf_counter()
    learner.train(steps, TrueReward())
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/robot/reach.yaml")
    parser.add_argument("--steps", type=int, default=4000, help="env steps per timed round (whole rollouts)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each learner is kept")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(1)
    config = parse_config(RobotConfig, ["--config", args.config, "--progress", "false", *overrides],
                          prog="benchmarks/robot_learner_throughput.py")
    learners = {"ppo": PPO(config), "sac": SAC(config)}
    learners["sac"].train(config.sac_learning_starts, TrueReward())  # past the random warm-up
    best = {name: (float("inf"), float("inf")) for name in learners}
    for _ in range(args.rounds):
        for name, learner in learners.items():
            cpu, wall = timed_train(learner, args.steps)
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))

    print(f"task {config.task}, {config.num_envs} sub-envs, {args.steps} env steps per round, best of {args.rounds}; "
          f"SAC: {config.sac_updates_per_step} gradient steps per env step, batch {config.sac_batch_size}, "
          f"hidden {config.sac_hidden_size}; PPO: {config.update_epochs} epochs x {config.num_minibatches} minibatches")
    print(f"{'learner':<8} {'steps/s (CPU)':>14} {'steps/s (wall)':>15}")
    for name, (cpu, wall) in best.items():
        print(f"{name:<8} {args.steps / cpu:>14.0f} {args.steps / wall:>15.0f}")
    print(f"ratio SAC / PPO (CPU time): {best['ppo'][0] / best['sac'][0]:.2f}x")


if __name__ == "__main__":
    main()
