"""Writes docs/img/robot_clip_pair.png: the last frames of a Reach clip pair as the labelling
app shows them (clip A left, clip B right), rendered by robot.render.

Both clips are 1 s (25 steps) of the same episode start, driven by a scripted controller
(robot.scripted.flange_action: damped least-squares steps of the flange towards an aim
point): A aims at the target, B at a point 10 cm beside and 6 cm below it.
Run: .venv/bin/python tools/robot_clip_pair.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

from robot.envs import Iiwa14ReachEnv
from robot.render import render_qpos
from robot.scripted import flange_action

SEED, STEPS = 4, 25
MISS = np.array([-0.06, 0.08, -0.06])  # B's aim point relative to the target (m)
OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "robot_clip_pair.png"


def scripted_clip(offset: np.ndarray) -> np.ndarray:
    env = Iiwa14ReachEnv()
    env.reset(seed=SEED)
    model, data = env.model, env.data
    qpos, mocap = [], []
    for _ in range(STEPS):
        env.step(flange_action(model, data, data.mocap_pos[0] + offset, gain=0.3))
        qpos.append(data.qpos.copy())
        mocap.append(data.mocap_pos.copy())
    return render_qpos(model, np.array(qpos), mocap_pos=np.array(mocap))[-1]


frames = [scripted_clip(np.zeros(3)), scripted_clip(MISS)]
gap = np.full((frames[0].shape[0], 12, 3), 255, dtype=np.uint8)  # the app's gap between the clips
image = Image.fromarray(np.concatenate([frames[0], gap, frames[1]], axis=1))
image.save(OUT, optimize=True)
print(f"wrote {OUT} ({OUT.stat().st_size // 1024} kB)")
