"""Write the config reference pages ``docs/config/<page>.md`` from the config dataclasses.

    python tools/gen_config_docs.py          # (re)write every page
    python tools/gen_config_docs.py --check  # exit 1 and list the stale pages; write nothing

Each page is a table of the dataclass's fields: name, type, default and description. The
description is the field's ``metadata["help"]`` when it has one, otherwise the trailing
``# comment`` on the field's line in the source (read with ``ast`` and ``tokenize``; the
dataclass is not changed). A full-line ``# --- title ---`` comment in the class body starts
a section of the table. A config that extends a dataclass from a library (the reward model's
transformers ``TrainingArguments``) lists only the fields it declares itself, plus one line
linking to the base class's own reference.

``tests/test_docs.py`` calls ``stale_pages()`` so the test fails when the pages and the
dataclasses disagree: after editing a config field, run this script and commit the pages.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import io
import itertools
import json
import re
import sys
import tokenize
from pathlib import Path

# One row per config dataclass: (module, class, page name under docs/config/).
CONFIGS = [
    ("ppo.config", "PPOConfig", "ppo"),
    ("reward_model.train", "RewardModelConfig", "reward_model"),
    ("reward_model.evaluate", "EvaluateConfig", "evaluate"),
    ("robot.config", "RobotConfig", "robot"),
    ("labeling_app.config", "ProjectConfig", "labeling_app"),
    ("pipeline.end_to_end", "PipelineConfig", "pipeline"),
    ("pipeline.rm_demo", "RewardModelDemoConfig", "rm_demo"),
    ("pipeline.sample_demo", "SampleDemoConfig", "sample_demo"),
    ("pipeline.convert", "ConvertConfig", "convert"),
    ("pipeline.loop.config", "LoopConfig", "loop"),
    ("pipeline.loop.robot", "RobotLoopConfig", "loop_robot"),
    ("labeling_app.annotate", "AnnotateConfig", "annotate"),
]

# Reference pages of library base classes a config may extend.
BASE_CLASS_DOCS = {
    "transformers.training_args.TrainingArguments":
        "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments",
}

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOCS = ROOT / "docs" / "config"
SECTION_COMMENT = re.compile(r"^#\s*-{2,}\s*(?P<title>.*?)\s*-*\s*$")


@dataclasses.dataclass
class FieldSource:
    """What the source file says about one field of a dataclass."""

    name: str
    comment: str  # trailing comment on the field's lines, "" if none
    section: str  # title of the last ``# --- title ---`` comment above the field, "" if none
    default_source: str  # source text of ``default_factory=...``, "" if none
    annotation: str  # the type as written in the source (HfArgumentParser rewrites ``Field.type`` in place)


def _class_node(cls) -> tuple[ast.ClassDef, str]:
    """The class's definition in its source file, and the file's text."""
    text = Path(inspect.getsourcefile(cls)).read_text(encoding="utf-8")
    node = next(node for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.ClassDef) and node.name == cls.__name__)
    return node, text


def class_source_fields(cls) -> list[FieldSource]:
    """The fields a class declares in its own body, in source order, with their comments."""
    class_node, text = _class_node(cls)
    comments = {token.start[0]: token.string
                for token in tokenize.generate_tokens(io.StringIO(text).readline) if token.type == tokenize.COMMENT}
    lines = text.splitlines()
    fields, section, previous_end = [], "", class_node.lineno
    for statement in class_node.body:
        for number in range(previous_end + 1, statement.lineno):  # full-line comments between statements
            match = SECTION_COMMENT.match(lines[number - 1].strip())
            if match and number in comments:
                section = match["title"]
        previous_end = statement.end_lineno
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        trailing = [comments[n] for n in range(statement.lineno, statement.end_lineno + 1)
                    if n in comments and not lines[n - 1].lstrip().startswith("#")]
        comment = " ".join(c.lstrip("#").strip() for c in trailing)
        fields.append(FieldSource(statement.target.id, comment, section, _factory_source(statement, text),
                                  ast.get_source_segment(text, statement.annotation) or ""))
    return fields


def _factory_source(statement: ast.AnnAssign, text: str) -> str:
    call = statement.value
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", "")) == "field"):
        return ""
    for keyword in call.keywords:
        if keyword.arg == "default_factory":
            value = keyword.value.body if isinstance(keyword.value, ast.Lambda) else keyword.value
            return ast.get_source_segment(text, value) or ""
    return ""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cell(text: str) -> str:
    """Text that is safe inside a Markdown table cell."""
    return _one_line(text).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else ""


def render_type(annotation) -> str:
    if isinstance(annotation, str):  # ``from __future__ import annotations``: the source text
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _pages_by_class() -> dict[str, str]:
    return {name: page for _, name, page in CONFIGS}


def render_default(field: dataclasses.Field, source: FieldSource) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        page = _pages_by_class().get(name)
        shown = _code(source.default_source or f"{name}()")
        return f"{shown} (see [{name}]({page}.md))" if page else shown
    try:
        return _code(json.dumps(value))  # JSON is valid YAML: the default as a config file writes it
    except TypeError:
        return _code(source.default_source or repr(value))


def _help(field: dataclasses.Field) -> str:
    return _one_line(field.metadata.get("help", "")) if field.metadata else ""


def describe(field: dataclasses.Field, source: FieldSource, cls) -> str:
    """metadata["help"], else the trailing comment, else the help of the base class's field."""
    text = _help(field) or source.comment
    if not text:
        for base in cls.__mro__[1:]:
            base_field = getattr(base, "__dataclass_fields__", {}).get(field.name)
            if base_field is not None and _help(base_field):
                text = _help(base_field)
                break
    return _cell(text)


