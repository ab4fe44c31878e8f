"""Render time per clip: robot.render.render_qpos now against the version of an earlier commit
(its robot/render.py and MJCF files read with `git show`), interleaved in one process.

    .venv/bin/python benchmarks/clip_render_time.py --before 8c37b18 --rounds 7

8c37b18 is the last commit with the old clips: one 320 x 240 `overview` view with shadows and
the small target site. Now: two views side by side (640 x 320 by default), the target marker
and the flange trail, no shadows. Each task renders the same 25-step (1 s) random-action
segment (also at 320 x 160: is the cost per view or per pixel?); the median over rounds is
reported, and the ratio to the old renderer. Software rendering (Mesa on the CPU) is the
live loop's bottleneck when it sends clips.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import robot.render as render  # sets MUJOCO_GL before mujoco is imported
from robot.render import mujoco
from robot.vec_env import make_vec_env

ROOT = Path(__file__).resolve().parent.parent
XML = {"reach": "iiwa14.xml", "push": "iiwa14_push.xml"}


def git_show(revision: str, path: str, out: Path) -> Path:
    out.write_bytes(subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True,
                                   capture_output=True).stdout)
    return out


def segment(task: str, steps: int = 25):
    envs = make_vec_env(task, 1)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    qpos, mocap = [], []
    for _ in range(steps):
        envs.step(rng.uniform(-1, 1, (1, 7)))
        qpos.append(envs.qpos[0])
        mocap.append(envs.mocap_pos[0])
    return envs.model, np.array(qpos), np.array(mocap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="8c37b18", help="git revision of the old robot/render.py and MJCF files")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = importlib.util.spec_from_file_location("render_before",
                                                      git_show(args.before, "robot/render.py", tmp / "render.py"))
        before = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(before)
        for xml in XML.values():
            git_show(args.before, f"robot/assets/{xml}", tmp / xml)
        variants = {}
        for task, xml in XML.items():
            model, qpos, mocap = segment(task)
            old_model = mujoco.MjModel.from_xml_path(str(tmp / xml))
            variants[task, "before"] = lambda m=old_model, q=qpos, p=mocap: before.render_qpos(m, q, mocap_pos=p)
            variants[task, "now"] = lambda m=model, q=qpos, p=mocap: render.render_qpos(m, q, mocap_pos=p)
            variants[task, "now 320 x 160"] = lambda m=model, q=qpos, p=mocap: render.render_qpos(
                m, q, mocap_pos=p, width=320, height=160)  # per view or per pixel?
    seconds = {key: [] for key in variants}
    for run in variants.values():  # warm-up: GL context, shaders
        run()
    for _ in range(args.rounds):
        for key, run in variants.items():
            start = time.perf_counter()
            run()
            seconds[key].append(time.perf_counter() - start)
    for (task, version), values in seconds.items():
        median = np.median(values)
        print(f"{task:5s} {version:13s} {median:.2f} s per clip ({len(values)} rounds), "
              f"ratio {median / np.median(seconds[task, 'before']):.2f}")


if __name__ == "__main__":
    main()
