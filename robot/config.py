"""Configuration of the robot preference loop: one dataclass, loaded from YAML, CLI overrides.

    config = load_config("configs/robot/reach.yaml", ["--seed", "1", "--mode", "true_reward"])

Every hyper-parameter lives in `RobotConfig` with a comment saying what it does. A YAML
file sets any subset of the fields; `--field value` on the command line overrides it
(values are parsed as YAML, so `--teacher_kwargs "{eps: 0.2}"` works). An unknown key in
either place raises `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODES = ("learned", "true_reward")
QUERY_METHODS = ("disagreement", "random")


class ConfigError(ValueError):
    """A malformed config file, an unknown key or an invalid value."""


def run_command(main, argv: list[str] | None = None) -> int:
    """Run a robot command's ``main``; a ConfigError prints as ``error: ...`` (no
    traceback) and exits 2, from ``python -m robot.<command>`` and ``rlhf robot`` alike."""
    import sys

    try:
        return main(argv) or 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


@dataclass
class RobotConfig:
    # --- run -------------------------------------------------------------------------
    task: str = "reach"  # robot.vec_env task name: reach or push
    mode: str = "learned"  # learned: Christiano loop on preferences; true_reward: PPO baseline
    seed: int = 0  # seeds envs, torch, teacher and segment sampling
    out_dir: str = "runs/robot/reach"  # checkpoints, metrics.jsonl, report.md, plots, segments
    progress: bool = True  # tqdm bars

    # --- environment / rollouts --------------------------------------------------------
    num_envs: int = 16  # parallel sub-envs; all reset together, so rollouts are whole episodes
    episodes_per_rollout: int = 1  # episodes per sub-env per PPO update (batch = num_envs * this * 50 on reach)
    total_timesteps: int = 120_000  # env steps of PPO over the whole run

    # --- PPO (CleanRL MuJoCo defaults, adapted to short fixed episodes) --------------------
    learning_rate: float = 3e-4  # Adam, annealed linearly to 0 over the run
    gamma: float = 0.95  # discount; horizon ~20 steps suits 50-step reach (0.99 learned ~3x slower)
    gae_lambda: float = 0.95  # GAE bias/variance trade-off
    update_epochs: int = 10  # passes over each rollout
    num_minibatches: int = 16  # minibatches per pass (50 steps each at 16 envs: many small steps learn faster)
    clip_range: float = 0.2  # PPO ratio clip
    clip_range_value: float | None = None  # value clipping; None: plain MSE (learned rewards change scale)
    entropy_coef: float = 0.0  # entropy bonus; the learned log-std already explores
    value_coef: float = 0.5  # weight of the value loss
    max_grad_norm: float = 0.5  # gradient clipping
    hidden_size: int = 64  # width of the two tanh hidden layers of policy and value nets
    init_log_std: float = -0.5  # initial state-independent log-std (std ~0.6 of the [-1, 1] range)
    bootstrap_truncated: bool = True  # V(final obs) after the time limit (the task has no terminal state)
    obs_clip: float = 10.0  # clip normalised observations to +-this

    # --- preference learning (mode = learned) -------------------------------------------
    label_budget: int = 700  # total comparisons asked for (skipped ones count)
    initial_label_fraction: float = 0.25  # share of the budget asked on random-policy segments (Christiano)
    num_rounds: int = 10  # rounds of (PPO, new segments, queries, refit) after the initial labels
    schedule_decay: float = 1.0  # round r gets labels prop. to 1 / (1 + decay * r): decreasing schedule
    segment_length: int = 25  # steps per segment (25 x 0.04 s = 1 s clips)
    segments_per_round: int = 400  # segments sampled from each round's rollouts as the candidate pool
    candidate_factor: int = 10  # candidate pairs per query (Christiano samples 10x and keeps the top)
    query_selection: str = "disagreement"  # disagreement | random
    disagreement_method: str = "probability_std"  # rlhf.ensemble.disagreement: probability_std | variance | vote
    teacher: str = "mistake"  # B-Pref teacher: oracle, stochastic, myopic, mistake, skip, equal
    teacher_kwargs: dict = field(default_factory=lambda: {"eps": 0.1})  # teacher arguments (its seed is added)
    labels_file: str | None = None  # core-format JSONL of human labels (items = segment ids) instead of a teacher
    segments_file: str | None = None  # segments.npz the labels refer to (default: out_dir/segments.npz)
    ensemble_members: int = 3  # reward ensemble size
    reward_features: str = "relative"  # obs_action (Christiano) | obs | relative (task-space positions) | relative_action (robot.reward.feature_columns)
    reward_hidden: int = 64  # width of the 2 leaky-ReLU hidden layers of each member
    reward_dropout: float = 0.0  # dropout after each hidden layer of a member while fitting (Christiano: L2 + dropout)
    reward_output: str = "tanh"  # tanh: bounded per-step reward (B-Pref), harder to exploit; linear: Christiano
    reward_epochs: int = 20  # Bradley-Terry epochs per refit (members restart from their last weights)
    reward_batch_size: int = 64  # comparisons per reward minibatch
    reward_learning_rate: float = 3e-3  # AdamW
    reward_weight_decay: float = 1e-4  # AdamW decoupled weight decay
    preference_noise: float = 0.1  # Christiano's random-answer probability in the preference model
    heldout_segments: int = 200  # held-out segments (from the last policy) for the learned/true correlation

    # --- evaluation ------------------------------------------------------------------------
    eval_episodes: int = 32  # deterministic-policy episodes per evaluation
    eval_every_rounds: int = 1  # evaluate after every this many rounds (baseline: per equal time slice)

    def validate(self) -> "RobotConfig":
        from robot.envs import ENV_IDS, TASKS

        if self.task not in TASKS and self.task not in ENV_IDS.values():
            raise ConfigError(f"unknown task {self.task!r}; valid tasks: {', '.join(sorted(TASKS))}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.query_selection not in QUERY_METHODS:
            raise ConfigError(f"query_selection must be one of {QUERY_METHODS}, got {self.query_selection!r}")
        positive = ("num_envs", "episodes_per_rollout", "total_timesteps", "update_epochs", "num_minibatches",
                    "num_rounds", "segment_length", "segments_per_round", "candidate_factor", "ensemble_members",
                    "reward_epochs", "reward_batch_size", "eval_episodes", "hidden_size", "reward_hidden",
                    "eval_every_rounds", "heldout_segments")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.mode == "learned" and self.label_budget < 2:
            raise ConfigError(f"label_budget must be >= 2, got {self.label_budget}")
        if not 0 < self.initial_label_fraction < 1:
            raise ConfigError(f"initial_label_fraction must be in (0, 1), got {self.initial_label_fraction}")
        if self.reward_output not in ("tanh", "linear"):
            raise ConfigError(f"reward_output must be 'tanh' or 'linear', got {self.reward_output!r}")
        if not 0.0 <= self.reward_dropout < 1.0:
            raise ConfigError(f"reward_dropout must be in [0, 1), got {self.reward_dropout}")
        if self.reward_features not in ("obs_action", "obs", "relative", "relative_action"):
            raise ConfigError("reward_features must be one of obs_action, obs, relative, relative_action, "
                              f"got {self.reward_features!r}")
        if not isinstance(self.teacher_kwargs, dict):
            raise ConfigError(f"teacher_kwargs must be a mapping, got {self.teacher_kwargs!r}")
        if self.query_selection == "disagreement" and self.ensemble_members < 2:
            raise ConfigError("query_selection 'disagreement' needs ensemble_members >= 2")
        return self


FIELDS = {f.name: f for f in dataclasses.fields(RobotConfig)}


def _check_keys(keys, where: str) -> None:
    unknown = [k for k in keys if k not in FIELDS]
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r} in {where}; valid keys: {', '.join(FIELDS)}")


def _coerce(name: str, value: Any, where: str) -> Any:
    """Type-check one value against the dataclass default's type (ints may stand for floats)."""
    default = FIELDS[name].default if FIELDS[name].default is not dataclasses.MISSING else FIELDS[name].default_factory()
    if value is None:
        if default is None or name in ("clip_range_value", "labels_file", "segments_file"):
            return None
        raise ConfigError(f"{name} in {where} may not be null")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} in {where} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name} in {where} must be an integer, got {value!r}")
    elif isinstance(default, float) or name == "clip_range_value":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name} in {where} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str) or name in ("labels_file", "segments_file"):
        if not isinstance(value, str):
            raise ConfigError(f"{name} in {where} must be a string, got {value!r}")
    elif isinstance(default, dict) and not isinstance(value, dict):
        raise ConfigError(f"{name} in {where} must be a mapping, got {value!r}")
    return value


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """`--field value` pairs (or `--field=value`) -> {field: YAML-parsed value}."""
    overrides, i = {}, 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"expected --field value, got {token!r}")
        name, has_value, value = token[2:].partition("=")
        name = name.replace("-", "_")
        if not has_value:
            if i + 1 >= len(argv):
                raise ConfigError(f"--{name} needs a value")
            value = argv[i + 1]
            i += 1
        i += 1
        _check_keys([name], "the command line")
        try:
            overrides[name] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--{name}: cannot parse {value!r}: {err}") from None
    return overrides


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> RobotConfig:
    """YAML file (optional) + overrides (a `--field value` list or a dict) -> validated config."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: malformed YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        _check_keys(loaded, str(path))
        values.update({k: _coerce(k, v, str(path)) for k, v in loaded.items()})
    if overrides:
        if isinstance(overrides, dict):
            _check_keys(overrides, "overrides")
        else:
            overrides = parse_overrides(list(overrides))
        values.update({k: _coerce(k, v, "the command line") for k, v in overrides.items()})
    return RobotConfig(**values).validate()
