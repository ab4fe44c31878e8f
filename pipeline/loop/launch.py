"""Preparing a loop's folder, running its parts, and the launcher that runs them all.

The whole loop runs each part as its own process (logs in ``out/logs/``): the Gradio app
with its SQLite store, the reward part (`pipeline.loop.reward`), the policy part
(`pipeline.loop.policy`) and, with ``bots: N``, simulated annotators (`rlhf annotate`)
that log into the app over HTTP as people do; people can join in a browser at the same
time. The trainers run at a lower scheduling priority (`nice`) so the app answers votes at
once. A part killed by a signal is restarted and resumes; the run ends when the policy part
has done its iterations, and the report is written.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from tqdm.auto import tqdm

from labeling_app.annotate import make_bot_accounts
from labeling_app.http_client import AdminClient, ApiError
from labeling_app.users import add_user
from pipeline.comparisons import sample_or_reuse, save_prompts, split_prompts
from pipeline.loop.config import PARTS, LoopConfig, LoopPaths, parse_config, read_task, save_config
from rlhf.config import ConfigError
from rlhf.outputs import check_output_folder, start_output_folder

RESTARTS = 3  # a part killed by a signal is restarted this many times at most


@dataclass
class Candidate:
    """A training prompt and the initial policy's K completions of it."""

    prompt: str
    completions: list[str]


def pop_part(argv: list[str]) -> tuple[str, list[str]]:
    """``--part NAME`` out of the arguments (the rest are the config's)."""
    argv = list(argv)
    if "--part" not in argv:
        return "all", argv
    index = argv.index("--part")
    if index + 1 >= len(argv) or argv[index + 1] not in PARTS:
        raise ConfigError("--part", f"one of {PARTS}")
    part = argv[index + 1]
    del argv[index:index + 2]
    return part, argv


def loop_task(task: str) -> tuple:
    """(parse_config, reward part class, policy part class) of a loop's task: the text loop's,
    or with ``task: robot`` the robot loop's (`pipeline.loop.robot`). Imported here, not at
    the top: the app part needs neither PyTorch models nor MuJoCo."""
    if task == "robot":
        from pipeline.loop import robot

        return robot.parse_config, robot.RobotRewardPart, robot.RobotPolicyPart
    from pipeline.loop.policy import PolicyPart
    from pipeline.loop.reward import RewardPart

    return parse_config, RewardPart, PolicyPart


def parse_loop_config(argv: list[str], prog: str = "rlhf loop") -> tuple:
    """(loop config, reward stage config, policy stage config) for the task the arguments name."""
    return loop_task(read_task(argv))[0](argv, prog=prog)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# =====================================================================================
# Preparing the out folder: the prompt split, the app's project, accounts and token
# =====================================================================================

def check_out(config: LoopConfig, paths: LoopPaths) -> None:
    """Nothing lost (`rlhf.outputs`): an earlier run is refused unless the user says
    overwrite or resume; a resume needs a loop to resume."""
    check_output_folder(paths.out, "--out", overwrite=config.overwrite, resume=config.resume,
                        resume_flag="--resume true")
    if config.resume and not paths.config.exists():
        raise ConfigError("resume", f"a loop to resume in {paths.out} (none found)")
    start_output_folder(paths.out, overwrite=config.overwrite)


def write_split(config: LoopConfig, paths: LoopPaths, console: Console) -> None:
    """The pipeline's prompt split (same prompts held out) and the initial policy's K
    completions of each training prompt, in a seeded order: the start-up items."""
    prompts = config.prompts()
    completions = sample_or_reuse(config, prompts, paths.data, console)
    train, heldout = split_prompts([Candidate(p, c) for p, c in zip(prompts, completions)],
                                   config.heldout_fraction, config.seed)
    order = np.random.default_rng(config.seed).permutation(len(train)).tolist()
    initial = [{"id": f"init-{i:04d}", "prompt": train[i].prompt, "completions": train[i].completions} for i in order
               if len(set(train[i].completions)) == config.k and all(c.strip() for c in train[i].completions)]
    needed = config.labels_before_first_fit // config.overlap
    if needed > len(initial):
        raise ConfigError("initial_labels" if config.mode == "live" else "label_budget",
                          f"at most {len(initial) * config.overlap} votes on the initial policy's completions "
                          f"({len(initial)} training prompts x overlap {config.overlap}), got {needed * config.overlap}")
    save_prompts([c.prompt for c in train], paths.train_prompts)
    (paths.data / "split.json").write_text(json.dumps(
        {"train_prompts": [c.prompt for c in train], "heldout_prompts": [c.prompt for c in heldout],
         "initial_items": initial}, indent=1))


