"""The documentation stays true to the code: the generated config pages match the
dataclasses, the README stays short, every relative link resolves, and no tracked file
names an absolute path outside the repository."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT_BYTES = 12_000

# An absolute path into a machine's home or work folders: "/" + one of these + "/", not
# preceded by a word character or a dot (so URLs and relative paths such as runs/home/ pass).
# Spelled in pieces so this file does not match itself.
PRIVATE_ROOTS = ("work", "root", "home", "farm")
ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:" + "|".join(PRIVATE_ROOTS) + r")/")

LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")


def load_generator():
    """tools/ is not a package: load the script as a module."""
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "tools" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def markdown_files() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    lines, in_fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
        elif not in_fence and re.match(r"#{1,6} ", line):
            lines.append(line.lstrip("#").strip())
    for heading in lines:
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, fragment = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(root)}: {target} (no such file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{path.relative_to(root)}: {target} (no such heading)")
    return broken


def tracked_files() -> list[Path]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return [ROOT / name for name in listing.decode().split("\0") if name]


# --- generated config pages ------------------------------------------------------------

def test_config_pages_match_the_dataclasses():
    assert load_generator().stale_pages() == []


@dataclasses.dataclass
class _Example:
    # --- first part ---
    alpha: int = 3  # the trailing comment
    beta: str = dataclasses.field(default="x", metadata={"help": "help | wins"})  # not this
    # --- second part ---
    gamma: dict = dataclasses.field(default_factory=lambda: {"eps": 0.1})
    delta: float | None = None


def test_generator_reads_help_then_comment_and_sections():
    generator = load_generator()
    sources = {s.name: s for s in generator.class_source_fields(_Example)}
    assert [s.name for s in sources.values()] == ["alpha", "beta", "gamma", "delta"]
    assert [s.section for s in sources.values()] == ["first part", "first part", "second part", "second part"]
    fields = {f.name: f for f in dataclasses.fields(_Example)}
    assert generator.describe(fields["alpha"], sources["alpha"], _Example) == "the trailing comment"
    assert generator.describe(fields["beta"], sources["beta"], _Example) == "help \\| wins"
    assert generator.describe(fields["gamma"], sources["gamma"], _Example) == ""
    assert generator.render_default(fields["gamma"], sources["gamma"]) == '`{"eps": 0.1}`'
    assert generator.render_default(fields["delta"], sources["delta"]) == "`null`"
    assert generator.render_type(fields["delta"].type) == "float | None"


def test_check_lists_an_edited_page_and_an_orphan(tmp_path, monkeypatch):
    generator = load_generator()
    monkeypatch.setattr(generator, "CONFIG_DOCS", tmp_path / "docs" / "config")
    monkeypatch.setattr(generator, "CONFIGS", [("robot.config", "RobotConfig", "robot")])
    assert generator.stale_pages() == ["docs/config/robot.md"]  # missing
    generator.write_pages()
    assert generator.stale_pages() == []
    page = tmp_path / "docs" / "config" / "robot.md"
    page.write_text(page.read_text().replace("| `seed` | `int` | `0` |", "| `seed` | `int` | `1` |"))
    (tmp_path / "docs" / "config" / "old.md").write_text("# gone\n")
    assert generator.stale_pages() == ["docs/config/robot.md", "docs/config/old.md"]
    assert generator.main(["--check"]) == 1


# --- README and links ------------------------------------------------------------------

def test_readme_is_at_most_12_kb():
    assert (ROOT / "README.md").stat().st_size <= README_LIMIT_BYTES


def test_every_relative_link_points_at_an_existing_file_and_heading():
    assert [problem for path in markdown_files() for problem in broken_links(path)] == []


def test_link_checker_finds_a_missing_file_and_heading(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title `here`, too\n\n[ok](#title-here-too) [bad](#nowhere) [gone](missing.md)\n"
                    "`[code](not-a-link.md)` ![self](page.md)\n```\n[fenced](also-not.md)\n```\n")
    problems = broken_links(page, root=tmp_path)
    assert problems == ["page.md: #nowhere (no such heading)", "page.md: missing.md (no such file)"]



# --- no absolute paths -----------------------------------------------------------------

def absolute_path_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    if b"\0" in data:  # binary file
        return []
    text = data.decode("utf-8", errors="replace")
    return [f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}"
            for number, line in enumerate(text.splitlines(), 1) if ABSOLUTE_PATH.search(line)]


def test_pattern_finds_absolute_paths_only():
    home = "/" + PRIVATE_ROOTS[2] + "/"
    assert ABSOLUTE_PATH.search(f"see {home}alice/notes.md")
    assert ABSOLUTE_PATH.search(f'"{home}x"')
    assert not ABSOLUTE_PATH.search(f"https://example.com{home}x")
    assert not ABSOLUTE_PATH.search(f"runs{home}x")


def test_no_tracked_file_names_an_absolute_path():
    assert [hit for path in tracked_files() if path.is_file() for hit in absolute_path_lines(path)] == []
