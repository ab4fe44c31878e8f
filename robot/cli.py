"""`rlhf robot <train|evaluate|clips|study> ...`: the robot stage's commands."""

from __future__ import annotations

import importlib
import sys

from rlhf.config import run_main

COMMANDS = {
    "train": ("robot.train", "the Christiano loop (or a true-reward baseline) on an iiwa14 task"),
    "evaluate": ("robot.evaluate", "roll out a policy checkpoint: true return and success rate"),
    "clips": ("robot.clips", "render segment pairs as WebM clips with a manifest for the labelling app"),
    "study": ("robot.study", "true-reward baseline vs learned-reward loop over seeds: report with plots"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: rlhf robot <command> [options]   (rlhf robot <command> --help)\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    # the command's module is imported only when chosen: each pulls in torch, mujoco or rendering
    return run_main(importlib.import_module(COMMANDS[argv[0]][0]).main, argv[1:])


if __name__ == "__main__":
    sys.exit(run_main(main))
