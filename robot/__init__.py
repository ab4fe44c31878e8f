"""Preference-based reward learning for a simulated KUKA iiwa14 arm (MuJoCo).

Needs the ``[robot]`` extra (``pip install 'rlhf-toolkit[robot]'``); without it, importing
the package fails with a message naming the extra."""

import importlib.util

EXTRA = "robot"
REQUIRES = ("mujoco", "gymnasium", "imageio", "imageio_ffmpeg")  # import names of the extra's packages


def _missing(names: tuple[str, ...]) -> list[str]:
    """The import names among ``names`` that cannot be found (found without importing them)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses the name, or a stub module without a spec
            found = False
        if not found:
            missing.append(name)
    return missing


_MISSING = _missing(REQUIRES)
if _MISSING:
    raise ModuleNotFoundError(
        f"the robot stage needs the [{EXTRA}] extra (missing: {', '.join(_MISSING)}): "
        f"pip install 'rlhf-toolkit[{EXTRA}]'", name=_MISSING[0])
