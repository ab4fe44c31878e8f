"""The live loop's config: `LoopConfig` (this file's fields) plus a `reward_model:` and a
`ppo:` section, parsed like the pipeline's (`rlhf.config.parse_nested_config`), and the
folder layout every part agrees on (`LoopPaths`). `LoopFields` are the fields the text loop
shares with the robot loop (`pipeline.loop.robot.RobotLoopConfig`); `read_task` tells them apart."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.comparisons import ComparisonsConfig
from ppo.config import PPOConfig
from reward_model.train import RewardModelConfig
from rlhf.config import ConfigError, parse_nested_config, read_yaml
from rlhf.labelers import make_teacher

STAGES = {"reward_model": RewardModelConfig, "ppo": PPOConfig}
STAGE_DEFAULTS = {"reward_model": {"config": "configs/reward_model/quickstart.yaml"},
                  "ppo": {"config": "configs/ppo/quickstart.yaml"}}
MODES = ("live", "one_shot")
PARTS = ("all", "app", "reward", "policy", "bots")


TASKS = ("text", "robot")


@dataclass
class LoopFields:
    """The fields every live loop has, text or robot: the label budget and when to refit,
    the queue, the bots, the app and the run folder."""

    task: str = field(default="text", metadata={
        "help": "text: a language policy's completions (this page); robot: clip pairs of a robot policy "
                "(`RobotLoopConfig`)"})
    label_budget: int = field(default=160, metadata={"help": "votes the loop may ask for in all"})
    initial_labels: int = field(default=64, metadata={
        "help": "votes on the initial policy's completions before the first reward model (live mode)"})
    refit_every: int = field(default=32, metadata={"help": "refit the reward model when this many new votes landed"})
    heldout_every: int = field(default=5, metadata={
        "help": "every N-th labelled item (by a hash of its id) is kept out of training to check each fit; 0 = none"})
    warm_start: bool = field(default=True, metadata={"help": "a refit starts from the previous version's weights"})
    queries_per_iteration: int = field(default=4, metadata={
        "help": "items sent to the app per iteration (text: of the candidates; robot: clip pairs), those the "
                "reward ensemble disagrees on most"})
    max_queue: int = field(default=16, metadata={"help": "the policy sends no new item while this many are open"})
    overlap: int = field(default=1, metadata={"help": "annotators per item"})
    bots: int = field(default=2, metadata={"help": "simulated annotators started with the loop (0 = people only)"})
    teacher: str = field(default="mistake", metadata={"help": "the bots' B-Pref teacher (rlhf.labelers)"})
    teacher_kwargs: dict = field(default_factory=lambda: {"eps": 0.1}, metadata={
        "help": "the teacher's settings (on the command line a YAML mapping such as {eps: 0.2})"})
    think_time: float = field(default=0.2, metadata={"help": "seconds a bot looks at an item before answering"})
    app_host: str = field(default="127.0.0.1", metadata={"help": "address the app binds"})
    app_port: int = field(default=0, metadata={"help": "the app's port (0 = a free one)"})
    app_url: str | None = field(default=None, metadata={
        "help": "the app of a loop running elsewhere (--part reward|policy on another host); default: this loop's"})
    poll_seconds: float = field(default=1.0, metadata={"help": "how often the reward part looks for new votes"})
    nice: int = field(default=10, metadata={
        "help": "scheduling niceness of the reward and policy parts, so the app answers votes at once"})
    out: str = field(default="runs/loop/text", metadata={"help": "output folder"})
    overwrite: bool = field(default=False, metadata={"help": "delete an earlier run in `out` first"})
    resume: bool = field(default=False, metadata={"help": "continue the run in `out` (after a crash or kill)"})
    seed: int = field(default=0, metadata={"help": "seeds every part"})

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError("task", f"one of {TASKS}, got {self.task!r}")
        for name in ("label_budget", "refit_every", "queries_per_iteration", "max_queue", "overlap"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"expected >= 1, got {getattr(self, name)}")
        if not 1 <= self.initial_labels <= self.label_budget:
            raise ConfigError("initial_labels", f"expected 1..label_budget ({self.label_budget}), "
                                                f"got {self.initial_labels}")
        if self.heldout_every < 0 or self.heldout_every == 1:
            raise ConfigError("heldout_every", f"expected 0 (none) or >= 2, got {self.heldout_every}")
        if self.bots < 0 or self.think_time < 0:
            raise ConfigError("bots" if self.bots < 0 else "think_time", "expected >= 0")
        if self.overwrite and self.resume:
            raise ConfigError("overwrite", "expected at most one of overwrite and resume")
        try:
            make_teacher(self.teacher, **self.teacher_kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError("teacher", str(err)) from None

    @property
    def refits(self) -> bool:
        """Whether the reward part refits after the first version (live mode)."""
        return True

    @property
    def labels_before_first_fit(self) -> int:
        return self.initial_labels


@dataclass
class LoopConfig(ComparisonsConfig, LoopFields):
    """The loop's own fields; `policy_model`, `k`, `num_prompts`, `heldout_fraction` and
    `seed` mean what they mean in `rlhf pipeline` (the same prompt split)."""

    mode: str = field(default="live", metadata={
        "help": "live: people keep labelling the current policy's completions and the reward model refits; "
                "one_shot: the whole budget is labelled on the initial policy, one fit (the pipeline's way)"})
    candidates_per_iteration: int = field(default=8, metadata={
        "help": "training prompts per PPO iteration for which the policy samples K completions as query candidates"})
    eval_every: int = field(default=4, metadata={
        "help": "held-out gold and proxy score every N PPO iterations (and before the first and after the last)"})
    eval_prompts: int = field(default=32, metadata={"help": "held-out prompts used for that evaluation"})
    eval_max_new_tokens: int = field(default=64, metadata={"help": "length of the held-out completions"})

    def __post_init__(self):
        ComparisonsConfig.__post_init__(self)
        LoopFields.__post_init__(self)
        if self.task != "text":
            raise ConfigError("task", f"'text' for LoopConfig, got {self.task!r}")
        if self.mode not in MODES:
            raise ConfigError("mode", f"one of {MODES}, got {self.mode!r}")
        for name in ("candidates_per_iteration", "eval_every", "eval_prompts", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"expected >= 1, got {getattr(self, name)}")
        if self.queries_per_iteration > self.candidates_per_iteration:
            raise ConfigError("queries_per_iteration", f"expected <= candidates_per_iteration "
                                                       f"({self.candidates_per_iteration}), got {self.queries_per_iteration}")

    @property
    def refits(self) -> bool:
        return self.mode == "live"

    @property
    def labels_before_first_fit(self) -> int:
        """Votes on the initial policy: the whole budget in one-shot mode."""
        return self.label_budget if self.mode == "one_shot" else self.initial_labels


class LoopPaths:
    """Where each part reads and writes, under the loop's `out` folder.

    app/     project.yaml, users.json, bots.json, api_token, url, store/ (votes.sqlite, audit.jsonl)
    data/    the prompt split and the initial policy's samples
    reward/  labels.jsonl (every vote pulled from the app, once), v0001/, v0002/ ..., LATEST
    policy/  the PPO run (metrics.jsonl, checkpoints/, policy/), sent.jsonl, eval.jsonl;
             robot loops also segments/, clips/ and returns.jsonl
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.app = self.out / "app"
        self.project = self.app / "project.yaml"
        self.users = self.app / "users.json"
        self.bots = self.app / "bots.json"
        self.token = self.app / "api_token"
        self.url_file = self.app / "url"
        self.store = self.app / "store"
        self.data = self.out / "data"
        self.train_prompts = self.data / "train_prompts.jsonl"
        self.reward = self.out / "reward"
        self.labels = self.reward / "labels.jsonl"
        self.latest = self.reward / "LATEST"
        self.policy = self.out / "policy"
        self.sent = self.policy / "sent.jsonl"
        self.returns = self.policy / "returns.jsonl"  # robot loops: the clips' true returns, the bots' eyes
        self.eval = self.policy / "eval.jsonl"
        self.config = self.out / "loop_config.json"

    def version_dir(self, version: int) -> Path:
        return self.reward / f"v{version:04d}"

    def latest_version(self) -> int:
        """The published reward version (0 = none yet)."""
        if not self.latest.exists():
            return 0
        return int(self.latest.read_text().strip().lstrip("v"))

    def app_url(self, config: LoopFields) -> str:
        if config.app_url:
            return config.app_url.rstrip("/")
        if not self.url_file.exists():
            raise ConfigError("app_url", f"the URL of a running loop app (none written to {self.url_file} yet)")
        return self.url_file.read_text().strip()

    def api_token(self) -> str:
        if not self.token.exists():
            raise ConfigError(str(self.token), "the loop app's API token (start the app part first)")
        return self.token.read_text().strip()


