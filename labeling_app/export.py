"""Export stored votes as preference data, always in true item order.

    python -m labeling_app.export --project configs/labeling/demo.yaml --format core --out prefs.jsonl

Formats (see rlhf.preferences):
- ``core``:   one `Comparison` per vote; `reward_model.train` and `robot.train` read it.
- ``trl``:    TRL preference rows (prompt, chosen, rejected); K-way answers become every
              strictly ordered pair; ties and can't-tell cannot be expressed and are dropped.
- ``ranked``: ranked lists (prompt, completions, ranks | best).

Ties (``export.ties`` in the config, or ``--ties``): ``half`` keeps a tied pair as label
0.5 in the core form, ``drop`` leaves it out. Can't tell (``export.cant_tell``): ``drop``,
``half`` (a 0.5 pair label, pairs only) or ``keep`` (a ``not_comparable`` row, core only).

Each comparison's ``meta`` holds the item id, the display order the annotator saw, time on
task, the comment and, for robot clips, the clip paths; its ``id`` is ``<item>:<annotator>``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlhf.config import parse_config, run_main
from rlhf.preferences import Comparison, save_comparisons

from .config import ConfigError, load_config
from .sources import Item
from .storage import StorageError, VotesReader

FORMATS = ("core", "trl", "ranked")


def vote_to_comparison(vote: dict, item: Item, ties: str = "half", cant_tell: str = "drop") -> Comparison | None:
    """One stored vote as a core `Comparison` (None when the policy drops it)."""
    kind, label = vote["kind"], vote["label"]
    if kind == "not_comparable":
        if cant_tell == "drop" or (cant_tell == "half" and item.mode not in ("pair", "clip")):
            return None
        if cant_tell == "half":
            kind, label = "pair", 0.5
    if kind == "pair" and label == 0.5 and ties == "drop" and vote["kind"] == "pair":
        return None
    meta = {
        "item_id": item.id, "display_order": vote["display_order"], "seconds": vote["seconds"],
        "shown_at": vote["shown_at"], "answered_at": vote["answered_at"], "pressed": vote["pressed"],
    }
    if vote["kind"] == "not_comparable":
        meta["cant_tell"] = True
    if vote.get("comment"):
        meta["comment"] = vote["comment"]
    if item.mode == "clip":
        meta["clips"] = item.clips
    return Comparison(
        items=list(item.completions), kind=kind, prompt=item.prompt,
        label=label if kind == "pair" else None,
        choice=vote["choice"] if kind == "best_of_k" else None,
        ranks=vote["ranks"] if kind == "ranking" else None,
        annotator=vote["annotator"], id=f"{item.id}:{vote['annotator']}", meta=meta)


def comparisons_from_storage(storage, ties: str = "half", cant_tell: str = "drop") -> list[Comparison]:
    out = []
    for vote in storage.votes():
        comparison = vote_to_comparison(vote, storage.item(vote["item_id"]), ties, cant_tell)
        if comparison is not None:
            out.append(comparison)
    return out


def write_export(comparisons: list[Comparison], fmt: str, out: str | Path) -> tuple[Path, int]:
    """Write in the chosen format; returns the path and the number of rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if fmt == "trl":
        kept = [c for c in comparisons if c.kind != "not_comparable" and not (c.kind == "pair" and c.label == 0.5)]
    elif fmt == "ranked":
        kept = [c for c in comparisons if c.kind != "not_comparable"]
    else:
        kept = comparisons
    path = save_comparisons(kept, out, format=fmt, ties="drop")
    with open(path, encoding="utf-8") as handle:
        rows = sum(1 for _ in handle)
    return path, rows


def export_project(config, fmt: str, out: str | Path, ties: str | None = None, cant_tell: str | None = None):
    if not config.db_path.exists():
        raise FileNotFoundError(f"{config.db_path}: no votes stored yet for project {config.name!r}")
    storage = VotesReader(config.db_path)  # reads only: fine while the server runs
    try:
        comparisons = comparisons_from_storage(storage, ties or config.ties, cant_tell or config.cant_tell)
    finally:
        storage.close()
    return write_export(comparisons, fmt, out)


@dataclass
class ExportConfig:
    """Export a labelling project's votes as preference data (true order)."""

    project: str = field(metadata={"help": "the project config (configs/labeling/<name>.yaml)"})
    out: str = field(metadata={"help": "output JSONL file"})
    format: Literal["core", "trl", "ranked"] = field(default="core", metadata={
        "help": "core: rlhf.preferences comparisons; trl: chosen/rejected pairs; ranked: ranked lists"})
    ties: str | None = field(default=None, metadata={"help": "half | drop: override the config's export.ties"})
    cant_tell: str | None = field(default=None, metadata={
        "help": "drop | half | keep: override the config's export.cant_tell"})

    def __post_init__(self):
        if self.ties not in (None, "half", "drop"):
            raise ValueError(f"ties: expected half or drop, got {self.ties!r}")
        if self.cant_tell not in (None, "drop", "half", "keep"):
            raise ValueError(f"cant_tell: expected drop, half or keep, got {self.cant_tell!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_config(ExportConfig, argv, prog="python -m labeling_app.export")
    config = load_config(args.project, check_sources=False)
    try:
        path, rows = export_project(config, args.format, args.out, args.ties, args.cant_tell)
    except (FileNotFoundError, ValueError, StorageError) as err:
        raise ConfigError(args.project, str(err)) from None
    print(f"{path}: {rows} {args.format} rows")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
