"""The `rlhf` command: one subcommand per stage, each forwarding its arguments to the
stage's own `main(argv)` (so `rlhf <stage> --help` is that stage's help)."""

from __future__ import annotations

import importlib
import sys

from rlhf.config import run_main

# name -> (module with a main(argv) function, one-line help)
SUBCOMMANDS = {
    "demo": ("reward_model.demo", "the main job: sample, label with a simulated teacher, train and evaluate a reward model"),
    "sample-demo": ("rlhf.demo", "sample from the embedded model, label with a simulated teacher, print a table"),
    "convert": ("rlhf.convert", "convert preference data between TRL, HH, ranked and core formats"),
    "prepare-model": ("rlhf.prepare", "convert the embedded GGUF model into the local cache (done once)"),
    "train-rm": ("reward_model.train", "fit a reward model (accelerate launch -m reward_model.train works too)"),
    "eval-rm": ("reward_model.evaluate", "evaluate a reward model: accuracy, RewardBench, calibration, length bias"),
    "pipeline": ("ppo.pipeline", "the whole loop: comparisons, reward model, PPO-ptx, report"),
    "ppo": ("ppo.train", "PPO-ptx fine-tuning with a per-token KL penalty (accelerate launch -m ppo.train works too)"),
    "label": ("labeling_app.__main__", "serve the Gradio labelling app for a project config"),
    "robot": ("robot.cli", "robot preference learning: train | evaluate | clips | study"),
}


def usage() -> str:
    lines = ["usage: rlhf <command> [options]   (rlhf <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<15} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from rlhf import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"rlhf: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return run_main(module.main, rest)  # a ConfigError: "error: ..." and exit 2, as from python -m


if __name__ == "__main__":
    sys.exit(main())
