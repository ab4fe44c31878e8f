"""Env steps per second: robot.vec_env.Iiwa14VecEnv vs a plain Gymnasium MujocoEnv.

This benchmark decided robot/vec_env.py: a hand-written batch of MjData copies measured
1.05x gymnasium.vector.SyncVectorEnv (8 envs, 8,000 steps, one core), below the 1.5x that
would justify its own code, so robot.vec_env is now SyncVectorEnv over robot.envs.

All variants run the same MJCF (robot/assets/iiwa14.xml or iiwa14_push.xml), the same
frame skip (20 x 2 ms = 0.04 s per env step), the same delta-joint-target action,
reward and observation, with uniformly random actions and auto-reset:

  mujoco_env       one gymnasium.envs.mujoco.MujocoEnv subclass + TimeLimit, Python loop
  sync_vector      gymnasium SyncVectorEnv over N of those MujocoEnvs
  robot_env        one robot.envs single env (gym.make, default wrappers)
  robot_vec_env    robot.vec_env.Iiwa14VecEnv: SyncVectorEnv over N robot.envs envs, plus the
                   final-state info the preference loop reads

Usage:  .venv/bin/python benchmarks/robot_env_throughput.py [--task reach] [--num-envs 8] [--steps 20000]
Single-threaded on purpose (one CPU core is what a trainer's env loop gets here).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box

import robot.envs as robot_envs  # registers robot/Iiwa14*-v0; sets MUJOCO_GL before mujoco import
from robot.vec_env import make_vec_env


class PlainMujocoIiwa14(MujocoEnv):
    """The same task written the standard Gymnasium way (MujocoEnv handles model and stepping)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, task: str = "reach", **kwargs):
        self.task = robot_envs.TASKS[task]()
        obs_space = Box(-np.inf, np.inf, shape=(self.task.obs_dim,), dtype=np.float32)
        xml = str(robot_envs.ASSETS / self.task.xml_file)
        super().__init__(xml, robot_envs.FRAME_SKIP, observation_space=obs_space, **kwargs)
        self.task.bind(self.model)
        self.action_space = Box(-1.0, 1.0, shape=(robot_envs.N_JOINTS,), dtype=np.float32)

    def step(self, action):
        action = np.clip(action, -1.0, 1.0)
        q = self.data.qpos[: robot_envs.N_JOINTS]
        ctrl = np.clip(q + robot_envs.ACTION_SCALE * action, self.task.ctrl_low, self.task.ctrl_high)
        self.do_simulation(ctrl, self.frame_skip)
        reward, info = self.task.reward(self.data, action)
        return self.task.observation(self.data), reward, False, False, info

    def reset_model(self):
        self.task.reset(self.model, self.data, self.np_random)
        return self.task.observation(self.data)


def steps_per_second(step_fn, batch: int, total_steps: int) -> float:
    """Env steps (summed over the batch) per wall-clock second of `step_fn` calls."""
    calls = max(1, total_steps // batch)
    start = time.perf_counter()
    for _ in range(calls):
        step_fn()
    return calls * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach", choices=sorted(robot_envs.TASKS))
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per variant")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds; the best is kept")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    max_steps = robot_envs.TASKS[args.task]().max_episode_steps

    # 1. Plain MujocoEnv in a Python loop, as most single-env trainers use it.
    env = gym.wrappers.TimeLimit(PlainMujocoIiwa14(args.task), max_episode_steps=max_steps)
    env.reset(seed=0)

    def plain_step():
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 7))
        if terminated or truncated:
            env.reset()

    # 2. Gymnasium's own batching of N MujocoEnvs (auto-reset built in).
    sync = gym.vector.SyncVectorEnv(
        [lambda: gym.wrappers.TimeLimit(PlainMujocoIiwa14(args.task), max_steps) for _ in range(args.num_envs)]
    )
    sync.reset(seed=0)

    # 3. This project's single env through gym.make (env checker + order wrappers).
    single = gym.make(robot_envs.ENV_IDS[args.task])
    single.reset(seed=0)

    def single_step():
        _, _, terminated, truncated, _ = single.step(rng.uniform(-1, 1, 7))
        if terminated or truncated:
            single.reset()

    # 4. This project's vectorised env.
    vec = make_vec_env(args.task, args.num_envs)
    vec.reset(seed=0)

    variants = {
        "mujoco_env": (plain_step, 1),
        "sync_vector": (lambda: sync.step(rng.uniform(-1, 1, (args.num_envs, 7))), args.num_envs),
        "robot_env": (single_step, 1),
        "robot_vec_env": (lambda: vec.step(rng.uniform(-1, 1, (args.num_envs, 7))), args.num_envs),
    }
    # The CPU is shared, so interleave the variants over several rounds and keep
    # each one's best round: load spikes then hit all variants alike.
    results = {name: 0.0 for name in variants}
    for _ in range(args.rounds):
        for name, (step_fn, batch) in variants.items():
            sps = steps_per_second(step_fn, batch, args.steps // args.rounds)
            results[name] = max(results[name], sps)

    print(
        f"task={args.task} num_envs={args.num_envs} frame_skip={robot_envs.FRAME_SKIP} "
        f"steps/variant={args.steps} (best of {args.rounds} interleaved rounds)"
    )
    for name, sps in results.items():
        print(f"  {name:<14} {sps:10.0f} env steps/s")
    print(f"  ratio robot_vec_env / mujoco_env  = {results['robot_vec_env'] / results['mujoco_env']:.2f}")
    print(f"  ratio robot_vec_env / sync_vector = {results['robot_vec_env'] / results['sync_vector']:.2f}")


if __name__ == "__main__":
    main()
