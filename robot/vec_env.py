"""N copies of one iiwa14 task stepped in a single Python object.

    from robot.vec_env import make_vec_env
    envs = make_vec_env("reach", num_envs=8)
    obs, info = envs.reset(seed=0)                 # sub-env i is seeded with seed + i
    obs, reward, terminated, truncated, info = envs.step(actions)   # batched numpy arrays

Why not gymnasium.vector.SyncVectorEnv: that wraps full Env objects (wrappers,
checkers, per-env info dicts). Here all sub-envs share one MjModel and one Task and
only their MjData differ, so a step is a tight loop of `mj_step` calls writing into
batched arrays. Physics dominates (20 substeps of ~5-6 us per env step), so the
speed-up over Gymnasium's MujocoEnv is modest, ~1.1-1.3x on one core (see
benchmarks/robot_env_throughput.py); the batched arrays and the stored states are
the main point.

info holds per-sub-env arrays: "true_reward", the task's own keys ("success",
"distance" or "block_to_goal"/"flange_to_block"), and the auto-reset keys below.

Auto-reset follows Gymnasium's SAME_STEP mode: when a sub-env's episode ends, the
returned observation is already the first one of its next episode, and the last
observation of the finished episode is in info["final_obs"] (rows valid where
info["_final_obs"] is True). Sub-env i started with seed s produces exactly the
transitions of `robot.envs` single env reset with seed s + i.

For rendering segments later, `qpos`, `qvel` and `mocap_pos` hold the current state
of every sub-env (consistent with the last returned observation); the state at the
end of a finished episode is in info["final_qpos"] / info["final_mocap_pos"].
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from robot.envs import ENV_IDS, FRAME_SKIP, N_JOINTS, TASKS, Task, check_action, mujoco


class Iiwa14VecEnv(VectorEnv):
    """Batched iiwa14 task: `num_envs` MjData copies of one MjModel."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, task: Task, num_envs: int):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.task = task
        self.num_envs = int(num_envs)
        self.model = task.load_model()
        task.bind(self.model)
        self.datas = [mujoco.MjData(self.model) for _ in range(self.num_envs)]
        self.dt = self.model.opt.timestep * FRAME_SKIP
        self.max_episode_steps = task.max_episode_steps

        self.single_action_space = spaces.Box(-1.0, 1.0, shape=(N_JOINTS,), dtype=np.float32)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, shape=(task.obs_dim,), dtype=np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._obs = np.zeros((self.num_envs, task.obs_dim), dtype=np.float32)

    # --- state for rendering -------------------------------------------------------
    @property
    def qpos(self) -> np.ndarray:
        """(num_envs, nq) current joint positions (a copy)."""
        return np.stack([d.qpos for d in self.datas])

    @property
    def qvel(self) -> np.ndarray:
        """(num_envs, nv) current joint velocities (a copy)."""
        return np.stack([d.qvel for d in self.datas])

    @property
    def mocap_pos(self) -> np.ndarray:
        """(num_envs, nmocap, 3) current target/goal marker positions (a copy)."""
        return np.stack([d.mocap_pos for d in self.datas])

    # --- Gymnasium vector API ------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]  # same convention as SyncVectorEnv
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed must be an int or a list of {self.num_envs} seeds, got {len(seeds)} seeds")
        for i, s in enumerate(seeds):
            if s is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(s)  # the generator gymnasium.Env.reset would create
            self._reset_one(i)
        return self._obs.copy(), {}

    def _reset_one(self, i: int) -> None:
        self.task.reset(self.model, self.datas[i], self._rngs[i])
        self._steps[i] = 0
        self._obs[i] = self.task.observation(self.datas[i])

    def step(self, actions):
        if self._rngs[0] is None:
            raise RuntimeError("call reset() before step()")
        actions = check_action(actions, batch_shape=(self.num_envs,))
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)  # fixed-length episodes: never terminated
        task_info = {}  # e.g. "success", "distance": one array entry per sub-env
        final_obs = np.zeros_like(self._obs)
        final_qpos = np.zeros((n, self.model.nq))
        final_mocap = np.zeros((n, self.model.nmocap, 3))

        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        for i, data in enumerate(self.datas):
            self.task.step(self.model, data, actions[i])
            rewards[i], step_info = self.task.reward(data, actions[i])
            for key, value in step_info.items():
                task_info.setdefault(key, np.zeros(n, dtype=type(value)))[i] = value
            self._obs[i] = self.task.observation(data)
            if truncated[i]:
                final_obs[i] = self._obs[i]
                final_qpos[i] = data.qpos
                final_mocap[i] = data.mocap_pos
                self._reset_one(i)

        infos = {
            **task_info,
            "true_reward": rewards.copy(),
            "final_obs": final_obs,
            "_final_obs": truncated.copy(),
            "final_qpos": final_qpos,
            "final_mocap_pos": final_mocap,
        }
        return self._obs.copy(), rewards, terminated, truncated, infos


def make_vec_env(task: str, num_envs: int, **task_kwargs) -> Iiwa14VecEnv:
    """Vectorised env by task name ("reach", "push") or registered id ("robot/Iiwa14Reach-v0")."""
    by_id = {env_id: name for name, env_id in ENV_IDS.items()}
    name = by_id.get(task, task)
    if name not in TASKS:
        valid = sorted(TASKS) + sorted(by_id)
        raise ValueError(f"unknown task {task!r}; valid task names: {', '.join(valid)}")
    return Iiwa14VecEnv(TASKS[name](**task_kwargs), num_envs)