def write_project(config: LoopConfig, paths: LoopPaths) -> None:
    """The app's project: no source files (items arrive through the API), an API token
    readable by the owner only, bot accounts, and an admin account for people."""
    paths.app.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    paths.token.touch(mode=0o600)
    paths.token.write_text(token)
    if config.bots:
        make_bot_accounts(paths.users, paths.bots, config.bots)
    password = secrets.token_urlsafe(12)
    add_user(paths.users, "admin", password, admin=True)
    admin_file = paths.app / "admin_password"
    admin_file.touch(mode=0o600)
    admin_file.write_text(password)
    paths.project.write_text(
        f"name: loop\ntask: ranking\nsources: []\nstorage: store\nusers: users.json\napi_token_file: api_token\n"
        f"overlap: {config.overlap}\nlease_seconds: 120\nshuffle: true\nseed: {config.seed}\n"
        "guidelines: \"Rank the answers from best (1) to worst: the one that answers the question, plainly and "
        "briefly, is best.\"\n")


def prepare(config: LoopConfig, rm_config, ppo_config, console: Console) -> LoopPaths:
    paths = LoopPaths(config.out)
    check_out(config, paths)
    if not config.resume:
        paths.data.mkdir(parents=True, exist_ok=True)
        if config.task == "text":  # a robot loop's policy part draws its start-up segments itself
            write_split(config, paths, console)
        write_project(config, paths)
        save_config(paths, config, rm_config, ppo_config)
    return paths


# =====================================================================================
# The parts
# =====================================================================================

def lower_priority(niceness: int) -> None:
    """Run this part behind the app. Each part is its own session (the launcher starts it
    so), and with Linux's autogroup scheduling a process's niceness only ranks it within its
    session's group: the group's niceness must be raised too, or the trainers would share
    the CPU equally with the app and votes would wait."""
    os.nice(niceness)
    autogroup = Path("/proc/self/autogroup")
    if niceness and autogroup.exists():
        try:
            autogroup.write_text(str(niceness))
        except OSError:
            pass  # not Linux-with-autogroup, or not allowed: the process niceness still applies


def run_app(config: LoopConfig, paths: LoopPaths) -> int:
    from labeling_app import app  # gradio: only this part needs it
    from labeling_app.config import load_config

    project = load_config(paths.project)
    port = config.app_port or free_port()
    # block the stop signals in every thread (the server's too) so that sigwait below gets them
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    _, _, url = app.launch(project, host=config.app_host, port=port, block=False, quiet=True)
    tmp = paths.url_file.with_suffix(".tmp")
    tmp.write_text(url.rstrip("/"))
    tmp.replace(paths.url_file)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})  # serve until the launcher (or Ctrl-C) stops it
    return 0


def run_reward(config: LoopConfig, rm_config) -> int:
    _, reward_part, _ = loop_task(config.task)
    lower_priority(config.nice)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    reward_part(config, rm_config).run(stop=lambda: bool(stopping))
    return 0


def run_policy(config: LoopConfig, ppo_config) -> int:
    _, _, policy_part = loop_task(config.task)
    lower_priority(config.nice)
    policy_part(config, ppo_config).run()
    return 0


def run_bots(config: LoopConfig, paths: LoopPaths) -> int:
    from labeling_app import annotate

    return annotate.main(["--url", paths.app_url(config), "--accounts", str(paths.bots), "--bots", str(config.bots),
                          "--teacher", config.teacher, "--teacher_kwargs", json.dumps(config.teacher_kwargs),
                          "--think_time", str(config.think_time), "--seed", str(config.seed),
                          "--log", str(paths.out / "logs" / "bots_votes.jsonl"),
                          *(["--returns", str(paths.returns)] if config.task == "robot" else [])])