def _library_bases(cls) -> list[type]:
    project_modules = {module.split(".")[0] for module, _, _ in CONFIGS}
    return [base for base in cls.__bases__
            if dataclasses.is_dataclass(base) and base.__module__.split(".")[0] not in project_modules]


def render_page(module_name: str, class_name: str) -> str:
    cls = getattr(importlib.import_module(module_name), class_name)
    source_file = Path(inspect.getsourcefile(cls)).resolve().relative_to(ROOT).as_posix()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    library = set(_library_bases(cls))
    own = {}  # the project's own dataclasses in the MRO, base first: inherited fields keep their place
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and klass not in library and not any(
                issubclass(base, klass) for base in library):
            own.update({source.name: source for source in class_source_fields(klass)})
    sources = [s for s in own.values() if s.name in fields and fields[s.name].init and not s.name.startswith("_")]
    out = [f"# `{class_name}`", "",
           f"<!-- Generated by tools/gen_config_docs.py from {source_file}; do not edit by hand:",
           "     change the dataclass, then run `python tools/gen_config_docs.py`. -->", "",
           f"The fields of `{module_name}.{class_name}` ([{source_file}](../../{source_file})).", ""]
    docstring = ast.get_docstring(_class_node(cls)[0])
    if docstring:
        out += [docstring, ""]
    for base in _library_bases(cls):
        qualified = f"{base.__module__}.{base.__qualname__}"
        link = f"[`{base.__name__}`]({BASE_CLASS_DOCS[qualified]})" if qualified in BASE_CLASS_DOCS else f"`{qualified}`"
        out += [f"Every field of {link} is accepted as well; this page lists only the fields "
                f"`{class_name}` declares itself (including the base-class defaults it changes).", ""]
    for section, group in itertools.groupby(sources, key=lambda source: source.section):
        if section:
            out += [f"## {section}", ""]
        out += ["| field | type | default | description |", "|---|---|---|---|"]
        for source in group:
            field = fields[source.name]
            out.append(f"| `{source.name}` | {_code(source.annotation or render_type(field.type))} | {render_default(field, source)} "
                       f"| {describe(field, source, cls)} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def expected_pages() -> dict[Path, str]:
    return {CONFIG_DOCS / f"{page}.md": render_page(module, name) for module, name, page in CONFIGS}


def stale_pages() -> list[str]:
    """Pages under docs/config/ that differ from the dataclasses, are missing, or describe
    no config any more (paths relative to the repository)."""
    expected = expected_pages()
    stale = [path for path, text in expected.items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    stale += [path for path in sorted(CONFIG_DOCS.glob("*.md")) if path not in expected]
    return [path.relative_to(CONFIG_DOCS.parent.parent).as_posix() for path in stale]


def write_pages() -> list[str]:
    """Write every page and delete pages of configs no longer listed; returns what changed."""
    changed = stale_pages()
    CONFIG_DOCS.mkdir(parents=True, exist_ok=True)
    expected = expected_pages()
    for path, text in expected.items():
        path.write_text(text, encoding="utf-8")
    for path in CONFIG_DOCS.glob("*.md"):
        if path not in expected:
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/gen_config_docs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list stale pages and exit 1 if any; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for page in stale:
            print(f"stale: {page} (run `python tools/gen_config_docs.py`)")
        return 1 if stale else 0
    for page in write_pages():
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run by path: document this checkout, not another installed copy
    sys.exit(main())
