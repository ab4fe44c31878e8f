"""Offscreen rendering of stored states, video encoding and backend errors."""

import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from robot.envs import HOME_QPOS, Iiwa14PushEnv, Iiwa14ReachEnv
from robot.render import encode_video, render_qpos, write_clip
from robot.vec_env import make_vec_env

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 160, 120  # small clips keep software rendering fast


def read_video(path):
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return np.stack([frame for frame in reader.iter_data()]), reader.get_meta_data()
    finally:
        reader.close()


@pytest.fixture(scope="module")
def reach_segment():
    """A 12-step segment from the vectorised env, stored the way a trajectory buffer would."""
    vec = make_vec_env("reach", 2)
    vec.reset(seed=3)
    qpos, mocap = [vec.qpos[0]], [vec.mocap_pos[0]]
    rng = np.random.default_rng(0)
    for _ in range(11):
        vec.step(rng.uniform(-1, 1, (2, 7)))
        qpos.append(vec.qpos[0])
        mocap.append(vec.mocap_pos[0])
    return vec.model, np.array(qpos), np.array(mocap)


def test_render_qpos_frames(reach_segment):
    model, qpos, mocap = reach_segment
    frames = render_qpos(model, qpos, mocap_pos=mocap, width=WIDTH, height=HEIGHT)
    assert frames.shape == (len(qpos), HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # not a blank image
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 0.1  # the arm moved
    # Same state -> same image (rendering is a pure function of qpos and the target).
    again = render_qpos(model, qpos[:1], mocap_pos=mocap[0], width=WIDTH, height=HEIGHT)
    np.testing.assert_array_equal(again[0], frames[0])


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".webm", ".mp4"])
def test_clip_encodes_and_decodes(reach_segment, tmp_path, suffix):
    model, qpos, mocap = reach_segment
    path = write_clip(model, qpos, tmp_path / f"clip{suffix}", fps=25, mocap_pos=mocap, width=WIDTH, height=HEIGHT)
    assert path.stat().st_size > 1000
    decoded, meta = read_video(path)
    assert decoded.shape == (len(qpos), HEIGHT, WIDTH, 3)
    assert meta["codec"] == {".webm": "vp9", ".mp4": "h264"}[suffix]
    np.testing.assert_allclose(meta["fps"], 25)
    original = render_qpos(model, qpos, mocap_pos=mocap, width=WIDTH, height=HEIGHT)
    assert np.abs(decoded.astype(int) - original.astype(int)).mean() < 8  # lossy, but the same pictures


def test_env_render_rgb_array():
    for env_cls in (Iiwa14ReachEnv, Iiwa14PushEnv):
        env = env_cls(render_mode="rgb_array", width=WIDTH, height=HEIGHT)
        env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 and frame.std() > 10
        assert env.metadata["render_fps"] == round(1 / env.dt) == 25
        env.close()
    assert Iiwa14ReachEnv().render() is None  # no render_mode requested


def test_bad_render_inputs_raise(reach_segment, tmp_path):
    model, qpos, _ = reach_segment
    with pytest.raises(ValueError, match=r"qpos must have shape \(T, 7\)"):
        render_qpos(model, qpos[:, :6])
    with pytest.raises(ValueError, match="mocap_pos"):
        render_qpos(model, qpos, mocap_pos=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="offscreen buffer"):
        render_qpos(model, qpos[:1], width=4000, height=3000)
    frames = np.zeros((3, 48, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\.mp4.*\.webm"):
        encode_video(frames, tmp_path / "clip.gif", fps=25)
    with pytest.raises(ValueError, match="even"):
        encode_video(np.zeros((3, 47, 64, 3), dtype=np.uint8), tmp_path / "clip.webm", fps=25)
    with pytest.raises(ValueError, match="uint8"):
        encode_video(frames.astype(float), tmp_path / "clip.webm", fps=25)


def run_python(code, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)


RENDER_ONE_FRAME = f"""
import numpy as np
from robot.envs import Iiwa14ReachEnv
from robot.render import render_qpos
env = Iiwa14ReachEnv()
print(render_qpos(env.model, np.array([{list(HOME_QPOS)}]), width=64, height=48).std())
"""


def test_bogus_backend_gives_install_hint():
    result = run_python("import robot.envs", MUJOCO_GL="bogus")
    assert result.returncode != 0
    assert "RenderBackendError" in result.stderr and "MUJOCO_GL='bogus'" in result.stderr
    for package in ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libosmesa6"):
        assert package in result.stderr


def test_unloadable_backend_gives_install_hint():
    # PyOpenGL pinned to another platform makes the EGL backend fail to load, as a missing libEGL does.
    result = run_python(RENDER_ONE_FRAME, MUJOCO_GL="egl", PYOPENGL_PLATFORM="osmesa")
    assert result.returncode != 0
    assert "could not create an offscreen renderer (MUJOCO_GL='egl')" in result.stderr
    assert "libegl1 libegl-mesa0 libgl1-mesa-dri" in result.stderr


@pytest.mark.parametrize("backend", [None, "osmesa"])
def test_backends_render_in_fresh_process(backend):
    """Default (MUJOCO_GL unset -> egl) and osmesa both render on a CPU-only machine."""
    overrides = {} if backend is None else {"MUJOCO_GL": backend}
    result = run_python(RENDER_ONE_FRAME, **overrides)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) > 10
