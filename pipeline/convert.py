"""`rlhf convert`: read preference data in any supported format and write another.

    rlhf convert ranked.jsonl pairs.jsonl --to trl --ties drop

An existing output file (the input itself included) is refused unless `--overwrite true`;
the output is written under a temporary name and renamed into place (`rlhf.outputs`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from rlhf.config import ConfigError, parse_config, run_main
from rlhf.outputs import check_output_file
from rlhf.preferences import FORMATS, PreferenceDataError, load_comparisons, save_comparisons, to_trl_rows


@dataclass
class ConvertConfig:
    input: str = field(metadata={"help": "JSONL, JSON or parquet file (also the first positional argument)"})
    output: str = field(metadata={"help": "JSONL file to write (also the second positional argument)"})
    source_format: str = field(default="auto", metadata={"help": f"auto | {' | '.join(FORMATS)}", "aliases": ["--from"]})
    target_format: str = field(default="core", metadata={"help": "core | trl | ranked", "aliases": ["--to"]})
    ties: str = field(default="error", metadata={
        "help": "ties and not-comparable answers have no TRL/ranked form: error (default) or drop them, counted"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace an existing output file (without it an existing output, the input included, is refused)"})

    def __post_init__(self):
        if self.source_format not in ("auto",) + FORMATS:
            raise ValueError(f"source_format: expected auto or one of {FORMATS}, got {self.source_format!r}")
        if self.target_format not in ("core", "trl", "ranked"):
            raise ValueError(f"target_format: expected core, trl or ranked, got {self.target_format!r}")
        if self.ties not in ("error", "drop"):
            raise ValueError(f"ties: expected error or drop, got {self.ties!r}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    positional = []
    while argv and not argv[0].startswith("-") and len(positional) < 2:
        positional.append(argv.pop(0))
    argv = [item for name, value in zip(("--input", "--output"), positional) for item in (name, value)] + argv
    config = parse_config(ConvertConfig, argv, prog="rlhf convert")
    check_output_file(config.output, "--output", config.overwrite)
    comparisons = load_comparisons(config.input, format=config.source_format)
    try:
        path = save_comparisons(comparisons, config.output, format=config.target_format, ties=config.ties)
    except PreferenceDataError as err:  # a tie or not-comparable answer with no TRL/ranked form
        raise ConfigError(config.input, f"{err.reason} (pass --ties drop to leave them out, counted)") from None
    summary = f"read {len(comparisons)} comparisons from {config.input}; wrote {path} ({config.target_format})"
    if config.target_format == "trl":
        rows, dropped = to_trl_rows(comparisons, ties=config.ties)
        summary += f": {len(rows)} pairs, dropped {dropped['ties']} ties and {dropped['not_comparable']} not comparable"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
