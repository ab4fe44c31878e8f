"""Optional parts of the package: a stage that needs an extra (``pip install
'rlhf-toolkit[app]'``) says so on import, instead of a bare ModuleNotFoundError deep inside
it. The extras are declared in pyproject.toml."""

from __future__ import annotations

import importlib.util


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """The import names among ``names`` that cannot be found (looked up without importing
    them: gradio takes seconds to import, and most of a stage does not need it)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses the name, or a stub module without a spec
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(extra: str, import_names: tuple[str, ...], what: str) -> None:
    """Raise ModuleNotFoundError naming ``extra`` when one of ``import_names`` is missing;
    ``what`` is the stage in the message ("the labelling app")."""
    missing = missing_modules(import_names)
    if missing:
        raise ModuleNotFoundError(f"{what} needs the [{extra}] extra (missing: {', '.join(missing)}): "
                                  f"pip install 'rlhf-toolkit[{extra}]'", name=missing[0])
