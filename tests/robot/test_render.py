"""Offscreen rendering of stored states, video encoding and backend errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from rlhf.config import ConfigError
from robot.clips import ClipsConfig, write_clips
from robot.envs import HOME_QPOS, Iiwa14PushEnv, Iiwa14ReachEnv
from robot.render import CLIP_CAMERAS, encode_video, make_renderer, mujoco, render_qpos, write_clip
from robot.segments import Segments
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


def green_pixels(image):
    """Pixels of the bright target green (0.1, 0.85, 0.2) under the scene's lights."""
    r, g, b = np.moveaxis(image.astype(int), -1, 0)
    return int(((g > 150) & (r < 100) & (b < 100)).sum())


def render_before(model, qpos, mocap_pos):
    """What a clip showed before: the `overview` camera at 320 x 240 as a bare mujoco.Renderer
    draws it (the model's own 2.5 cm translucent target site, no markers)."""
    data = mujoco.MjData(model)
    data.qpos[:], data.mocap_pos[:] = qpos, mocap_pos
    mujoco.mj_forward(model, data)
    renderer = make_renderer(model, 320, 240)
    renderer.update_scene(data, camera="overview")
    frame = renderer.render()
    renderer.close()
    return frame


def test_two_views_side_by_side():
    model = Iiwa14ReachEnv().model
    qpos, target = HOME_QPOS[None], np.array([[0.55, -0.2, 0.45]])
    frame = render_qpos(model, qpos, mocap_pos=target, width=WIDTH, height=HEIGHT)[0]
    assert frame.shape == (HEIGHT, WIDTH, 3)
    for k, camera in enumerate(CLIP_CAMERAS):  # each half is one camera's view at half the width
        view = render_qpos(model, qpos, mocap_pos=target, width=WIDTH // 2, height=HEIGHT, cameras=camera)[0]
        np.testing.assert_array_equal(frame[:, k * WIDTH // 2 : (k + 1) * WIDTH // 2], view)
    with pytest.raises(ValueError, match="split evenly"):
        render_qpos(model, qpos, width=WIDTH + 1, height=HEIGHT)


def test_target_marker_is_plainly_visible():
    """The target covers many times the pixels it did in a clip before, at the default sizes
    (measured: Reach 818 against 67 pixels here, Push 991 against 36)."""
    model = Iiwa14ReachEnv().model
    qpos, target = HOME_QPOS, np.array([[0.55, -0.2, 0.45]])  # in the air, clear of the arm
    clip = render_qpos(model, qpos[None], mocap_pos=target)[0]
    assert green_pixels(clip) > 5 * green_pixels(render_before(model, qpos, target)) > 0
    # Push: the goal is a disc on the table, the red block apart from it.
    env = Iiwa14PushEnv()
    env.reset(seed=0)
    clip = render_qpos(env.model, env.data.qpos[None], mocap_pos=env.data.mocap_pos)[0]
    assert green_pixels(clip) > 10 * green_pixels(render_before(env.model, env.data.qpos, env.data.mocap_pos)) > 0
    r, g, b = np.moveaxis(clip.astype(int), -1, 0)
    assert ((r > 120) & (g < 60) & (b < 60)).sum() > 50  # the block


def test_trail_draws_the_flange_path():
    """Joint 1 swings the arm sideways; frame t shows the flange's path up to t as faint blue
    segments, nothing else: the difference to the last state rendered alone is bluish, grows
    along the clip and is in both views."""
    model = Iiwa14ReachEnv().model
    qpos = np.repeat(HOME_QPOS[None], 10, axis=0)
    qpos[:, 0] = np.linspace(-0.6, 0.6, 10)
    target = np.array([[0.4, 0.3, 0.5]])
    clip = render_qpos(model, qpos, mocap_pos=target, width=WIDTH, height=HEIGHT)
    alone = [render_qpos(model, qpos[t : t + 1], mocap_pos=target, width=WIDTH, height=HEIGHT)[0] for t in (0, 4, 9)]
    np.testing.assert_array_equal(clip[0], alone[0])  # one point: no trail yet
    trail = [np.abs(clip[t].astype(int) - frame.astype(int)).sum(axis=-1) > 30 for t, frame in zip((4, 9), alone[1:])]
    assert 20 < trail[0].sum() < trail[1].sum()
    r, _, b = np.moveaxis(clip[9].astype(int), -1, 0)
    assert (b > r + 20)[trail[1]].mean() > 0.5
    assert trail[1][:, : WIDTH // 2].sum() > 20 and trail[1][:, WIDTH // 2 :].sum() > 20


def test_markers_leave_physics_alone():
    """The markers are scene geoms, not model geoms: the models have main's sizes and an env
    step gives main's observation and reward (numbers from the main branch before the change)."""
    expected = {
        Iiwa14ReachEnv: ((7, 7, 10, 7, 9, 2, 1), [0.043088604, -0.0119687505, 0.64864564, 0.23849681, 0.49975285, -0.261256],
                         -0.46013077419664467),
        Iiwa14PushEnv: ((14, 13, 11, 8, 10, 2, 1), [0.043088604, -0.0119687505, 0.64864564, 0.23849681, 0.02488805,
                                                     0.000152286389], -0.45113878232286575),
    }
    for env_cls, (sizes, obs_values, reward) in expected.items():
        env = env_cls()
        env.reset(seed=5)
        for action in np.linspace(-1, 1, 21).reshape(3, 7):
            obs, step_reward, *_ = env.step(action)
        m = env.model
        assert (m.nq, m.nv, m.nbody, m.njnt, m.ngeom, m.nsite, m.nmocap) == sizes
        np.testing.assert_allclose(obs[[0, 6, 14, 16, 19, -1]], obs_values, rtol=1e-6)
        np.testing.assert_allclose(step_reward, reward, rtol=1e-12)


@pytest.mark.slow
def test_both_clips_of_a_pair_have_the_same_views_and_length(tmp_path, reach_segment):
    """robot.clips renders every clip with the same cameras, size and frame count."""
    model, qpos, mocap = reach_segment
    half = len(qpos) // 2
    segments = Segments(ids=np.array(["s0", "s1"]), obs=np.zeros((2, half, 23), np.float32),
                        actions=np.zeros((2, half, 7), np.float32), true_rewards=np.zeros((2, half)),
                        qpos=np.stack([qpos[:half], qpos[half : 2 * half]]), qvel=np.zeros((2, half, 7)),
                        mocap_pos=np.stack([mocap[:half], mocap[half : 2 * half]]), source_round=np.zeros(2, np.int64))
    run = tmp_path / "run"
    segments.save(run / "segments.npz")
    torch.save({"config": {"task": "reach"}, "ensemble": None}, run / "checkpoint.pt")
    manifest = write_clips(run, 1, tmp_path / "clips", width=WIDTH, height=HEIGHT, progress=False)
    pair = json.loads(manifest.read_text())["pairs"][0]
    clips = [read_video(tmp_path / "clips" / pair[key])[0] for key in ("clip_a", "clip_b")]
    assert clips[0].shape == clips[1].shape == (half, HEIGHT, WIDTH, 3)
    for clip, index in zip(clips, [int(pair[key][1]) for key in ("segment_a", "segment_b")]):
        rendered = render_qpos(model, segments.qpos[index], mocap_pos=segments.mocap_pos[index], width=WIDTH,
                               height=HEIGHT)
        assert np.abs(clip.astype(int) - rendered.astype(int)).mean() < 8  # the default views, lossy


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
    with pytest.raises(ConfigError, match="^width: an even number of pixels >= 2, got 63$"):
        ClipsConfig(run="run", out="clips", width=63)


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
