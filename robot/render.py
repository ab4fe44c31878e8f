"""Offscreen rendering of stored robot states and encoding to browser-playable video.

Trajectory collection stores only qpos (plus the target's mocap position) per step;
the few segments that are shown to a labeller are rendered afterwards:

    frames = render_qpos(model, qpos_seq, mocap_pos=target_seq)   # (T, H, W, 3) uint8
    encode_video(frames, "clip.webm", fps=25)                     # VP9, plays in browsers

What a person judging a clip sees: two views side by side in each frame (`front` and
`side` of robot/assets/iiwa14.xml, or Push's closer `push_front` and `push_side`), so that
no distance hides along a line of sight; the target as a bright green ball in a see-through
bubble on a pole down to the table (Reach) or the goal as a green disc of the success radius
on the table (Push); and a faint blue trail of the flange's path so far. Every clip of a
model has the same cameras and size. Nothing shows the reward or a distance as a number:
the person is the judge.

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
DEFAULT_WIDTH, DEFAULT_HEIGHT = 320, 240  # env.render()
CLIP_CAMERAS = ("front", "side")  # views of a Reach clip, side by side (robot/assets/iiwa14.xml)
PUSH_CLIP_CAMERAS = ("push_front", "push_side")  # the same, closer to the table (iiwa14_push.xml)
# Two 320 x 320 views: shown at about this size in a column of the labelling app (half a
# page wide); the Reach target's 14 cm bubble is then ~35 pixels across.
CLIP_WIDTH, CLIP_HEIGHT = 640, 320

# Markers drawn into the scene (visual only: scene geoms, not model geoms, so physics and
# observations cannot change). The model's own 2.5 cm target site is in the hidden group.
TARGET_SITE_GROUP = 2
TARGET_RGBA = np.array([0.1, 0.85, 0.2, 1.0], dtype=np.float32)  # bright opaque green
BUBBLE_RGBA = np.array([0.1, 0.85, 0.2, 0.3], dtype=np.float32)  # the same, see-through
FOOT_RGBA = np.array([0.05, 0.5, 0.1, 1.0], dtype=np.float32)  # pole and foot: darker green
TRAIL_RGBA = np.array([0.1, 0.3, 0.9, 0.45], dtype=np.float32)  # the flange site's blue, faint
# Reach: an opaque core at the target inside a see-through bubble wider than the links at
# the flange (link 7: 4.5 cm, link 6: 6 cm), so a flange on the target sits visibly in the
# bubble instead of hiding the marker.
CORE_RADIUS, BUBBLE_RADIUS = 0.025, 0.07  # m
POLE_WIDTH, FOOT_RADIUS = 0.004, 0.03  # m; the pole and its foot show the ball's height and place
GOAL_RADIUS = 0.05  # m, the Push goal disc: robot.envs.SUCCESS_DISTANCE (block centre within it)
TRAIL_WIDTH = 0.005  # m

# Encoder settings per container. VP9 in WebM is royalty-free and plays in all
# current browsers; H.264 MP4 is the fallback for old Safari. `deadline realtime`
# and `cpu-used 8` make libvpx fast enough for short clips on a CPU. Constant quality
# crf 30 (was 35) keeps the thin pole and trail crisp: 40-70 kB per 1 s 640 x 320 clip.
CODECS = {
    ".webm": dict(
        codec="libvpx-vp9",
        ffmpeg_params=["-b:v", "0", "-crf", "30", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"],
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


def scene_option() -> mujoco.MjvOption:
    """Default visibility, minus the small target site (the markers replace it)."""
    option = mujoco.MjvOption()
    option.sitegroup[TARGET_SITE_GROUP] = 0
    return option


def add_geom(scene: mujoco.MjvScene, geom_type: int, size, pos, rgba) -> mujoco.MjvGeom:
    """Append a decoration geom to a scene filled by `Renderer.update_scene`."""
    if scene.ngeom >= scene.maxgeom:
        raise RuntimeError(f"the scene is full ({scene.maxgeom} geoms)")
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(geom, geom_type, np.asarray(size, dtype=np.float64), np.asarray(pos, dtype=np.float64),
                        np.eye(3).ravel(), rgba)
    scene.ngeom += 1
    return geom


def add_segment(scene: mujoco.MjvScene, start, end, width: float, rgba) -> None:
    """A capsule from start to end (a line with thickness in metres)."""
    geom = add_geom(scene, mujoco.mjtGeom.mjGEOM_CAPSULE, np.zeros(3), np.zeros(3), rgba)
    mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, width, np.asarray(start, dtype=np.float64),
                         np.asarray(end, dtype=np.float64))


def goal_on_table(model: mujoco.MjModel) -> bool:
    """Push (a model with a `block`) has its goal on the table; Reach has its target in the air."""
    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "block") >= 0


def clip_cameras(model: mujoco.MjModel) -> tuple[str, ...]:
    return PUSH_CLIP_CAMERAS if goal_on_table(model) else CLIP_CAMERAS


def add_target_marker(scene: mujoco.MjvScene, model: mujoco.MjModel, data: mujoco.MjData) -> None:
    """Reach: a ball in a bubble on a thin pole down to a foot on the table (its height and
    place on the table are visible in any view). Push: a flat disc of the success radius on
    the table."""
    x, y, z = data.mocap_pos[0]
    if goal_on_table(model):
        add_geom(scene, mujoco.mjtGeom.mjGEOM_CYLINDER, [GOAL_RADIUS, 0, 0.001], [x, y, 0.001], TARGET_RGBA)
        return
    add_geom(scene, mujoco.mjtGeom.mjGEOM_SPHERE, [CORE_RADIUS, 0, 0], [x, y, z], TARGET_RGBA)
    add_geom(scene, mujoco.mjtGeom.mjGEOM_SPHERE, [BUBBLE_RADIUS, 0, 0], [x, y, z], BUBBLE_RGBA)
    add_segment(scene, [x, y, 0], [x, y, z], POLE_WIDTH, FOOT_RGBA)
    add_geom(scene, mujoco.mjtGeom.mjGEOM_CYLINDER, [FOOT_RADIUS, 0, 0.001], [x, y, 0.001], FOOT_RGBA)


def add_trail(scene: mujoco.MjvScene, points: np.ndarray) -> None:
    """The path through `points` (K, 3) as faint connected segments."""
    for start, end in zip(points[:-1], points[1:]):
        add_segment(scene, start, end, TRAIL_WIDTH, TRAIL_RGBA)


def render_qpos(
    model: mujoco.MjModel,
    qpos: np.ndarray,
    mocap_pos: np.ndarray | None = None,
    width: int = CLIP_WIDTH,
    height: int = CLIP_HEIGHT,
    cameras: str | tuple[str, ...] | None = None,
) -> np.ndarray:
    """Render one frame per stored state: the views of `cameras` (default: the task's
    `clip_cameras`) side by side, each width / len(cameras) x height, with the target marker
    and the flange's trail so far.

    qpos:      (T, model.nq) joint positions.
    mocap_pos: optional (model.nmocap, 3) fixed for the clip, or (T, model.nmocap, 3),
               e.g. the reach target, which is not part of qpos.
    Returns (T, height, width, 3) uint8 frames.
    """
    if cameras is None:
        cameras = clip_cameras(model)
    cameras = (cameras,) if isinstance(cameras, str) else tuple(cameras)
    if not cameras or width % len(cameras):
        raise ValueError(f"width {width} must split evenly into the {len(cameras)} views {cameras}")
    view_width = width // len(cameras)
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
    renderer = make_renderer(model, view_width, height)
    # No shadows: their extra pass is ~40% of a frame on a CPU, and the second view and the
    # target's pole already show heights. Two views cost about what one shadowed view did.
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    option = scene_option()
    flange = model.site("flange").id
    trail = np.empty((len(qpos), 3))
    frames = np.empty((len(qpos), height, width, 3), dtype=np.uint8)
    try:
        for t, q in enumerate(qpos):
            data.qpos[:] = q
            if mocap_pos is not None:
                data.mocap_pos[:] = mocap_pos[t]
            mujoco.mj_forward(model, data)  # positions of all bodies from qpos; no time step
            trail[t] = data.site_xpos[flange]
            for k, camera in enumerate(cameras):
                renderer.update_scene(data, camera=camera, scene_option=option)
                add_target_marker(renderer.scene, model, data)
                add_trail(renderer.scene, trail[: t + 1])
                frames[t, :, k * view_width : (k + 1) * view_width] = renderer.render()
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
    width: int = CLIP_WIDTH,
    height: int = CLIP_HEIGHT,
    cameras: str | tuple[str, ...] | None = None,
) -> Path:
    """Render stored states and encode them in one call (fps = 1 / env dt plays in real time)."""
    frames = render_qpos(model, qpos, mocap_pos=mocap_pos, width=width, height=height, cameras=cameras)
    return encode_video(frames, path, fps)
