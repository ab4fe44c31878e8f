"""The preference data model and its file formats.

A `Comparison` is one question put to a judge: a prompt (text, chat messages, or `None`
for robot segments) with K >= 2 items, and the judge's answer (`Judgement`):

- ``pair``:       K = 2, ``label`` = P(item 0 preferred) in {1.0, 0.0, 0.5 (tie)}  (eq. 14.4)
- ``best_of_k``:  ``choice`` = index of the best item                          (eq. 15.5)
- ``ranking``:    ``ranks[i]`` = rank of item i, 0 is best, equal ranks are ties, ``None``
                  marks an item left unranked (a partial, top-k ranking: every ranked
                  item beats every unranked one; unranked items are not compared) (eq. 15.6)
- ``not_comparable``: the judge could not compare; stored, never trained on.

Formats read and written here (every reader raises `PreferenceDataError` naming the
source, the line or row, and the field):

- ``trl``:    TRL preference rows ``{"prompt"?, "chosen", "rejected", "margin"?}``, text
              or conversational (lists of ``{"role", "content"}``); implicit prompt allowed.
- ``hh``:     Anthropic HH rows ``{"chosen", "rejected"}`` holding whole transcripts
              (``"\\n\\nHuman: ... \\n\\nAssistant: ..."``); the shared prefix up to the last
              common ``"\\n\\nAssistant:"`` becomes the prompt.
- ``ranked``: ``{"prompt", "completions", "ranks" | "scores" | "best"}``; scores (higher is
              better, e.g. ratings) become a ranking with ties.
- ``core``:   one `Comparison` per line, every field kept (the labelling app's export).

Rows come from JSONL/JSON/parquet files or from `datasets` datasets: objects, folders
written by ``save_to_disk``, folders of data files, or hub ids found in the local cache
(`iter_rows`; docs/data_formats.md lists the splits read).

Columns a format does not know are kept in ``Comparison.meta`` and written back, so
round trips are lossless.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import datasets
import huggingface_hub

from rlhf.config import ConfigError
from rlhf.metrics import ranking_pairs
from rlhf.outputs import atomic_path

JudgementKind = Literal["pair", "best_of_k", "ranking", "not_comparable"]
JUDGEMENT_KINDS = ("pair", "best_of_k", "ranking", "not_comparable")
FORMATS = ("trl", "hh", "ranked", "core")
PAIR_LABELS = (0.0, 0.5, 1.0)
HH_ASSISTANT = "\n\nAssistant:"


class PreferenceDataError(ConfigError):  # bad data is a user error like a bad config: "error: ..." and exit 2
    """Bad preference data; the message names the source, the line and the field."""

    def __init__(self, reason: str, source: str | None = None, line: int | None = None, field: str | None = None):
        self.reason, self.source, self.line, self.field = reason, source, line, field
        where = [source or "<data>"]
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {reason}")


def _fail(message: str, source: str | None = None, line: int | None = None, field_name: str | None = None):
    raise PreferenceDataError(message, source, line, field_name)


@dataclass
class Comparison:
    """One judged comparison of K >= 2 items (see the module docstring for the kinds)."""

    items: list[Any]
    kind: JudgementKind
    prompt: str | list[dict] | None = None
    label: float | None = None  # pair: P(items[0] preferred)
    choice: int | None = None  # best_of_k
    ranks: list[int | None] | None = None  # ranking: 0 best, ties equal, None unranked
    margin: float | None = None  # pair only, as TRL's margin column (chosen over rejected)
    annotator: str | None = None
    weight: float = 1.0
    id: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # -- validation -------------------------------------------------------------------
    def validate(self, source: str | None = None, line: int | None = None) -> "Comparison":
        """Check invariants; raise `PreferenceDataError` naming the offending field."""
        if self.kind not in JUDGEMENT_KINDS:
            _fail(f"unknown judgement kind {self.kind!r}; expected one of {JUDGEMENT_KINDS}", source, line, "kind")
        if not isinstance(self.items, list) or len(self.items) < 2:
            n = len(self.items) if isinstance(self.items, list) else "not a list"
            _fail(f"a comparison needs K >= 2 items, got {n}", source, line, "items")
        seen: dict[str, int] = {}
        for i, item in enumerate(self.items):
            if item is None or (isinstance(item, (str, list, dict)) and len(item) == 0):
                _fail(f"item {i} is empty", source, line, "items")
            key = json.dumps(item, sort_keys=True, ensure_ascii=False)
            if key in seen:
                _fail(f"items {seen[key]} and {i} are duplicates", source, line, "items")
            seen[key] = i
        k = len(self.items)
        if self.kind == "pair":
            if k != 2:
                _fail(f"a pair has exactly 2 items, got {k}", source, line, "items")
            if self.label is None or not _is_number(self.label) or float(self.label) not in PAIR_LABELS:
                _fail(f"pair label must be one of {{0, 0.5, 1}} (P(item 0 preferred)), got {self.label!r}", source, line, "label")
            self.label = float(self.label)
        elif self.label is not None:
            _fail(f"'label' belongs to pairs, not to {self.kind}", source, line, "label")
        if self.kind == "best_of_k":
            if not isinstance(self.choice, int) or isinstance(self.choice, bool) or not 0 <= self.choice < k:
                _fail(f"choice must be an item index in [0, {k - 1}], got {self.choice!r}", source, line, "choice")
        elif self.choice is not None:
            _fail(f"'choice' belongs to best_of_k, not to {self.kind}", source, line, "choice")
        if self.kind == "ranking":
            self.ranks = check_ranks(self.ranks, k, source, line)
        elif self.ranks is not None:
            _fail(f"'ranks' belongs to rankings, not to {self.kind}", source, line, "ranks")
        if self.margin is not None:
            if self.kind != "pair":
                _fail("a margin is only defined for pairs", source, line, "margin")
            if not _is_number(self.margin) or not math.isfinite(self.margin):
                _fail(f"margin must be a finite number, got {self.margin!r}", source, line, "margin")
        if not _is_number(self.weight) or not math.isfinite(self.weight) or self.weight < 0:
            _fail(f"weight must be a finite number >= 0, got {self.weight!r}", source, line, "weight")
        if self.prompt is not None and (isinstance(self.prompt, (str, list)) and len(self.prompt) == 0):
            _fail("prompt is empty (omit it for an implicit prompt)", source, line, "prompt")
        return self

    # -- views ------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return len(self.items)

    @property
    def trainable(self) -> bool:
        """`not_comparable` answers are stored but never trained on."""
        return self.kind != "not_comparable"

    def to_ranks(self) -> list[int | None]:
        """The judgement as ranks (0 best, ties equal, None unranked)."""
        if self.kind == "pair":
            return {1.0: [0, 1], 0.0: [1, 0], 0.5: [0, 0]}[self.label]
        if self.kind == "best_of_k":
            return [0 if i == self.choice else None for i in range(self.k)]
        if self.kind == "ranking":
            return list(self.ranks)
        raise PreferenceDataError(f"comparison {self.id or ''} is not comparable: it has no ranks")

    def to_dict(self) -> dict:
        """The ``core`` JSON form: every field, nothing lost."""
        row: dict[str, Any] = {"id": self.id, "prompt": self.prompt, "items": self.items, "kind": self.kind}
        if self.kind == "pair":
            row["label"] = self.label
        if self.kind == "best_of_k":
            row["choice"] = self.choice
        if self.kind == "ranking":
            row["ranks"] = self.ranks
        for name in ("margin", "annotator"):
            if getattr(self, name) is not None:
                row[name] = getattr(self, name)
        if self.weight != 1.0:
            row["weight"] = self.weight
        if self.meta:
            row["meta"] = self.meta
        return row


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_ranks(ranks: Any, k: int, source: str | None = None, line: int | None = None) -> list[int | None]:
    """Validate ranks: integers >= 0 (or None for unranked), dense (0, 1, 2, ... with ties
    sharing a value), at least one item ranked (with K >= 2 that gives at least one pair:
    ranked items beat unranked ones)."""
    if not isinstance(ranks, list) or len(ranks) != k:
        _fail(f"expected a list of {k} ranks (one per item), got {ranks!r}", source, line, "ranks")
    for r in ranks:
        if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 0):
            _fail(f"ranks must be integers >= 0 (0 is best) or null for unranked, got {r!r}", source, line, "ranks")
    used = sorted({r for r in ranks if r is not None})
    if not used:
        _fail("no item is ranked", source, line, "ranks")
    if used != list(range(len(used))):
        _fail(f"ranks must be dense (0, 1, 2, ... with ties sharing a rank), got {ranks}", source, line, "ranks")
    return list(ranks)


def scores_to_ranks(scores: Sequence[float], source: str | None = None, line: int | None = None) -> list[int]:
    """Per-item scores (higher is better) to dense ranks with ties: [3, 5, 5, 1] -> [1, 0, 0, 2]."""
    for s in scores:
        if not _is_number(s) or not math.isfinite(s):
            _fail(f"scores must be finite numbers, got {s!r}", source, line, "scores")
    distinct = sorted(set(scores), reverse=True)
    position = {s: i for i, s in enumerate(distinct)}
    return [position[s] for s in scores]


# =====================================================================================
# Row parsers: one dict in, one Comparison out (or a PreferenceDataError).
# =====================================================================================

_TRL_KEYS = ("prompt", "chosen", "rejected", "margin")
_RANKED_KEYS = ("prompt", "completions", "ranks", "scores", "best", "annotator", "weight")
_CORE_KEYS = ("id", "prompt", "items", "kind", "label", "choice", "ranks", "margin", "annotator", "weight", "meta")


def _require(row: dict, name: str, source, line) -> Any:
    if name not in row or row[name] is None:
        _fail("missing required field", source, line, name)
    value = row[name]
    if isinstance(value, (str, list)) and len(value) == 0:
        _fail("field is empty", source, line, name)
    return value


def _check_text_or_messages(value: Any, name: str, source, line) -> None:
    if isinstance(value, str):
        if not value.strip():
            _fail("field is empty", source, line, name)
        return
    if isinstance(value, list):
        for j, message in enumerate(value):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                _fail(f"message {j} must be an object with 'role' and 'content'", source, line, name)
        return
    _fail(f"expected text or a list of chat messages, got {type(value).__name__}", source, line, name)


def _optional_margin(row: dict, source, line) -> float | None:
    margin = row.get("margin")
    if margin is None:
        return None
    if not _is_number(margin) or not math.isfinite(margin):
        _fail(f"margin must be a finite number, got {margin!r}", source, line, "margin")
    return float(margin)


def split_implicit_prompt(prompt: Any, chosen: Any, rejected: Any) -> tuple[Any, Any, Any] | None:
    """TRL's `maybe_extract_prompt` on one row: the shared prompt taken out of ``chosen``
    and ``rejected`` when the row has none (text: the longest common prefix of characters,
    a space before the cut going to the completions; conversational: the longest common
    run of messages), or when the row's text prompt sits beside conversational completions
    that repeat it. Returns ``(prompt, chosen, rejected)``, or None when the row is left
    as it is (an explicit prompt, or nothing shared).

    Two cases differ from TRL on purpose, both where TRL would lose text: when the first
    character/message already differs TRL's `extract_prompt` can cut a completion (a text
    ending in a space gives ``"abc "`` / ``"xbc"`` -> prompt ``"abc"``, rejected ``"c"``) and
    drops a given prompt; here the row is kept whole. A conversational prompt beside text
    completions is kept too (TRL would extract a prompt from the text and drop it)."""
    conversational = isinstance(chosen, list)
    if prompt is not None and (isinstance(prompt, list) or not conversational):
        return None  # an explicit prompt of the completions' kind (or a chat prompt for text completions)
    if not chosen or not rejected or chosen[0] != rejected[0]:
        return None
    # Imported here: trl.data_utils imports transformers (seconds), which the labelling app
    # and `rlhf convert` do not otherwise need just to read preference files.
    from trl.data_utils import extract_prompt

    split = extract_prompt({"chosen": chosen, "rejected": rejected})
    if len(split["prompt"]) == 0:
        return None  # e.g. a single leading space was shared: nothing to call a prompt
    return split["prompt"], split["chosen"], split["rejected"]


def parse_trl_row(row: dict, source: str | None = None, line: int | None = None) -> Comparison:
    """TRL's preference schema: chosen is item 0, rejected item 1, label 1. An implicit
    prompt is split off as TRL does (`split_implicit_prompt`); the row is written back as
    it came (``to_trl_row``)."""
    chosen = _require(row, "chosen", source, line)
    rejected = _require(row, "rejected", source, line)
    _check_text_or_messages(chosen, "chosen", source, line)
    _check_text_or_messages(rejected, "rejected", source, line)
    prompt = row.get("prompt")
    if prompt is not None:
        _check_text_or_messages(prompt, "prompt", source, line)
    if chosen == rejected:
        _fail("chosen and rejected are identical (duplicate completions)", source, line, "rejected")
    extra = {k: v for k, v in row.items() if k not in _TRL_KEYS}
    split = split_implicit_prompt(prompt, chosen, rejected)
    if split is not None:
        extra["_implicit_prompt"] = True  # to_trl_row joins the prompt back into chosen/rejected
        if prompt is not None:
            extra["_given_prompt"] = prompt  # the text prompt column TRL drops, kept for the way back
        prompt, chosen, rejected = split
    return _build(dict(items=[chosen, rejected], kind="pair", label=1.0, prompt=prompt,
                       margin=_optional_margin(row, source, line), id=_opt_id(extra), meta=extra), source, line)


def _opt_id(extra: dict) -> str | None:
    """Pop an 'id' column into Comparison.id, keeping its type recoverable via meta."""
    if "id" not in extra:
        return None
    value = extra.pop("id")
    if value is not None and not isinstance(value, str):
        extra["_id_type"] = type(value).__name__  # ids that were numbers come back as numbers
    return None if value is None else str(value)


def _restore_id(comparison: Comparison, row: dict) -> None:
    if comparison.id is None:
        return
    id_type = comparison.meta.get("_id_type")
    row["id"] = int(comparison.id) if id_type == "int" else float(comparison.id) if id_type == "float" else comparison.id


def _build(kwargs: dict, source, line) -> Comparison:
    try:
        return Comparison(**kwargs)
    except PreferenceDataError as err:  # add the location, which the dataclass does not know
        raise PreferenceDataError(err.reason, source, line, err.field) from None
    except TypeError as err:  # a wrong type in a field, e.g. a string where a number belongs
        raise PreferenceDataError(f"bad field value ({err})", source, line) from None


def split_hh_transcript(chosen: str, rejected: str, source=None, line=None) -> tuple[str, str, str]:
    """Split two HH transcripts into (prompt, chosen completion, rejected completion).

    The prompt is the longest shared prefix that ends with ``"\\n\\nAssistant:"``; each
    completion is the rest of its transcript (it keeps its leading space)."""
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(text, str) or HH_ASSISTANT not in text:
            _fail("expected an HH transcript containing '\\n\\nAssistant:'", source, line, name)
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(HH_ASSISTANT)
    if cut < 0:
        _fail("chosen and rejected share no '\\n\\nAssistant:' turn to split the prompt at", source, line, "chosen")
    end = cut + len(HH_ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def parse_hh_row(row: dict, source: str | None = None, line: int | None = None) -> Comparison:
    chosen = _require(row, "chosen", source, line)
    rejected = _require(row, "rejected", source, line)
    prompt, chosen_completion, rejected_completion = split_hh_transcript(chosen, rejected, source, line)
    if chosen_completion == rejected_completion:
        _fail("chosen and rejected transcripts are identical (duplicate completions)", source, line, "rejected")
    for name, completion in (("chosen", chosen_completion), ("rejected", rejected_completion)):
        if not completion.strip():
            _fail("the final assistant turn is empty", source, line, name)
    extra = {k: v for k, v in row.items() if k not in ("chosen", "rejected", "margin")}
    extra["_format"] = "hh"
    return _build(dict(items=[chosen_completion, rejected_completion], kind="pair", label=1.0, prompt=prompt,
                       margin=_optional_margin(row, source, line), id=_opt_id(extra), meta=extra), source, line)


def parse_ranked_row(row: dict, source: str | None = None, line: int | None = None) -> Comparison:
    completions = _require(row, "completions", source, line)
    if not isinstance(completions, list):
        _fail("expected a list of completions", source, line, "completions")
    if len(completions) < 2:
        _fail(f"a comparison needs K >= 2 completions, got {len(completions)}", source, line, "completions")
    for completion in completions:
        _check_text_or_messages(completion, "completions", source, line)
    prompt = row.get("prompt")
    if prompt is not None:
        _check_text_or_messages(prompt, "prompt", source, line)
    given = [name for name in ("ranks", "scores", "best") if row.get(name) is not None]
    if len(given) != 1:
        _fail(f"expected exactly one of 'ranks', 'scores' or 'best', got {given or 'none'}", source, line, "ranks")
    extra = {k: v for k, v in row.items() if k not in _RANKED_KEYS}
    common = dict(items=completions, prompt=prompt, annotator=row.get("annotator"),
                  weight=row.get("weight", 1.0), id=_opt_id(extra), meta=extra)
    if given[0] == "ranks":
        return _build(common | dict(kind="ranking", ranks=row["ranks"]), source, line)
    if given[0] == "scores":
        scores = row["scores"]
        if not isinstance(scores, list) or len(scores) != len(completions):
            _fail(f"expected {len(completions)} scores (one per completion), got {scores!r}", source, line, "scores")
        extra["_scores"] = scores  # kept so the ranked export writes the ratings back
        return _build(common | dict(kind="ranking", ranks=scores_to_ranks(scores, source, line)), source, line)
    return _build(common | dict(kind="best_of_k", choice=row["best"]), source, line)


def parse_core_row(row: dict, source: str | None = None, line: int | None = None) -> Comparison:
    unknown = sorted(set(row) - set(_CORE_KEYS))
    if unknown:
        _fail(f"unknown fields {unknown}; expected a subset of {list(_CORE_KEYS)}", source, line, unknown[0])
    _require(row, "items", source, line)
    _require(row, "kind", source, line)
    for name in ("label", "margin", "weight"):
        value = row.get(name)
        if value is not None and _is_number(value) and not math.isfinite(value):
            _fail(f"{name} must be finite, got {value!r}", source, line, name)
    kwargs = {k: row[k] for k in _CORE_KEYS if k in row and row[k] is not None}
    kwargs.setdefault("meta", {})
    return _build(kwargs, source, line)


PARSERS = {"trl": parse_trl_row, "hh": parse_hh_row, "ranked": parse_ranked_row, "core": parse_core_row}


def detect_format(row: dict, source: str | None = None, line: int | None = None) -> str:
    """Guess the format of one row from its fields."""
    if not isinstance(row, dict):
        _fail(f"expected a JSON object per row, got {type(row).__name__}", source, line)
    if "items" in row and "kind" in row:
        return "core"
    if "completions" in row:
        return "ranked"
    if "chosen" in row or "rejected" in row:
        chosen = row.get("chosen")
        if "prompt" not in row and isinstance(chosen, str) and chosen.lstrip("\n").startswith("Human:") and HH_ASSISTANT in chosen:
            return "hh"
        return "trl"
    _fail(f"cannot tell the format from fields {sorted(row)}; expected TRL (chosen/rejected), "
          "HH transcripts, ranked (completions + ranks/scores/best) or core (items + kind)", source, line)


# =====================================================================================
# Readers and writers
# =====================================================================================

def _utf8_lines(handle, path, error) -> Iterator[str]:
    """The lines of a text file; bytes that are not UTF-8 raise ``error`` naming the file."""
    try:
        yield from handle
    except UnicodeDecodeError:
        raise error("expected a UTF-8 text file", str(path), None) from None


def read_jsonl(path: str | os.PathLike, error: Callable[..., Exception] = PreferenceDataError
               ) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, row) for every non-blank line of a JSONL file.

    A line that is not valid JSON, or not a JSON object, raises
    ``error(reason, str(path), line)``: `PreferenceDataError` by default; any exception
    class taking (reason, source, line), such as the labelling app's ``SourceError``, fits.
    Preference files, task files, score files and prompt files are all read this way."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, text in enumerate(_utf8_lines(handle, path, error), start=1):
            if not text.strip():
                continue  # blank lines are layout, not data
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise error(f"malformed JSON ({err.msg} at column {err.colno})", str(path), number) from None
            if not isinstance(row, dict):
                raise error(f"expected a JSON object, got {type(row).__name__}", str(path), number)
            yield number, row


DATA_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "owner/name", as the hub spells repo ids
_FILE_SUFFIXES = DATA_FILE_SUFFIXES + (".txt", ".csv", ".tsv", ".yaml", ".yml")


def looks_like_hub_id(spec: str | os.PathLike) -> bool:
    """Whether a path that is not on disk may name a hub dataset: ``name`` or ``owner/name``
    without a file suffix (a missing ``prefs.jsonl`` is a missing file, never a hub id)."""
    return bool(_HUB_ID.match(str(spec))) and Path(spec).suffix.lower() not in _FILE_SUFFIXES


@contextlib.contextmanager
def _datasets_offline_as_hub():
    """`datasets` reads HF_HUB_OFFLINE once, at its import, which may come before the entry
    point made the run offline (`rlhf.config.offline_by_default` sets huggingface_hub's
    flag): follow huggingface_hub's flag for the call, so an offline run never tries the
    network and an online one (HF_HUB_OFFLINE=0) may download."""
    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


def _load_folder(folder: Path, where: str):
    """A folder written by ``save_to_disk`` (`Dataset` or `DatasetDict`), or a folder of data
    files / a local copy of a hub dataset repository (read by ``load_dataset``)."""
    try:
        if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
            return datasets.load_from_disk(str(folder))
        with _datasets_offline_as_hub():
            return datasets.load_dataset(str(folder))
    except (OSError, ValueError) as err:
        raise PreferenceDataError(f"{folder} is a folder but not a readable dataset ({type(err).__name__}: {err}); "
                                  "expected a folder written by Dataset.save_to_disk or a folder of data files",
                                  where) from None


def _load_hub_dataset(name: str, where: str):
    """A hub dataset: from the local `datasets` cache or hub cache when offline (the
    default), downloaded when HF_HUB_OFFLINE=0."""
    with _datasets_offline_as_hub():
        try:
            return datasets.load_dataset(name)  # offline: the datasets cache of an earlier load_dataset
        except (OSError, ValueError) as err:  # ConnectionError, DatasetNotFoundError, ... are OSErrors
            first = err
        try:  # a snapshot in the hub cache (`hf download --repo-type dataset`, snapshot_download)
            snapshot = huggingface_hub.snapshot_download(name, repo_type="dataset", local_files_only=True)
        except (OSError, ValueError):
            snapshot = None
        if snapshot is not None:
            return _load_folder(Path(snapshot), where)
    what = "not" if where == name else f"{name} is not"  # the error line names it once
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise PreferenceDataError(f"{what} a file or folder, and the dataset is not in the local cache (datasets or "
                                  "hub); the run is offline (HF_HUB_OFFLINE=1 is the default): set HF_HUB_OFFLINE=0 "
                                  "to download it", where)
    raise PreferenceDataError(f"{what} a file or folder, and could not be loaded from the hub "
                              f"({type(first).__name__}: {first})", where)


def choose_split(dataset: Any, split: str | None, name: str, where: str | None = None) -> tuple[Any, str | None]:
    """One split of a `DatasetDict`: ``split`` when it has it, else its only split; with
    ``split=None``, ``test`` (evaluation data). A `Dataset` is returned as it is."""
    if not isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return dataset, None  # a Dataset (or a list of rows): no splits
    splits = list(dataset.keys())
    wanted = split or "test"
    if wanted in splits:
        return dataset[wanted], wanted
    if len(splits) == 1:
        return dataset[splits[0]], splits[0]
    raise PreferenceDataError(f"{'the dataset' if where in (None, name) else name} has the splits {splits} and no "
                              f"{wanted!r}; expected one of them named (train-rm: --dataset_train_split / "
                              "--dataset_test_split)", where or name)


def open_dataset(spec: str | os.PathLike, split: str | None = None, where: str | None = None) -> tuple[Any, str]:
    """A `datasets.Dataset` and its name for messages, from a dataset folder or a hub id
    (see `iter_rows`); a `DatasetDict` gives its split ``split`` (`choose_split`)."""
    path = Path(spec)
    where = where or str(spec)
    if path.is_dir():
        dataset = _load_folder(path, where)
    elif not path.exists() and looks_like_hub_id(spec):
        dataset = _load_hub_dataset(str(spec), where)
    else:
        raise PreferenceDataError("file not found", str(path))
    dataset, chosen = choose_split(dataset, split, str(spec), where)
    return dataset, f"{spec}[{chosen}]" if chosen else str(spec)


def iter_rows(data: Any, split: str | None = None, where: str | None = None) -> Iterator[tuple[dict, str, int | None]]:
    """Yield (row, source name, 1-based line number or None) from a JSONL/JSON/parquet
    path, a `datasets` dataset, or the name of one: a folder written by ``save_to_disk``, a
    folder of data files, or a hub id (``owner/name``) found in the local cache (offline,
    the default) or downloaded (HF_HUB_OFFLINE=0). From a `DatasetDict` the split ``split``
    is read (`choose_split`). JSON, parquet and dataset rows name their row in the source.
    ``where`` names the input in errors about the dataset as a whole (e.g. ``--train_data``)."""
    if isinstance(data, (str, os.PathLike)) and Path(data).is_file():
        path = Path(data)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            for number, row in read_jsonl(path):
                yield row, str(path), number
        elif suffix == ".json":
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                _fail("expected a UTF-8 text file", str(path))
            except json.JSONDecodeError as err:
                _fail(f"malformed JSON ({err.msg} at line {err.lineno}, column {err.colno})", str(path), err.lineno)
            if isinstance(rows, dict) and isinstance(rows.get("data"), list):
                rows = rows["data"]
            if not isinstance(rows, list):
                _fail("expected a JSON array of rows (or {\"data\": [...]})", str(path))
            for number, row in enumerate(rows, start=1):
                yield row, f"{path} (row {number})", None
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
                yield row, f"{path} (row {number})", None
        else:
            raise PreferenceDataError(f"unsupported file type {suffix!r}; expected .jsonl, .json or .parquet "
                                      "(or a datasets folder or hub id)", str(path))
        return
    if isinstance(data, (str, os.PathLike)):
        data, name = open_dataset(data, split, where)
    else:
        data, chosen = choose_split(data, split, "dataset", where)
        name = getattr(data, "info", None) and getattr(data.info, "dataset_name", None) or "dataset"
        name = f"{name}[{chosen}]" if chosen else name
    try:
        iterator = iter(data)
    except TypeError:
        raise PreferenceDataError(f"expected a file path or a datasets.Dataset, got {type(data).__name__}") from None
    for number, row in enumerate(iterator, start=1):
        yield row, f"{name} (row {number})", None


def load_comparisons(data: Any, format: str = "auto", split: str | None = None,
                     where: str | None = None) -> list[Comparison]:
    """Read comparisons from a JSONL/JSON/parquet file, a `datasets.Dataset`/`DatasetDict`,
    a saved dataset folder or a hub id (see `iter_rows`; ``split`` picks the split of a
    `DatasetDict`, ``where`` names the input in errors, e.g. ``--train_data``).

    `format` is one of ``auto``, ``trl``, ``hh``, ``ranked``, ``core``; ``auto`` detects it
    per row. Nothing is skipped: the first bad row raises `PreferenceDataError`."""
    if format != "auto" and format not in PARSERS:
        raise PreferenceDataError(f"unknown format {format!r}; expected one of {('auto',) + FORMATS}")
    comparisons = []
    for row, source, line in iter_rows(data, split, where):
        if not isinstance(row, dict):
            _fail(f"expected a JSON object, got {type(row).__name__}", source, line)
        row_format = detect_format(row, source, line) if format == "auto" else format
        comparisons.append(PARSERS[row_format](row, source, line))
    if not comparisons:
        raise PreferenceDataError("no rows found", str(data) if isinstance(data, (str, os.PathLike)) else "dataset")
    return comparisons


def _public_meta(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if not k.startswith("_")}


def to_trl_row(comparison: Comparison) -> dict:
    """A strict pair as a TRL row (chosen first). Ties, rankings and the rest raise: use
    `to_trl_rows` to expand K-way judgements into pairs."""
    if comparison.kind != "pair" or comparison.label == 0.5:
        raise PreferenceDataError(
            f"comparison {comparison.id!r} is a {comparison.kind}{' tie' if comparison.label == 0.5 else ''}: "
            "TRL rows hold strict pairs only")
    chosen, rejected = comparison.items if comparison.label == 1.0 else comparison.items[::-1]
    row: dict[str, Any] = {}
    _restore_id(comparison, row)
    joined = comparison.meta.get("_format") == "hh" or comparison.meta.get("_implicit_prompt")
    if "_given_prompt" in comparison.meta:
        row["prompt"] = comparison.meta["_given_prompt"]
    elif comparison.prompt is not None and not joined:
        row["prompt"] = comparison.prompt
    if joined:  # the prompt was split off the transcripts: put it back in front
        row["chosen"], row["rejected"] = comparison.prompt + chosen, comparison.prompt + rejected
    else:
        row["chosen"], row["rejected"] = chosen, rejected
    if comparison.margin is not None:
        row["margin"] = comparison.margin
    row.update(_public_meta(comparison.meta))
    return row


def to_trl_rows(comparisons: Iterable[Comparison], ties: Literal["error", "drop"] = "error") -> tuple[list[dict], dict]:
    """Expand comparisons into TRL pairs: strict pairs as they are, best-of-K as the best
    against each other item, rankings as every strictly ordered pair. Ties (tied pairs,
    tied pairs inside rankings) and not-comparable answers have no TRL form: they raise
    with ``ties="error"``, or are left out and counted with ``ties="drop"``. Returns the
    rows and those counts."""
    rows, dropped = [], {"ties": 0, "not_comparable": 0}

    def leave_out(comparison: Comparison, key: str, count: int = 1) -> None:
        if ties == "error":
            raise PreferenceDataError(f"comparison {comparison.id!r}: {key.replace('_', ' ')} cannot be written as "
                                      "TRL rows; expected strict pairs, or ties dropped (counted)")
        dropped[key] += count

    for comparison in comparisons:
        if comparison.kind == "not_comparable":
            leave_out(comparison, "not_comparable")
            continue
        if comparison.kind == "pair":
            if comparison.label == 0.5:
                leave_out(comparison, "ties")
            else:
                rows.append(to_trl_row(comparison))
            continue
        strict, tied = ranking_pairs(comparison.to_ranks())
        if tied:
            leave_out(comparison, "ties", len(tied))
        for i, j in sorted(strict):  # by chosen item, then rejected item
            row = {"prompt": comparison.prompt} if comparison.prompt is not None else {}
            row.update(chosen=comparison.items[i], rejected=comparison.items[j])
            if comparison.id is not None:
                row["id"] = f"{comparison.id}:{i}>{j}"
            rows.append(row)
    return rows, dropped


def to_ranked_row(comparison: Comparison) -> dict:
    """A comparison as a ranked-list row (pairs become K = 2 rankings)."""
    if comparison.kind == "not_comparable":
        raise PreferenceDataError(f"comparison {comparison.id!r} is not comparable: it has no ranking")
    row: dict[str, Any] = {}
    _restore_id(comparison, row)
    if comparison.prompt is not None:
        row["prompt"] = comparison.prompt
    row["completions"] = comparison.items
    if "_scores" in comparison.meta:
        row["scores"] = comparison.meta["_scores"]
    elif comparison.kind == "best_of_k":
        row["best"] = comparison.choice
    else:
        row["ranks"] = comparison.to_ranks()
    for name in ("annotator",):
        if getattr(comparison, name) is not None:
            row[name] = getattr(comparison, name)
    if comparison.weight != 1.0:
        row["weight"] = comparison.weight
    row.update(_public_meta(comparison.meta))
    return row


def write_jsonl(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write rows as JSONL atomically (`rlhf.outputs.atomic_path`: no half-written file,
    no temporary file left behind when writing fails)."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def save_comparisons(comparisons: Iterable[Comparison], path: str | os.PathLike,
                     format: Literal["core", "trl", "ranked"] = "core", ties: Literal["error", "drop"] = "error") -> Path:
    """Write comparisons as JSONL in the ``core``, ``trl`` or ``ranked`` form."""
    comparisons = list(comparisons)
    if format == "core":
        rows = [c.to_dict() for c in comparisons]
    elif format == "trl":
        rows, _ = to_trl_rows(comparisons, ties=ties)
    elif format == "ranked":
        rows = [to_ranked_row(c) for c in comparisons if c.trainable or ties == "error"]
    else:
        raise PreferenceDataError(f"unknown output format {format!r}; expected core, trl or ranked")
    return write_jsonl(rows, path)
