"""`rlhf loop --config configs/loop/text.yaml`: the live preference loop on one machine.

    rlhf loop --config configs/loop/text.yaml               # app + reward + policy (+ bots), then a report
    rlhf loop --config configs/loop/text.yaml --part app    # one part alone; on a cluster the policy part
    rlhf loop --config configs/loop/text.yaml --part policy #   runs as `accelerate launch -m pipeline.loop --part policy`
    rlhf loop status --config configs/loop/text.yaml        # votes in, queue, reward version, iteration
    rlhf loop study --config configs/loop/text.yaml --out runs/loop/study  # live against one-shot

What runs where: `pipeline.loop.launch`; the parts: `pipeline.loop.reward` and
`pipeline.loop.policy`; docs/loop.md.
"""

from __future__ import annotations

import sys
import time

import httpx
from rich.console import Console

from labeling_app.http_client import AdminClient, ApiError
from pipeline.loop import study
from pipeline.loop.config import LoopPaths
from pipeline.loop.launch import launch, parse_loop_config, pop_part, prepare, run_app, run_bots, run_policy, run_reward
from rlhf.config import run_main


def status(argv: list[str]) -> int:
    """What the app and the parts last reported."""
    config, _, _ = parse_loop_config(argv, prog="rlhf loop status")
    paths = LoopPaths(config.out)
    console = Console()
    try:
        reply = AdminClient(paths.app_url(config), paths.api_token(), timeout=5.0).status()
    except (ApiError, httpx.HTTPError) as err:
        console.print(f"app: not answering ({err})")
        reply = {"parts": {}}
    else:
        console.print(f"app: {reply['votes']} votes in, {reply['open']} of {reply['items']} items open, "
                      f"{reply['annotators']} annotators")
    now = time.time()
    for name in ("reward", "policy"):
        part = reply["parts"].get(name)
        if part is None:
            console.print(f"{name}: no report yet")
            continue
        state = ", ".join(f"{key} {value}" for key, value in part["state"].items())
        console.print(f"{name}: {state} (reported {now - part['at']:.0f} s ago)")
    console.print(f"reward version published: {paths.latest_version()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        return status(argv[1:])
    if argv[:1] == ["study"]:
        return study.main(argv[1:])
    part, config_argv = pop_part(argv)
    config, rm_config, ppo_config = parse_loop_config(config_argv)
    console = Console()
    paths = LoopPaths(config.out)
    if part == "all":
        prepare(config, rm_config, ppo_config, console)
        summary = launch(config, ppo_config, config_argv, console)
        console.print(f"report: {summary['report']}")
        return 0
    if part == "app":
        if not paths.project.exists():  # started alone: it prepares the folder
            prepare(config, rm_config, ppo_config, console)
        return run_app(config, paths)
    if part == "reward":
        return run_reward(config, rm_config)
    if part == "policy":
        return run_policy(config, ppo_config)
    return run_bots(config, paths)


if __name__ == "__main__":
    sys.exit(run_main(main))
