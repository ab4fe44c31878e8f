"""Preference-based reward learning for a simulated KUKA iiwa14 arm (MuJoCo).

Needs the ``[robot]`` extra (``pip install 'rlhf-toolkit[robot]'``); without it, importing
the package fails with a message naming the extra."""

from rlhf.extras import require_extra

require_extra("robot", ("mujoco", "gymnasium", "imageio", "imageio_ffmpeg"), "the robot stage")