def stage_paths(config: LoopConfig) -> dict[str, dict]:
    """What the loop sets in the stages' configs itself. A reward version's data and folder
    are set per fit by the reward part; the policy part swaps in each newer version."""
    paths = LoopPaths(config.out)
    return {"reward_model": {"train_data": None, "eval_data": None, "output_dir": str(paths.reward), "seed": config.seed},
            "ppo": {"sft_model_path": config.policy_model, "reward_models": [str(paths.version_dir(1))],
                    "prompts": str(paths.train_prompts), "output_dir": str(paths.policy), "seed": config.seed}}


def parse_config(argv: list[str] | None = None, prog: str = "rlhf loop") -> tuple[LoopConfig, RewardModelConfig, PPOConfig]:
    config, stages = parse_nested_config(LoopConfig, STAGES, argv, prog=prog, section_defaults=STAGE_DEFAULTS,
                                         derived=stage_paths)
    ppo = stages["ppo"]
    if ppo.pretrain_data is not None and not Path(ppo.pretrain_data).is_file():
        raise ConfigError("ppo.pretrain_data", f"an existing text file, got {ppo.pretrain_data}")
    return config, stages["reward_model"], ppo


def read_task(argv: list[str]) -> str:
    """The loop's `task` (text or robot): ``--task`` on the command line, else the `--config`
    file's ``task:`` key, else text."""
    if "--task" in argv and argv.index("--task") + 1 < len(argv):
        return argv[argv.index("--task") + 1]
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        return str(read_yaml(argv[argv.index("--config") + 1]).get("task", "text"))
    return "text"


def save_config(paths: LoopPaths, config: LoopFields, reward_config, policy_config) -> None:
    """loop_config.json: the loop's fields and its stages' (a robot loop's one `robot:` section)."""
    if config.task == "robot":
        stages = {"robot": dataclasses.asdict(reward_config)}
    else:
        stages = {"reward_model": reward_config.to_dict(), "ppo": policy_config.to_dict()}
    paths.out.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(json.dumps({"loop": dataclasses.asdict(config), **stages}, indent=2, default=str))
