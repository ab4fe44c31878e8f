"""`rlhf prepare-model`: convert the embedded SmolLM2 GGUF into a cached HF checkpoint."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf prepare-model", description=__doc__)
    parser.parse_args(argv)
    from rlhf.models import embedded_checkpoint

    print(f"embedded model ready: {embedded_checkpoint()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
