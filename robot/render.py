"""Offscreen rendering of stored robot states and encoding to browser-playable video.

Trajectory collection stores only qpos (plus the target's mocap position) per step;
the few segments that are shown to a labeller are rendered afterwards:

    frames = render_qpos(model, qpos_seq, mocap_pos=target_seq)   # (T, H, W, 3) uint8
    encode_video(frames, "clip.webm", fps=25)                     # VP9, plays in browsers

Backend: MuJoCo picks its OpenGL backend from the MUJOCO_GL environment variable
when it is first imported. Without a display we want EGL (Mesa software rendering
works on CPU-only machines), so this module sets MUJOCO_GL=egl when it is unset,
*before* importing mujoco. Debian packages: libegl1 libegl-mesa0 libgl1-mesa-dri
(or libosmesa6 with MUJOCO_GL=osmesa).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

# MUJOCO_GL is read once, when mujoco is first imported, so the default only helps
# if nothing imported mujoco before us. Remember which case we are in for errors.
_MUJOCO_IMPORTED_EARLIER = "mujoco" in sys.modules
if not _MUJOCO_IMPORTED_EARLIER:
    os.environ.setdefault("MUJOCO_GL", "egl")
_GL_WHEN_IMPORTED = os.environ.get("MUJOCO_GL")  # None: mujoco came first without it (-> glfw)

BACKEND_HELP = (
    "Offscreen rendering needs an OpenGL backend. On Debian/Ubuntu install "
    "`apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` and use MUJOCO_GL=egl "
    "(the default here), or `apt-get install libosmesa6` and set MUJOCO_GL=osmesa. "
    "MUJOCO_GL must be one of egl, osmesa, glfw and be set before mujoco is imported."
)


class RenderBackendError(RuntimeError):
    """No usable OpenGL backend for offscreen rendering."""


try:
    import mujoco
except RuntimeError as err:  # mujoco rejects an unknown MUJOCO_GL value at import time
    raise RenderBackendError(
        f"importing mujoco failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: {err}. {BACKEND_HELP}"
    ) from err

DEFAULT_CAMERA = "overview"  # fixed camera defined in robot/assets/iiwa14.xml
DEFAULT_WIDTH, DEFAULT_HEIGHT = 320, 240

# Encoder settings per container. VP9 in WebM is royalty-free and plays in all
# current browsers; H.264 MP4 is the fallback for old Safari. `deadline realtime`
# and `cpu-used 8` make libvpx fast enough for short clips on a CPU.
CODECS = {
    ".webm": dict(
        codec="libvpx-vp9",
        ffmpeg_params=["-b:v", "0", "-crf", "35", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"],
    ),
    ".mp4": dict(codec="libx264", ffmpeg_params=["-preset", "veryfast", "-crf", "23", "-movflags", "+faststart"]),
}


def make_renderer(model: mujoco.MjModel, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> mujoco.Renderer:
    """mujoco.Renderer that fails with an installation hint instead of a GL traceback."""
    if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
        raise ValueError(
            f"width x height = {width} x {height} exceeds the model's offscreen buffer "
            f"{model.vis.global_.offwidth} x {model.vis.global_.offheight} (<visual><global offwidth/offheight>)"
        )
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as err:  # ImportError (missing libEGL/libOSMesa), mujoco.FatalError, GL errors
        if _GL_WHEN_IMPORTED is None:
            backend = (
                "mujoco was imported before robot.render, so its MUJOCO_GL default (egl) came too late; "
                "import robot.envs / robot.render first or export MUJOCO_GL"
            )
        else:
            backend = f"MUJOCO_GL={_GL_WHEN_IMPORTED!r}"
        raise RenderBackendError(f"could not create an offscreen renderer ({backend}): {err}. {BACKEND_HELP}") from err


def render_qpos(
    model: mujoco.MjModel,
    qpos: np.ndarray,
    mocap_pos: np.ndarray | None = None,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    camera: str | int = DEFAULT_CAMERA,
) -> np.ndarray:
    """Render one frame per stored state.

    qpos:      (T, model.nq) joint positions.
    mocap_pos: optional (model.nmocap, 3) fixed for the clip, or (T, model.nmocap, 3),
               e.g. the reach target, which is not part of qpos.
    Returns (T, height, width, 3) uint8 frames.
    """
    qpos = np.asarray(qpos, dtype=np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != model.nq:
        raise ValueError(f"qpos must have shape (T, {model.nq}), got {qpos.shape}")
    if mocap_pos is not None:
        mocap_pos = np.asarray(mocap_pos, dtype=np.float64)
        if mocap_pos.shape == (model.nmocap, 3):
            mocap_pos = np.broadcast_to(mocap_pos, (len(qpos), model.nmocap, 3))
        if mocap_pos.shape != (len(qpos), model.nmocap, 3):
            raise ValueError(
                f"mocap_pos must have shape ({model.nmocap}, 3) or ({len(qpos)}, {model.nmocap}, 3), got {mocap_pos.shape}"
            )

    data = mujoco.MjData(model)
    renderer = make_renderer(model, width, height)
    frames = np.empty((len(qpos), height, width, 3), dtype=np.uint8)
    try:
        for t, q in enumerate(qpos):
            data.qpos[:] = q
            if mocap_pos is not None:
                data.mocap_pos[:] = mocap_pos[t]
            mujoco.mj_forward(model, data)  # positions of all bodies from qpos; no time step
            renderer.update_scene(data, camera=camera)
            frames[t] = renderer.render()
    finally:
        renderer.close()  # explicit close: OSMesa prints a ctypes traceback from __del__ otherwise
    return frames


def encode_video(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """Write (T, H, W, 3) uint8 frames to `path`; the suffix picks the codec (.webm VP9 or .mp4 H.264)."""
    import imageio.v2 as imageio  # imageio-ffmpeg ships its own ffmpeg binary

    path = Path(path)
    if path.suffix not in CODECS:
        raise ValueError(f"video path must end in one of {sorted(CODECS)}, got {str(path)!r}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:  # yuv420p halves the chroma resolution
        raise ValueError(f"frame width and height must be even for yuv420p video, got {width} x {height}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        path,
        format="FFMPEG",
        fps=fps,
        pixelformat="yuv420p",  # the pixel format browsers decode
        macro_block_size=2,  # keep the exact size instead of padding to multiples of 16
        quality=None,  # rate control comes from ffmpeg_params
        **CODECS[path.suffix],
    )
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()
    return path


def write_clip(
    model: mujoco.MjModel,
    qpos: np.ndarray,
    path: str | Path,
    fps: float,
    mocap_pos: np.ndarray | None = None,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    camera: str | int = DEFAULT_CAMERA,
) -> Path:
    """Render stored states and encode them in one call (fps = 1 / env dt plays in real time)."""
    frames = render_qpos(model, qpos, mocap_pos=mocap_pos, width=width, height=height, camera=camera)
    return encode_video(frames, path, fps)