# =====================================================================================
# The launcher
# =====================================================================================

class Part:
    """One child process running `--part NAME`, its output in ``out/logs/NAME.log``."""

    def __init__(self, name: str, argv: list[str], paths: LoopPaths):
        self.name, self.argv, self.paths = name, argv, paths
        self.restarts = 0
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.paths.out / "logs" / f"{self.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.loop", *self.argv, "--resume", "true", "--part", self.name],
                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        (self.paths.out / "logs" / f"{self.name}.pid").write_text(str(self.process.pid))

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        log = self.paths.out / "logs" / f"{self.name}.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def without_run_flags(argv: list[str]) -> list[str]:
    """The user's arguments minus --overwrite/--resume (the children always resume)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--overwrite", "--resume"):
            skip = True
            continue
        out.append(arg)
    return out


def wait_for_app(paths: LoopPaths, config: LoopConfig, app: Part, timeout: float = 180.0) -> AdminClient:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"the app stopped at start (exit {app.process.returncode}):\n{app.log_tail()}")
        if paths.url_file.exists():
            client = AdminClient(paths.app_url(config), paths.api_token(), timeout=5.0)
            try:
                client.status()
                return client
            except (ApiError, httpx.HTTPError):
                pass
        time.sleep(0.5)
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{app.log_tail()}")


def answers(client: AdminClient) -> bool:
    try:
        client.status()
        return True
    except (ApiError, httpx.HTTPError):
        return False


def launch(config: LoopConfig, ppo_config, argv: list[str], console: Console) -> dict:
    """Start the parts, watch them (restarting one killed by a signal), stop them all when
    the policy part is done, and write the report."""
    paths = LoopPaths(config.out)
    if paths.url_file.exists():
        paths.url_file.unlink()  # a stale URL from an earlier start
    child_argv = without_run_flags(argv)
    if not config.app_port:
        child_argv += ["--app_port", str(free_port())]
    # SIGTERM stops the parts too (the finally below), as Ctrl-C does: they are not our session's
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    app = Part("app", child_argv, paths)
    app.start()
    parts = [app]
    try:
        client = wait_for_app(paths, config, app)
        console.print(f"app: {paths.app_url(config)} (admin password in {paths.app / 'admin_password'}; "
                      f"logs in {paths.out / 'logs'})")
        parts += [Part(name, child_argv, paths) for name in ("reward", "policy")]
        if config.bots:
            parts.append(Part("bots", child_argv, paths))
        for part in parts[1:]:
            part.start()
        policy = parts[2]
        metrics = paths.policy / "metrics.jsonl"
        _, _, policy_part = loop_task(config.task)
        bar = tqdm(total=policy_part.iterations(ppo_config), desc="loop", unit="it")
        while True:
            for part in parts:
                code = part.process.poll()
                if code is None or code == 0:  # running, or done (the policy part; bots at their cap)
                    continue
                # killed by a signal: restart it, it resumes; bots also fail when the app was killed
                # under them, and are restarted once the app answers again
                if (code < 0 or part.name == "bots") and part.restarts < RESTARTS:
                    if part is not app and not answers(client):
                        continue
                    part.restarts += 1
                    console.print(f"[yellow]the {part.name} part stopped (exit {code}); restarting it[/]")
                    part.start()
                    continue
                raise RuntimeError(f"the {part.name} part stopped (exit {code}):\n{part.log_tail()}")
            done = sum(1 for line in metrics.open() if line.strip()) if metrics.exists() else 0
            bar.update(done - bar.n)
            try:
                status = client.status()
                reward = status["parts"].get("reward", {}).get("state", {})
                bar.set_postfix(votes=status["votes"], open=status["open"], version=reward.get("version", 0))
            except (ApiError, httpx.HTTPError):
                pass
            if policy.process.poll() == 0:
                break
            time.sleep(1.0)
        bar.close()
    finally:
        for part in reversed(parts):
            part.stop()
    report = policy_part.write_report(paths)
    return {"report": str(report), "restarts": {part.name: part.restarts for part in parts}}
