"""Scripted controllers for the iiwa14 tasks: damped least-squares steps of the flange
towards an aim point.

No learner uses them. They show that a task can be done within its episode length (the
Push test in tests/robot/test_envs.py) and drive the example clips of the docs
(tools/robot_clip_pair.py).

    env = Iiwa14PushEnv()
    env.reset(seed=0)
    pusher = ScriptedPusher(env.task)
    for _ in range(env.task.max_episode_steps):
        _, _, _, _, info = env.step(pusher(env.model, env.data))
"""

from __future__ import annotations

import numpy as np

from robot.envs import ACTION_SCALE, N_JOINTS, PushTask
from robot.render import mujoco


def flange_action(model, data, aim: np.ndarray, gain: float = 1.0, damping: float = 1e-3) -> np.ndarray:
    """The action that moves the flange `gain` of the way to `aim` (m, world frame) in one step.

    Damped least squares (Wampler 1986): dq = J^T (J J^T + damping I)^-1 (aim - flange), with
    J the flange's 3 x 7 position Jacobian; the action is dq in units of the env's 0.05 rad
    per step, clipped to [-1, 1].
    """
    flange = model.site("flange").id
    jacobian = np.zeros((3, model.nv))
    mujoco.mj_jacSite(model, data, jacobian, None, flange)
    arm = jacobian[:, :N_JOINTS]
    error = aim - data.site_xpos[flange]
    joint_step = arm.T @ np.linalg.solve(arm @ arm.T + damping * np.eye(3), error)
    return np.clip(gain * joint_step / ACTION_SCALE, -1.0, 1.0)


class ScriptedPusher:
    """Push the block onto the goal in four phases, re-planned from the state at every step.

    1. Move above a point 8 cm behind the block on the goal-block line.
    2. Lower the flange there to 3 cm above the table.
    3. Push: aim the flange 5.5 cm short of the goal (where it touches a block resting on
       the goal), at most 2 cm per step so the block does not slide past.
    4. Once the block is within 3.5 cm of the goal, lift the flange back and away.
    """

    BEHIND = 0.08  # m behind the block where the push starts
    HEIGHT = 0.03  # m, flange height while pushing
    CONTACT = 0.055  # m from block centre to flange when they touch
    MAX_PUSH_STEP = 0.02  # m of flange aim per step while pushing
    RELEASE = 0.035  # m block-goal distance at which the pusher lets go

    def __init__(self, task: PushTask):
        self.task = task
        self.phase = 0
        self.hold = None

    def __call__(self, model, data) -> np.ndarray:
        task = self.task
        flange = data.site_xpos[task.flange_site]
        block, goal = data.xpos[task.block_body][:2], data.mocap_pos[task.target_mocap][:2]
        direction = (goal - block) / (np.linalg.norm(goal - block) + 1e-9)
        start = np.array([*(block - self.BEHIND * direction), self.HEIGHT])
        if self.phase == 0:
            aim = start + [0.0, 0.0, 0.08]
            if np.linalg.norm(flange[:2] - start[:2]) < 0.015:
                self.phase = 1
        if self.phase == 1:
            aim = start
            if flange[2] < self.HEIGHT + 0.01:
                self.phase = 2
        if self.phase == 2:
            aim = np.array([*(goal - self.CONTACT * direction), self.HEIGHT])
            error = aim - flange
            aim = flange + error * min(1.0, self.MAX_PUSH_STEP / (np.linalg.norm(error) + 1e-9))
            if np.linalg.norm(goal - block) < self.RELEASE:
                self.phase = 3
        if self.phase == 3:
            if self.hold is None:
                self.hold = flange - 0.06 * np.array([*direction, 0.0]) + [0.0, 0.0, 0.06]
            aim = self.hold
        return flange_action(model, data, aim)
