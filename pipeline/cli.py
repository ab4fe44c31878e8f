"""The `rlhf` command: one subcommand per job, each running that module's `main(argv)`
(so `rlhf <command> --help` is that command's help), offline by default, with config
errors printed as `error: ...` and exit code 2."""

from __future__ import annotations

import importlib
import re
import sys

from rlhf import __version__
from rlhf.config import run_main

# name -> (module with a main(argv) function, one-line help). Modules are imported on use:
# the stages pull in heavy optional libraries (gradio, mujoco) that one command never needs.
SUBCOMMANDS = {
    "pipeline": ("pipeline.end_to_end", "the main job (make demo): comparisons, reward model, PPO-ptx, report"),
    "estimators": ("pipeline.estimator_study", "advantage estimators side by side on a finished pipeline run"),
    "demo": ("pipeline.rm_demo", "the reward-model stage on the embedded model: comparisons, training, evaluation"),
    "sample-demo": ("pipeline.sample_demo", "sample from a model, label with a simulated teacher, print tables"),
    "convert": ("pipeline.convert", "convert preference data between TRL, HH, ranked and core formats"),
    "prepare-model": ("pipeline.prepare", "convert the embedded GGUF model into the local cache (done once)"),
    "train-rm": ("reward_model.train", "fit a reward model (accelerate launch -m reward_model.train works too)"),
    "eval-rm": ("reward_model.evaluate", "evaluate a reward model: accuracy, RewardBench, calibration, length bias"),
    "ppo": ("ppo.train", "PPO-ptx fine-tuning with a per-token KL penalty (accelerate launch -m ppo.train works too)"),
    "label": ("labeling_app.__main__", "serve the Gradio labelling app for a project config"),
    "annotate": ("labeling_app.annotate", "simulated annotators (B-Pref teachers) that label in the app over HTTP"),
    "loop": ("pipeline.loop.__main__", "the live loop: app, reward and policy parts at once (status | study)"),
    "robot": ("robot.cli", "robot preference learning: train | evaluate | clips | study"),
}


# Commands that need an optional extra of the package (pyproject.toml); the base install
# brings only what the reward-model and PPO stages need.
EXTRAS = {"label": "app", "annotate": "app", "loop": "app", "robot": "robot"}
OWN_PACKAGES = {"rlhf", "reward_model", "ppo", "pipeline", "labeling_app", "robot"}


def missing_extra(command: str, err: ModuleNotFoundError) -> str | None:
    """The extra a missing module belongs to: the one a stage's import guard names
    (labeling_app/__init__.py, robot/__init__.py), or the command's own extra when a
    third-party module is missing; None for anything else (a bug, not an install)."""
    named = re.search(r"needs the \[(\w+)\] extra", str(err))
    if named:
        return named.group(1)
    if err.name and err.name.split(".")[0] not in OWN_PACKAGES:
        return EXTRAS.get(command)
    return None


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
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"error: rlhf: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(SUBCOMMANDS[name][0])
        return run_main(module.main, rest)
    except ModuleNotFoundError as err:
        extra = missing_extra(name, err)
        if extra is None:
            raise
        print(f"error: rlhf {name}: needs the [{extra}] extra: pip install 'rlhf-toolkit[{extra}]' "
              f"(missing module {err.name})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run_main(main))
