"""Configuration of the robot preference loop: one dataclass, parsed by rlhf.config.

    config = parse_config(RobotConfig, ["--config", "configs/robot/reach.yaml", "--seed", "1"])
    python -m robot.train --config configs/robot/reach.yaml --learning_rate 3e-4 --teacher_kwargs "{eps: 0.2}"

Every hyper-parameter lives in `RobotConfig` with a comment saying what it does. A YAML
file sets any subset of the fields; `--field value` on the command line overrides it (TRL's
parser through `rlhf.config.parse_config`: unknown keys are refused, a dict field reads a
YAML mapping). Values wrong on their own are refused by `RobotConfig.__post_init__` with a
`ConfigError` naming the field.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlhf.config import ConfigError
from robot.envs import ENV_IDS, TASKS

MODES = ("learned", "true_reward")
LEARNERS = ("ppo", "sac")
QUERY_METHODS = ("disagreement", "random")
REWARD_FEATURES = ("obs_action", "obs", "relative", "relative_action")
POSITIVE_INTEGERS = ("num_envs", "episodes_per_rollout", "total_timesteps", "update_epochs", "num_minibatches",
                     "num_rounds", "segment_length", "segments_per_round", "candidate_factor", "ensemble_members",
                     "reward_epochs", "reward_batch_size", "eval_episodes", "hidden_size", "reward_hidden",
                     "eval_every_rounds", "heldout_segments", "sac_hidden_size", "sac_batch_size", "sac_buffer_size",
                     "sac_entropy_k", "surf_unlabeled_factor")
POSITIVE_NUMBERS = ("learning_rate", "reward_learning_rate", "clip_range", "max_grad_norm", "obs_clip",
                    "sac_q_learning_rate", "sac_policy_learning_rate", "sac_init_alpha", "sac_tau",
                    "sac_updates_per_step")


def _fail(name: str, expected: str):
    raise ConfigError(name, f"expected {expected}")


@dataclass
class RobotConfig:
    # --- run -------------------------------------------------------------------------
    task: str = "reach"  # robot.vec_env task name: reach or push
    mode: str = "learned"  # learned: Christiano loop on preferences; true_reward: PPO baseline
    seed: int = 0  # seeds envs, torch, teacher and segment sampling
    out_dir: str = "runs/robot/reach"  # checkpoints, metrics.jsonl, report.md, plots, segments
    progress: bool = True  # tqdm bars
    overwrite: bool = False  # replace an earlier run in out_dir (deleted once the config is checked); without it an earlier run is refused

    # --- environment / rollouts --------------------------------------------------------
    num_envs: int = 16  # parallel sub-envs; all reset together, so rollouts are whole episodes
    episodes_per_rollout: int = 1  # episodes per sub-env per PPO update (batch = num_envs * this * 50 on reach)
    total_timesteps: int = 120_000  # env steps of PPO over the whole run

    learner: str = "ppo"  # ppo (robot.policy) or sac (robot.sac: off-policy, replay buffer relabelled after each refit, PEBBLE)

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

    # --- SAC (learner = sac; CleanRL sac_continuous_action defaults unless noted; gamma above) --
    sac_hidden_size: int = 256  # width of the two ReLU hidden layers of the actor and each Q network
    sac_q_learning_rate: float = 1e-3  # Adam, twin Q networks and the temperature
    sac_policy_learning_rate: float = 3e-4  # Adam, actor
    sac_batch_size: int = 256  # transitions per gradient step
    sac_buffer_size: int = 200_000  # replay capacity in transitions (FIFO; CleanRL: 1e6); >= total_timesteps keeps everything
    sac_tau: float = 0.005  # Polyak step of the target Q networks
    sac_learning_starts: int = 5_000  # env steps of uniform random actions before the first gradient step
    sac_updates_per_step: float = 0.25  # gradient steps per env step, taken after each rollout of whole episodes (CleanRL: 1; a quarter keeps a 60k-step run to minutes on a CPU)
    sac_init_alpha: float = 0.1  # initial entropy temperature, then tuned to entropy -dim(A) (B-Pref's init 0.1)
    pretrain_steps: int = 0  # PEBBLE unsupervised pre-training: env steps on a state-entropy reward before the first labels (sac only; true_reward runs it too, for equal env steps)
    sac_entropy_k: int = 5  # k of the k-nearest-neighbour state-entropy estimate (B-Pref: 5)

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
    teacher_kwargs: dict = field(default_factory=lambda: {"eps": 0.1})  # teacher arguments (its seed is added); on the command line a YAML mapping: --teacher_kwargs "{eps: 0.2}"
    labels_file: str | None = None  # core-format JSONL of human labels (items = segment ids) instead of a teacher
    segments_file: str | None = None  # segments.npz the labels refer to (RUN/segments.npz of the run that drew them); needed with labels_file
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
    surf_crop_range: int = 0  # SURF temporal cropping: each labelled pair is fitted on windows up to this many steps shorter (SURF: 5); 0 = off
    surf_pseudo_label_threshold: float = 0.0  # SURF pseudo-labels: unlabelled pairs a member is this sure of join its loss (SURF's code: 0.95); 0 = off
    surf_unlabeled_factor: int = 10  # SURF: random unlabelled pairs drawn from each query's pool per label asked
    surf_pseudo_label_weight: float = 1.0  # SURF's lambda_u: weight of the pseudo-label loss

    # --- evaluation ------------------------------------------------------------------------
    eval_episodes: int = 32  # deterministic-policy episodes per evaluation
    eval_every_rounds: int = 1  # evaluate after every this many rounds (baseline: per equal time slice)

    def __post_init__(self):
        self._check_types()
        if self.task not in TASKS and self.task not in ENV_IDS.values():
            _fail("task", f"one of {', '.join(sorted(TASKS))}, got {self.task!r}")
        if self.mode not in MODES:
            _fail("mode", f"one of {MODES}, got {self.mode!r}")
        if self.learner not in LEARNERS:
            _fail("learner", f"one of {LEARNERS}, got {self.learner!r}")
        if self.pretrain_steps < 0 or self.sac_learning_starts < 0:
            name = "pretrain_steps" if self.pretrain_steps < 0 else "sac_learning_starts"
            _fail(name, f"an integer >= 0, got {getattr(self, name)!r}")
        if self.pretrain_steps and self.learner != "sac":
            _fail("pretrain_steps", f"0 unless learner is sac (the state-entropy phase is SAC's), got {self.pretrain_steps}")
        if self.pretrain_steps >= self.total_timesteps:
            _fail("pretrain_steps", f"fewer than total_timesteps ({self.total_timesteps}), got {self.pretrain_steps}")
        if not 0 <= self.surf_crop_range < self.segment_length:
            _fail("surf_crop_range", f"in [0, segment_length = {self.segment_length}), got {self.surf_crop_range}")
        if not 0.0 <= self.surf_pseudo_label_threshold < 1.0 or 0 < self.surf_pseudo_label_threshold <= 0.5:
            _fail("surf_pseudo_label_threshold", f"0 (off) or in (0.5, 1), got {self.surf_pseudo_label_threshold}")
        if self.surf_pseudo_label_weight < 0:
            _fail("surf_pseudo_label_weight", f"a number >= 0, got {self.surf_pseudo_label_weight}")
        if self.query_selection not in QUERY_METHODS:
            _fail("query_selection", f"one of {QUERY_METHODS}, got {self.query_selection!r}")
        for name in POSITIVE_INTEGERS:
            if getattr(self, name) < 1:
                _fail(name, f"a positive integer, got {getattr(self, name)!r}")
        for name in POSITIVE_NUMBERS:
            if not getattr(self, name) > 0:
                _fail(name, f"a number > 0, got {getattr(self, name)!r}")
        if self.mode == "learned" and self.label_budget < 2:
            _fail("label_budget", f">= 2, got {self.label_budget}")
        if not 0 < self.initial_label_fraction < 1:
            _fail("initial_label_fraction", f"in (0, 1), got {self.initial_label_fraction}")
        if self.reward_output not in ("tanh", "linear"):
            _fail("reward_output", f"'tanh' or 'linear', got {self.reward_output!r}")
        if not 0.0 <= self.reward_dropout < 1.0:
            _fail("reward_dropout", f"in [0, 1), got {self.reward_dropout}")
        if self.reward_features not in REWARD_FEATURES:
            _fail("reward_features", f"one of {', '.join(REWARD_FEATURES)}, got {self.reward_features!r}")
        if self.query_selection == "disagreement" and self.ensemble_members < 2:
            _fail("ensemble_members", f">= 2 for query_selection 'disagreement', got {self.ensemble_members}")
        task = next((name for name, env_id in ENV_IDS.items() if env_id == self.task), self.task)
        episode = TASKS[task]().max_episode_steps
        if self.segment_length > episode:
            _fail("segment_length", f"at most the {task} task's {episode}-step episode (segments never cross "
                                    f"episodes), got {self.segment_length}")
        for name in ("labels_file", "segments_file"):
            if getattr(self, name) is not None and not Path(getattr(self, name)).is_file():
                _fail(name, f"an existing file, got {getattr(self, name)}")
        if self.labels_file is not None and self.segments_file is None:
            _fail("segments_file", "the segments.npz the labels_file refers to (RUN/segments.npz of the run "
                                   "that drew them), got none")

    def _check_types(self) -> None:
        """YAML values arrive untyped (TRL's parser converts only strings): check each
        against its annotation; an integer stands for a float."""
        for name, annotation in typing.get_type_hints(RobotConfig).items():
            value = getattr(self, name)
            args = typing.get_args(annotation)
            if value is None and type(None) in args:
                continue
            expected = next((a for a in args if a is not type(None)), annotation)
            if isinstance(value, str) and expected is dict:  # a YAML/JSON mapping given as text
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    pass
                setattr(self, name, value)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
            elif expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                _fail(name, f"an integer, got {value!r}")
            elif expected is float and (isinstance(value, bool) or not isinstance(value, float)):
                _fail(name, f"a number, got {value!r}")
            elif expected in (bool, str, dict) and not isinstance(value, expected):
                what = {bool: "true or false", str: "a string", dict: "a mapping such as {eps: 0.2}"}[expected]
                _fail(name, f"{what}, got {value!r}")

