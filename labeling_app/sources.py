"""Task sources: the files items to label come from.

Three kinds, each read into `Item`s (errors name the file, the line and the field):

- ``jsonl``: one prompt per line with K >= 2 completions:
  ``{"id"?, "prompt": text | [{"role", "content"}, ...], "completions": [text | messages, ...]}``
- ``generations``: the reward-model demo's generations, one prompt per line: either its
  core comparisons (``runs/demo/comparisons.jsonl``: ``{"id", "prompt", "items", "kind", ...}``,
  the simulated judgement is ignored) or ``{"id"?, "prompt"?, "generations" | "completions" |
  "responses": [text | {"text": ...}, ...]}``. A missing or null prompt shows no prompt.
- ``clips``: the robot stage's clip manifest, ``manifest.json`` in a clips folder:
  ``{"pairs": [{"id", "clip_a", "clip_b", "segment_a", "segment_b"}]}`` where clips are
  .webm/.mp4 paths relative to the manifest's folder and segments are segment ids.

Items without an ``id`` get ``<file stem>:<line>``. K is capped at 9 (one key per item).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.preferences import read_jsonl

MAX_K = 9
API_SOURCE = "loop API"  # the `source` of items added through the loop API (no file)
CLIP_NAMES = ("a.webm", "b.webm")  # an uploaded clip pair's files, in true order (api.py)
CLIP_SUFFIXES = (".webm", ".mp4")


class SourceError(ValueError):
    """A malformed task file; the message names the file, the line and the field."""

    def __init__(self, reason: str, source: Path | str, line: int | None = None, field_name: str | None = None):
        where = [str(source)]
        if line is not None:
            where.append(f"line {line}")
        if field_name is not None:
            where.append(f"field '{field_name}'")
        super().__init__(f"{', '.join(where)}: {reason}")


@dataclass
class Item:
    """One question: `mode` is pair, ranking, best_of_k (text) or clip (robot segments)."""

    id: str
    mode: str
    completions: list[Any]  # text items: texts or message lists; clips: segment ids
    prompt: Any = None
    clips: list[str] = field(default_factory=list)  # absolute clip paths, clip items only
    source: str = ""

    @property
    def k(self) -> int:
        return len(self.completions)

    def to_json(self) -> dict:
        return {"id": self.id, "mode": self.mode, "completions": self.completions, "prompt": self.prompt,
                "clips": self.clips, "source": self.source}

    @classmethod
    def from_json(cls, data: dict) -> "Item":
        return cls(**data)


def _check_text(value: Any, source, line, name) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise SourceError("text is empty", source, line, name)
        return
    if isinstance(value, list) and value:
        for j, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                    or not isinstance(message.get("content"), str):
                raise SourceError(f"message {j} must be an object with text 'role' and 'content'", source, line, name)
        return
    raise SourceError(f"expected text or a non-empty list of chat messages, got {type(value).__name__}",
                      source, line, name)


def _row_id(row: dict, path: Path, number: int) -> str:
    value = row.get("id")
    if value is None:
        return f"{path.stem}:{number}"
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise SourceError(f"expected a text or integer id, got {value!r}", path, number, "id")
    return str(value)


def _text_item(row: dict, completions: Any, name: str, path: Path, number: int, task: str,
               prompt_required: bool = True) -> Item:
    if row.get("prompt") is None:
        if prompt_required:
            raise SourceError("missing required field", path, number, "prompt")
    else:
        _check_text(row["prompt"], path, number, "prompt")
    if not isinstance(completions, list) or len(completions) < 2:
        raise SourceError("expected a list of K >= 2 completions", path, number, name)
    if len(completions) > MAX_K:
        raise SourceError(f"at most {MAX_K} completions per item, got {len(completions)}", path, number, name)
    for completion in completions:
        _check_text(completion, path, number, name)
    keys = [json.dumps(c, sort_keys=True) for c in completions]
    if len(set(keys)) != len(keys):
        raise SourceError("two completions are identical", path, number, name)
    mode = "pair" if len(completions) == 2 else task
    return Item(_row_id(row, path, number), mode, completions, row.get("prompt"), source=str(path))


def load_jsonl(path: Path, task: str) -> list[Item]:
    items = []
    for number, row in read_jsonl(path, SourceError):
        if "completions" not in row:
            raise SourceError("missing required field", path, number, "completions")
        items.append(_text_item(row, row["completions"], "completions", path, number, task))
    return items


def load_generations(path: Path, task: str) -> list[Item]:
    items = []
    for number, row in read_jsonl(path, SourceError):
        name = next((n for n in ("generations", "completions", "responses", "items") if n in row), None)
        if name is None:
            raise SourceError("missing field: expected one of 'generations', 'completions', 'responses', "
                              "'items'", path, number, "generations")
        raw = row[name]
        if not isinstance(raw, list):
            raise SourceError("expected a list of generations", path, number, name)
        texts = []
        for g in raw:  # a generation is text or an object holding it
            if isinstance(g, dict):
                g = next((g[k] for k in ("text", "completion", "content") if k in g), None)
                if g is None:
                    raise SourceError("a generation object needs 'text', 'completion' or 'content'", path, number, name)
            texts.append(g)
        items.append(_text_item(row, texts, name, path, number, task, prompt_required=False))
    return items


def load_clip_manifest(path: Path) -> list[Item]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SourceError(f"malformed JSON ({err.msg} at column {err.colno})", path, err.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        raise SourceError("expected {\"pairs\": [...]}", path, None, "pairs")
    items = []
    for i, pair in enumerate(data["pairs"]):
        where = f"pairs[{i}]"
        if not isinstance(pair, dict):
            raise SourceError("expected an object", path, None, where)
        for name in ("id", "clip_a", "clip_b", "segment_a", "segment_b"):
            if pair.get(name) in (None, ""):
                raise SourceError("missing required field", path, None, f"{where}.{name}")
        clips = []
        for name in ("clip_a", "clip_b"):
            clip = (path.parent / str(pair[name])).resolve()
            if clip.suffix.lower() not in CLIP_SUFFIXES:
                raise SourceError(f"expected a {' or '.join(CLIP_SUFFIXES)} clip, got {pair[name]!r}", path, None,
                                  f"{where}.{name}")
            if not clip.is_file():
                raise SourceError(f"clip not found: {clip}", path, None, f"{where}.{name}")
            if path.parent.resolve() not in clip.parents:
                raise SourceError("clips must live inside the manifest's folder", path, None, f"{where}.{name}")
            clips.append(str(clip))
        segments = [pair["segment_a"], pair["segment_b"]]
        if segments[0] == segments[1]:
            raise SourceError("segment_a and segment_b are the same segment", path, None, f"{where}.segment_b")
        items.append(Item(str(pair["id"]), "clip", segments, None, clips, str(path)))
    return items


def load_items(config) -> list[Item]:
    """All items of a project, in source order; duplicate ids across sources are an error."""
    items: list[Item] = []
    seen: dict[str, str] = {}
    for source in config.sources:
        if not source.path.is_file():
            raise SourceError("source file not found", source.path)
        if source.type == "jsonl":
            loaded = load_jsonl(source.path, config.task)
        elif source.type == "generations":
            loaded = load_generations(source.path, config.task)
        else:
            loaded = load_clip_manifest(source.path)
        if not loaded:
            raise SourceError("no items in this source", source.path)
        for item in loaded:
            if item.id in seen:
                raise SourceError(f"item id {item.id!r} also appears in {seen[item.id]}", source.path, None, "id")
            seen[item.id] = str(source.path)
        items.extend(loaded)
    return items

