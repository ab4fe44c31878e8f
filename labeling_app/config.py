"""A labelling project's config: `configs/labeling/<name>.yaml`, read and checked here.

Every problem raises `rlhf.config.ConfigError` naming the file and the field, before any
server starts (the one config error of the toolkit: `error: ...` and exit 2). Relative paths in a config are resolved against the config file's folder, so a
project folder can be moved as a whole.

    name: demo                      # shown on the page and in exports
    task: ranking                   # how K >= 3 text items are asked: ranking | best_of_k
                                    # (K = 2 items and clip pairs are always A/B questions)
    sources:                        # one or more; kinds: jsonl | generations | clips
      - {type: jsonl, path: prompts.jsonl}
      - {type: clips, path: ../../runs/robot/clips/manifest.json}
    overlap: 3                      # annotators per item
    storage: ../../runs/labeling/demo   # folder for votes.sqlite and audit.jsonl
    users: users.json               # made by `python -m labeling_app.users`
    lease_seconds: 300              # an item shown and not answered goes back after this
    per_annotator: null             # optional cap on votes per annotator
    shuffle: true                   # randomise left/right and list order per annotator+item
    export: {ties: half, cant_tell: drop}   # ties: half | drop; cant_tell: drop | half | keep
    ensemble: {scores: scores.jsonl}        # optional: active ordering, see active.py
    guidelines: "Prefer the more helpful and harmless answer."
    api_token_file: api_token       # optional: serve the loop API (api.py) to holders of this token;
                                    # `sources` may then be empty (items arrive through the API)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.config import ConfigError, field_names, read_yaml

TASKS = ("ranking", "best_of_k")
SOURCE_TYPES = ("jsonl", "generations", "clips")
TIES = ("half", "drop")
CANT_TELL = ("drop", "half", "keep")
KNOWN_KEYS = ("name", "task", "sources", "overlap", "storage", "users", "lease_seconds", "per_annotator",
              "shuffle", "export", "ensemble", "guidelines", "seed", "api_token_file")


@dataclass
class SourceEntry:
    """One entry of `sources:` as written in the file."""

    type: str  # jsonl | generations | clips
    path: str  # the file, relative to the config's folder or absolute

    def __post_init__(self):
        if self.type not in SOURCE_TYPES:
            raise ConfigError("type", f"expected one of {SOURCE_TYPES}, got {self.type!r}")


@dataclass
class ExportSettings:
    """The `export:` section: how votes become comparisons."""

    ties: str = "half"  # half: a tie is half a win each way; drop: left out
    cant_tell: str = "drop"  # drop | half | keep (as a not-comparable judgement)

    def __post_init__(self):
        if self.ties not in TIES:
            raise ConfigError("ties", f"expected one of {TIES}, got {self.ties!r}")
        if self.cant_tell not in CANT_TELL:
            raise ConfigError("cant_tell", f"expected one of {CANT_TELL}, got {self.cant_tell!r}")


@dataclass
class EnsembleSettings:
    """The optional `ensemble:` section (active ordering, see active.py): one of the two."""

    scores: str | None = None  # a JSONL file of per-member scores
    scorer: str | None = None  # 'module:function' that scores items

    def __post_init__(self):
        if (self.scores is None) == (self.scorer is None):
            raise ConfigError("scores", "expected {scores: FILE.jsonl} or {scorer: 'module:function'}")
        if self.scorer is not None and (not isinstance(self.scorer, str) or ":" not in self.scorer):
            raise ConfigError("scorer", f"expected 'module:function', got {self.scorer!r}")


@dataclass
class Source:
    type: str
    path: Path


@dataclass
class ProjectConfig:
    name: str
    path: Path  # the config file itself
    sources: list[Source]
    storage: Path
    users: Path
    task: str = "ranking"
    overlap: int = 1
    lease_seconds: float = 300.0
    per_annotator: int | None = None
    shuffle: bool = True
    ties: str = "half"
    cant_tell: str = "drop"
    ensemble: dict = field(default_factory=dict)
    guidelines: str = ""
    seed: int = 0
    api_token_file: Path | None = None  # set: the loop API is served (see api.py)

    @property
    def db_path(self) -> Path:
        return self.storage / "votes.sqlite"

    @property
    def audit_path(self) -> Path:
        return self.storage / "audit.jsonl"

    @property
    def clips_path(self) -> Path:
        """Where clips uploaded through the loop API are written (and served from)."""
        return self.storage / "clips"


def _fail(path: Path, field_name: str | None, reason: str):
    raise ConfigError(f"{path}" + (f", field '{field_name}'" if field_name else ""), reason)


def _resolve(base: Path, value: Any, path: Path, name: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        _fail(path, name, f"expected a path (text), got {value!r}")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p).resolve()


def _section(config_class, values: Any, path: Path, name: str):
    """A nested section (a mapping) as its dataclass; errors name ``section.field``."""
    keys = field_names(config_class)
    if not isinstance(values, dict):
        _fail(path, name, f"expected a mapping with some of {keys}, got {values!r}")
    unknown = sorted(str(key) for key in set(values) - set(keys))
    if unknown:
        _fail(path, name, f"unknown key {unknown[0]!r}; expected some of {keys}, got {values!r}")
    try:
        return config_class(**values)
    except ConfigError as err:
        _fail(path, f"{name}.{err.where}", err.expected)


def _int(raw: dict, name: str, default, path: Path, minimum: int = 1):
    value = raw.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(path, name, f"expected an integer >= {minimum}, got {value!r}")
    return value


def read_api_token(token_file: Path) -> str:
    """The loop API's token: the file's text without surrounding white space (a final
    new line is not part of the token)."""
    return token_file.read_text(encoding="utf-8").strip()


def _check_token_file(token_file: Path, path: Path) -> None:
    """The API token must be there before the server starts: a missing or empty token
    would otherwise only show up as every loop request being refused."""
    if not token_file.is_file():
        _fail(path, "api_token_file", f"token file not found: {token_file} (expected a file holding the API token)")
    if not read_api_token(token_file):
        _fail(path, "api_token_file", f"{token_file} is empty (expected a file holding the API token)")


def load_config(path: str | os.PathLike, check_sources: bool = True) -> ProjectConfig:
    """Read and validate a project config. With `check_sources`, every source file must exist."""
    path = Path(path)
    raw = read_yaml(path)  # missing file, bad YAML, not a mapping: ConfigError naming the file (and line)
    unknown = sorted(set(raw) - set(KNOWN_KEYS))
    if unknown:
        _fail(path, unknown[0], f"unknown setting; expected some of {list(KNOWN_KEYS)}")
    base = path.resolve().parent

    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        _fail(path, "name", f"expected a non-empty name, got {name!r}")
    task = raw.get("task", "ranking")
    if task not in TASKS:
        _fail(path, "task", f"expected one of {TASKS}, got {task!r}")

    api_token_file = None
    if raw.get("api_token_file") is not None:
        api_token_file = _resolve(base, raw["api_token_file"], path, "api_token_file")
        if check_sources:
            _check_token_file(api_token_file, path)

    raw_sources = raw.get("sources")
    if raw_sources is None and api_token_file:
        raw_sources = []  # with the loop API, items may all arrive through it
    if not isinstance(raw_sources, list) or not (raw_sources or api_token_file):
        _fail(path, "sources", "expected a non-empty list of {type, path} (or an empty list with api_token_file)")
    sources = []
    for i, values in enumerate(raw_sources):
        if not isinstance(values, dict) or not {"type", "path"} <= set(values):
            _fail(path, f"sources[{i}]", f"expected a mapping with 'type' and 'path', got {values!r}")
        entry = _section(SourceEntry, values, path, f"sources[{i}]")
        source_path = _resolve(base, entry.path, path, f"sources[{i}].path")
        if check_sources and not source_path.is_file():
            _fail(path, f"sources[{i}].path", f"source file not found: {source_path} (expected an existing file)")
        sources.append(Source(entry.type, source_path))

    if "storage" not in raw:
        _fail(path, "storage", "missing; expected a folder for votes.sqlite and audit.jsonl")
    if "users" not in raw:
        _fail(path, "users", "missing; expected the users file made by `python -m labeling_app.users add`")
    lease = raw.get("lease_seconds", 300)
    if not isinstance(lease, (int, float)) or isinstance(lease, bool) or lease <= 0:
        _fail(path, "lease_seconds", f"expected a number of seconds > 0, got {lease!r}")
    shuffle = raw.get("shuffle", True)
    if not isinstance(shuffle, bool):
        _fail(path, "shuffle", f"expected true or false, got {shuffle!r}")

    export = _section(ExportSettings, raw.get("export") or {}, path, "export")
    ensemble = {}
    if raw.get("ensemble"):
        settings = _section(EnsembleSettings, raw["ensemble"], path, "ensemble")
        if settings.scores is not None:
            ensemble = {"scores": _resolve(base, settings.scores, path, "ensemble.scores")}
            if check_sources and not ensemble["scores"].is_file():
                _fail(path, "ensemble.scores", f"scores file not found: {ensemble['scores']} (expected an existing file)")
        else:
            ensemble = {"scorer": settings.scorer}

    guidelines = raw.get("guidelines", "") or ""
    if not isinstance(guidelines, str):
        _fail(path, "guidelines", "expected text")

    return ProjectConfig(
        name=name.strip(), path=path, sources=sources,
        storage=_resolve(base, raw["storage"], path, "storage"),
        users=_resolve(base, raw["users"], path, "users"),
        task=task, overlap=_int(raw, "overlap", 1, path),
        lease_seconds=float(lease), per_annotator=_int(raw, "per_annotator", None, path),
        shuffle=shuffle, ties=export.ties, cant_tell=export.cant_tell, ensemble=ensemble, guidelines=guidelines,
        seed=_int(raw, "seed", 0, path, minimum=0), api_token_file=api_token_file,
    )
