"""`rlhf prepare-model`: convert the embedded SmolLM2 GGUF into a cached HF checkpoint (once)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rlhf.config import parse_config, run_main
from rlhf.models import embedded_checkpoint


@dataclass
class PrepareConfig:
    """No options: the embedded model is converted into $RLHF_CACHE once."""


def main(argv: list[str] | None = None) -> int:
    parse_config(PrepareConfig, argv, prog="rlhf prepare-model")
    print(f"embedded model ready: {embedded_checkpoint()}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
