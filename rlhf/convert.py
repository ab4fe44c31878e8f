"""`rlhf convert`: read preference data in any supported format and write another."""

from __future__ import annotations

import argparse
import sys

from rlhf.preferences import FORMATS, PreferenceDataError, load_comparisons, save_comparisons, to_trl_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf convert", description=__doc__)
    parser.add_argument("input", help="JSONL, JSON or parquet file")
    parser.add_argument("output", help="JSONL file to write")
    parser.add_argument("--from", dest="source_format", default="auto", choices=("auto",) + FORMATS)
    parser.add_argument("--to", dest="target_format", default="core", choices=("core", "trl", "ranked"))
    parser.add_argument("--ties", default="error", choices=("error", "drop"),
                        help="ties and not-comparable answers have no TRL/ranked form: fail (default) or drop them, counted")
    args = parser.parse_args(argv)
    try:
        comparisons = load_comparisons(args.input, format=args.source_format)
        path = save_comparisons(comparisons, args.output, format=args.target_format, ties=args.ties)
    except PreferenceDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = f"read {len(comparisons)} comparisons from {args.input}; wrote {path} ({args.target_format})"
    if args.target_format == "trl":
        rows, dropped = to_trl_rows(comparisons, ties=args.ties)
        summary += f": {len(rows)} pairs, dropped {dropped['ties']} ties and {dropped['not_comparable']} not comparable"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
