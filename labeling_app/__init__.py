"""Gradio app where people compare or rank model outputs and robot clips.

Needs the ``[app]`` extra (``pip install 'rlhf-toolkit[app]'``); without it, importing the
package fails with a message naming the extra instead of a bare ModuleNotFoundError deep
inside the app."""

import importlib.util

EXTRA = "app"
REQUIRES = ("gradio", "httpx", "sklearn", "statsmodels", "krippendorff")  # import names of the extra's packages


def _missing(names: tuple[str, ...]) -> list[str]:
    """The import names among ``names`` that cannot be found (without importing them: gradio
    takes seconds to import, and most of the package does not need it)."""
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
        f"the labelling app needs the [{EXTRA}] extra (missing: {', '.join(_MISSING)}): "
        f"pip install 'rlhf-toolkit[{EXTRA}]'", name=_MISSING[0])
