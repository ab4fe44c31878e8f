"""Gymnasium environments for the KUKA LBR iiwa14 arm (MuJoCo): Reach and Push.

    import gymnasium as gym
    import robot.envs  # registers the ids below
    env = gym.make("robot/Iiwa14Reach-v0", render_mode="rgb_array")

Both tasks share one design, chosen for preference learning from short clips
(sources and joint data in docs/robot.md, "The arm model and the tasks"):

* Control at dt = 0.04 s (20 physics steps of 2 ms). The action a in [-1, 1]^7
  moves the position-servo targets relative to the *current* joint angles:
  u = clip(q + 0.05 a, joint range). 0.05 rad per 0.04 s = 1.25 rad/s, below the
  slowest data-sheet joint speed (joint 4, 1.309 rad/s), so the policy cannot ask
  for motions the real arm could not make. In practice the servos (kp/kv = 10/s)
  move joints 1-5 at ~0.42 rad/s under full action, and joints 6-7 at ~0.2 rad/s
  because their 40 N*m torque limit saturates.
* Fixed-length episodes: never terminated, truncated after `max_episode_steps`.
  Early termination would leak reward information to a learned reward model.
* Reset: qpos = home + U(-0.1, 0.1) per joint, qvel = 0; servo targets = qpos.
* `info["true_reward"]` is the ground-truth reward (equal to the returned reward);
  synthetic teachers read it when the agent trains on a learned reward.

The physics and task logic live in small `Task` objects so that the single
environments here and the batched `robot.vec_env.Iiwa14VecEnv` run identical code.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# robot.render sets MUJOCO_GL (default egl) before importing mujoco and turns a
# bad backend setting into an error that names the Debian packages to install.
from robot.render import (DEFAULT_CAMERA, DEFAULT_HEIGHT, DEFAULT_WIDTH, add_target_marker, make_renderer, mujoco,
                          scene_option)

ASSETS = Path(__file__).resolve().parent / "assets"

# --- Shared constants -----------------------------------------------------------------
N_JOINTS = 7
FRAME_SKIP = 20  # physics steps per env step; model timestep 0.002 s -> dt = 0.04 s
ACTION_SCALE = 0.05  # rad of servo-target change per unit action (note section 4)
HOME_QPOS = np.array([0.0, 0.785398, 0.0, -1.5708, 0.0, 0.0, 0.0])  # `home` keyframe
RESET_NOISE = 0.1  # rad, uniform noise added to every joint at reset
SUCCESS_DISTANCE = 0.05  # m

# Reach: target region in front of the robot, fully reachable (note section 8).
REACH_TARGET_LOW = np.array([0.4, -0.3, 0.2])
REACH_TARGET_HIGH = np.array([0.7, 0.3, 0.5])
REACH_EPISODE_STEPS = 50  # 2 s: long enough to reach any target from home, short for PPO

# Push: 5 cm block (iiwa14_push.xml) and goal on the table top (z = 0).
BLOCK_HALF_SIZE = 0.025  # m; block centre height when resting on the table
BLOCK_LOW, BLOCK_HIGH = np.array([0.45, -0.15]), np.array([0.60, 0.15])
GOAL_LOW, GOAL_HIGH = np.array([0.45, -0.25]), np.array([0.65, 0.25])
MIN_BLOCK_GOAL_DISTANCE = 0.10  # m, so a random episode is not already solved
FLANGE_TO_BLOCK_WEIGHT = 0.5  # shaping term: approach the block first
PUSH_EPISODE_STEPS = 100  # 4 s


class Task:
    """Model file, reset distribution, observation and reward of one task.

    Works on a (model, data) pair it does not own, so that many MjData copies of
    one MjModel can share it (see robot/vec_env.py).
    """

    name: str
    xml_file: str
    obs_dim: int
    max_episode_steps: int
    relative_obs: tuple[int, ...]  # observation columns of task-space relative positions

    def load_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_path(str(ASSETS / self.xml_file))

    def bind(self, model: mujoco.MjModel) -> None:
        """Look up ids once per model."""
        self.flange_site = model.site("flange").id
        self.target_mocap = model.body("target").mocapid[0]
        self.ctrl_low, self.ctrl_high = model.actuator_ctrlrange.T.copy()

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        mujoco.mj_resetData(model, data)
        qpos = HOME_QPOS + rng.uniform(-RESET_NOISE, RESET_NOISE, size=N_JOINTS)
        data.qpos[:N_JOINTS] = np.clip(qpos, self.ctrl_low, self.ctrl_high)
        data.ctrl[:] = data.qpos[:N_JOINTS]  # servos hold the initial pose
        self.reset_objects(model, data, rng)
        mujoco.mj_forward(model, data)

    def reset_objects(self, model, data, rng) -> None:
        raise NotImplementedError

    def step(self, model: mujoco.MjModel, data: mujoco.MjData, action: np.ndarray) -> None:
        """Delta joint targets: u = clip(q + 0.05 a, joint range), then dt of physics."""
        data.ctrl[:] = np.clip(data.qpos[:N_JOINTS] + ACTION_SCALE * action, self.ctrl_low, self.ctrl_high)
        mujoco.mj_step(model, data, nstep=FRAME_SKIP)
        # mj_step leaves body/site positions one substep (2 ms) behind qpos; refresh
        # them so observation, reward and a frame rendered from qpos all agree.
        mujoco.mj_kinematics(model, data)

    def observation(self, data: mujoco.MjData) -> np.ndarray:
        raise NotImplementedError

    def reward(self, data: mujoco.MjData, action: np.ndarray) -> tuple[float, dict]:
        """(reward, info) for the state reached after `action`."""
        raise NotImplementedError


class ReachTask(Task):
    """Move the flange to a random target point.

    Observation (23): qpos (7), qvel (7), flange xyz (3), target xyz (3), flange - target (3).
    Reward: -||flange - target|| (m) - action_cost * ||a||^2; success: distance < 5 cm.
    """

    name = "reach"
    xml_file = "iiwa14.xml"
    obs_dim = 23
    # Observation columns a person judging a clip looks at: where the tool is relative to
    # the target (flange - target). The reward model's `relative` feature set.
    relative_obs = (20, 21, 22)

    def __init__(self, max_episode_steps: int = REACH_EPISODE_STEPS, action_cost: float = 0.0):
        self.max_episode_steps = max_episode_steps
        # Off by default: the ground truth should only contain what a human sees in a clip.
        self.action_cost = action_cost

    def reset_objects(self, model, data, rng) -> None:
        data.mocap_pos[self.target_mocap] = rng.uniform(REACH_TARGET_LOW, REACH_TARGET_HIGH)

    def observation(self, data) -> np.ndarray:
        flange = data.site_xpos[self.flange_site]
        target = data.mocap_pos[self.target_mocap]
        return np.concatenate(
            [data.qpos[:N_JOINTS], data.qvel[:N_JOINTS], flange, target, flange - target]
        ).astype(np.float32)

    def reward(self, data, action) -> tuple[float, dict]:
        distance = float(np.linalg.norm(data.site_xpos[self.flange_site] - data.mocap_pos[self.target_mocap]))
        reward = -distance - self.action_cost * float(np.dot(action, action))
        return reward, {"distance": distance, "success": distance < SUCCESS_DISTANCE}


class PushTask(Task):
    """Push a 5 cm block on the table to a goal marker.

    Observation (32): arm qpos (7), arm qvel (7), flange xyz (3), block xyz (3), goal xyz (3),
    flange - block (3), block - goal (3), block linear velocity (3).
    Reward: -||block - goal|| - 0.5 ||flange - block||; success: block within 5 cm of the goal.
    """

    name = "push"
    xml_file = "iiwa14_push.xml"
    obs_dim = 32
    relative_obs = tuple(range(23, 29))  # flange - block, block - goal

    def __init__(self, max_episode_steps: int = PUSH_EPISODE_STEPS):
        self.max_episode_steps = max_episode_steps

    def bind(self, model) -> None:
        super().bind(model)
        block_joint = model.joint("block")
        self.block_qpos = block_joint.qposadr[0]  # 3 position + 4 quaternion entries
        self.block_qvel = block_joint.dofadr[0]  # 3 linear + 3 angular velocity entries
        self.block_body = model.body("block").id

    def reset_objects(self, model, data, rng) -> None:
        block_xy = rng.uniform(BLOCK_LOW, BLOCK_HIGH)
        # Rejection sampling keeps the goal away from the block; it needs ~1.2 draws
        # on average, and a fixed draw budget keeps reset deterministic and bounded.
        for _ in range(100):
            goal_xy = rng.uniform(GOAL_LOW, GOAL_HIGH)
            if np.linalg.norm(goal_xy - block_xy) >= MIN_BLOCK_GOAL_DISTANCE:
                break
        a = self.block_qpos
        data.qpos[a : a + 3] = [*block_xy, BLOCK_HALF_SIZE]
        data.qpos[a + 3 : a + 7] = [1.0, 0.0, 0.0, 0.0]
        data.mocap_pos[self.target_mocap] = [*goal_xy, BLOCK_HALF_SIZE]

    def observation(self, data) -> np.ndarray:
        flange = data.site_xpos[self.flange_site]
        block = data.xpos[self.block_body]
        goal = data.mocap_pos[self.target_mocap]
        block_vel = data.qvel[self.block_qvel : self.block_qvel + 3]
        return np.concatenate(
            [data.qpos[:N_JOINTS], data.qvel[:N_JOINTS], flange, block, goal, flange - block, block - goal, block_vel]
        ).astype(np.float32)

    def reward(self, data, action) -> tuple[float, dict]:
        flange = data.site_xpos[self.flange_site]
        block = data.xpos[self.block_body]
        block_to_goal = float(np.linalg.norm(block - data.mocap_pos[self.target_mocap]))
        flange_to_block = float(np.linalg.norm(flange - block))
        reward = -block_to_goal - FLANGE_TO_BLOCK_WEIGHT * flange_to_block
        info = {"block_to_goal": block_to_goal, "flange_to_block": flange_to_block, "success": block_to_goal < SUCCESS_DISTANCE}
        return reward, info


def check_action(action, batch_shape: tuple = ()) -> np.ndarray:
    """Validate shape and finiteness, clip to [-1, 1]."""
    action = np.asarray(action, dtype=np.float64)
    expected = (*batch_shape, N_JOINTS)
    if action.shape != expected:
        raise ValueError(f"action must have shape {expected}, got {action.shape}")
    if not np.all(np.isfinite(action)):
        raise ValueError("action contains NaN or inf")
    return np.clip(action, -1.0, 1.0)


class Iiwa14Env(gym.Env):
    """One iiwa14 arm running one Task; fixed-length episodes."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": round(1.0 / (FRAME_SKIP * 0.002))}

    def __init__(self, task: Task, render_mode: str | None = None, width: int = DEFAULT_WIDTH,
                 height: int = DEFAULT_HEIGHT, camera: str = DEFAULT_CAMERA):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        steps = task.max_episode_steps
        if not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"max_episode_steps must be a positive integer, got {task.max_episode_steps}")
        self.task = task
        self.model = task.load_model()
        self.data = mujoco.MjData(self.model)
        task.bind(self.model)
        self.dt = self.model.opt.timestep * FRAME_SKIP
        assert self.metadata["render_fps"] == round(1.0 / self.dt), "metadata render_fps must be 1/dt"
        self.max_episode_steps = task.max_episode_steps

        self.action_space = spaces.Box(-1.0, 1.0, shape=(N_JOINTS,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(task.obs_dim,), dtype=np.float32)

        self.render_mode = render_mode
        self.width, self.height, self.camera = width, height, camera
        self._renderer = None
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # (re)seeds self.np_random
        self.task.reset(self.model, self.data, self.np_random)
        self._steps = 0
        return self.task.observation(self.data), {}

    def step(self, action):
        action = check_action(action)
        self.task.step(self.model, self.data, action)
        self._steps += 1
        reward, info = self.task.reward(self.data, action)
        info["true_reward"] = reward
        truncated = self._steps >= self.max_episode_steps
        return self.task.observation(self.data), reward, False, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None  # Gymnasium convention when no render_mode was requested
        if self._renderer is None:
            self._renderer = make_renderer(self.model, self.width, self.height)
        self._renderer.update_scene(self.data, camera=self.camera, scene_option=scene_option())
        add_target_marker(self._renderer.scene, self.model, self.data)  # the same marker as in clips
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class Iiwa14ReachEnv(Iiwa14Env):
    """Reach: move the flange to a random target in x [0.4, 0.7], y [-0.3, 0.3], z [0.2, 0.5] m."""

    def __init__(self, render_mode: str | None = None, max_episode_steps: int = REACH_EPISODE_STEPS,
                 action_cost: float = 0.0, **render_kwargs):
        super().__init__(ReachTask(max_episode_steps, action_cost), render_mode, **render_kwargs)


class Iiwa14PushEnv(Iiwa14Env):
    """Push: move a 5 cm block on the table to within 5 cm of a goal."""

    def __init__(self, render_mode: str | None = None, max_episode_steps: int = PUSH_EPISODE_STEPS, **render_kwargs):
        super().__init__(PushTask(max_episode_steps), render_mode, **render_kwargs)


# Registry used by robot.vec_env and the registration below: short name -> Task class.
TASKS = {"reach": ReachTask, "push": PushTask}
ENV_IDS = {"reach": "robot/Iiwa14Reach-v0", "push": "robot/Iiwa14Push-v0"}

# Episodes are truncated inside the env (max_episode_steps is an env kwarg), so no
# TimeLimit wrapper is registered: gym.make(id, max_episode_steps=...) would only
# change the wrapper, not the env, and the two would disagree.
for _task, _cls in (("reach", Iiwa14ReachEnv), ("push", Iiwa14PushEnv)):
    if ENV_IDS[_task] not in gym.registry:
        gym.register(id=ENV_IDS[_task], entry_point=f"{__name__}:{_cls.__name__}")
