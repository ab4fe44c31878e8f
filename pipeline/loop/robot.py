"""The robot version of the live loop (`task: robot`): people (or bots) compare clip pairs
of a robot policy while PPO optimises the reward learned from their answers.

    rlhf loop --config configs/loop/robot_reach.yaml

It is Christiano et al. (2017, section 2.2)'s asynchronous loop on the iiwa14 tasks, run
with the text loop's app, bots and launcher (`pipeline.loop.launch`); only its two trainers
differ:

- `RobotRewardPart` is the text loop's `RewardPart` (same pulling, held-out split by item
  id, versioned and atomic publishing) whose fit is `robot.reward.fit_reward` of a
  `SegmentRewardEnsemble` on the clip comparisons (items = segment ids);
- `RobotPolicyPart` is the robot stage's PPO (`robot.policy.PPO`) on the `LearnedReward` of
  the newest published ensemble, switched at round boundaries. After each round it samples
  segments from the round's rollouts, keeps the `queries_per_iteration` pairs the ensemble
  disagrees on most (`robot.reward.choose_queries`, Christiano's 10x candidates), saves
  those segments (durably: the reward part reads their features), renders each pair to two
  WebM clips, appends their true returns to ``policy/returns.jsonl`` (the bots' eyes) and
  sends the clip items to the app with the disagreement as priority.

The config is `RobotLoopConfig` (the loop fields shared with the text loop) plus a `robot:`
section, a `robot.config.RobotConfig` whose run folder, seed, budget and teacher the loop
sets itself. Files under ``out/policy``: segments/ (``sNNNNNNN.npz``, named by their first
segment id), clips/, initial.json, returns.jsonl, sent.jsonl, metrics.jsonl (one row per
round), checkpoint.pt; each reward version holds ensemble.pt and meta.json.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from labeling_app.http_client import AdminClient
from pipeline.loop import report
from pipeline.loop.config import LoopFields, LoopPaths
from pipeline.loop.policy import QueryingPart
from pipeline.loop.reward import RewardPart, append_durably, is_heldout
from rlhf.config import ConfigError, parse_nested_config
from rlhf.ensemble import SegmentRewardEnsemble, disagreement
from rlhf.metrics import pairwise_accuracy
from rlhf.outputs import cut_log
from rlhf.preferences import Comparison, load_comparisons
from robot.config import RobotConfig
from robot.policy import PPO, LearnedReward, evaluate_policy
from robot.render import CLIP_HEIGHT, CLIP_WIDTH, encode_video, render_qpos
from robot.reward import (choose_queries, comparison_arrays, ensemble_from_checkpoint, feature_columns, fit_reward,
                          make_ensemble, reward_agreement, segment_scores)
from robot.segments import Segments, check_segment_length, sample_segments
from robot.study import normalised_score
from robot.train import EVAL_SEED, random_policy_episodes, reward_train_config, rollout_episodes

STAGES = {"robot": RobotConfig}
STAGE_DEFAULTS = {"robot": {"config": "configs/robot/reach.yaml"}}
ENSEMBLE_FILE = "ensemble.pt"


# =====================================================================================
# Config
# =====================================================================================

@dataclass
class RobotLoopConfig(LoopFields):
    """The live loop on robot clips: the loop fields of `LoopConfig` (one iteration is one
    round of the `robot:` section's PPO) and the clips' size."""

    task: str = field(default="robot", metadata={"help": "robot (this page); text: `LoopConfig`"})
    out: str = field(default="runs/loop/robot", metadata={"help": "output folder"})
    clip_width: int = field(default=CLIP_WIDTH, metadata={
        "help": "clip width in pixels (even): the front and side views side by side, each half of it"})
    clip_height: int = field(default=CLIP_HEIGHT, metadata={"help": "clip height in pixels (even)"})
    baseline_return: float | None = field(default=None, metadata={
        "help": "eval return of true-reward PPO with the same `robot:` settings (e.g. from robot.study); "
                "with it the report gives the normalised score"})

    def __post_init__(self):
        LoopFields.__post_init__(self)
        if self.task != "robot":
            raise ConfigError("task", f"'robot' for RobotLoopConfig, got {self.task!r}")
        for name in ("clip_width", "clip_height"):
            value = getattr(self, name)
            if value < 2 or value % 2:
                raise ConfigError(name, f"an even number of pixels >= 2, got {value}")


def stage_paths(config: RobotLoopConfig) -> dict[str, dict]:
    """What the loop sets in the `robot:` section itself (a user value is refused)."""
    return {"robot": {"mode": "learned", "out_dir": str(LoopPaths(config.out).policy), "seed": config.seed,
                      "label_budget": config.label_budget, "teacher": config.teacher,
                      "teacher_kwargs": config.teacher_kwargs}}


def parse_config(argv: list[str] | None = None, prog: str = "rlhf loop") -> tuple[RobotLoopConfig, RobotConfig,
                                                                                  RobotConfig]:
    """(loop config, reward stage, policy stage): both stages are the one `robot:` section."""
    config, stages = parse_nested_config(RobotLoopConfig, STAGES, argv, prog=prog, section_defaults=STAGE_DEFAULTS,
                                         derived=stage_paths)
    robot = stages["robot"]
    if robot.query_selection == "disagreement" and robot.ensemble_members < 2:
        raise ConfigError("robot.ensemble_members", ">= 2 to choose queries by disagreement")
    if robot.surf_pseudo_label_threshold > 0:  # the reward part sees only the clips sent as queries
        raise ConfigError("robot.surf_pseudo_label_threshold", "expected 0 in the live loop (its reward part has no "
                          f"unlabelled pairs; surf_crop_range works), got {robot.surf_pseudo_label_threshold}")
    if robot.learner != "ppo":  # the policy part's checkpoint and resume are PPO's (docs/loop.md, left out)
        raise ConfigError("robot.learner", f"expected 'ppo' in the live loop (sac runs in python -m robot.train), got {robot.learner!r}")
    return config, robot, robot


# =====================================================================================
# Segments, clips and ensembles on disk (shared by the two parts)
# =====================================================================================

def segments_dir(paths: LoopPaths) -> Path:
    return paths.policy / "segments"


def save_segments(segments: Segments, folder: Path) -> Path:
    """Write segments as ``sNNNNNNN.npz`` (their first id) whole or not at all: a hidden
    .tmp file, fsync'd, then renamed. A reader never sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{segments.ids[0]}.npz"
    tmp = folder / f".tmp-{path.name}"
    segments.save(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_segments(folder: Path) -> Segments | None:
    """Every saved segment (None before the first)."""
    files = sorted(folder.glob("s*.npz"))
    return Segments.concat([Segments.load(f) for f in files]) if files else None


def next_segment_id(folder: Path) -> int:
    """One past the largest saved segment id: ids stay unique across rounds and restarts."""
    saved = load_segments(folder)
    return 0 if saved is None else max(int(sid[1:]) for sid in saved.ids.tolist()) + 1


def save_ensemble(ensemble: SegmentRewardEnsemble, path: Path, robot: RobotConfig, obs_dim: int,
                  action_dim: int) -> None:
    """In the layout of a `robot.train` checkpoint, so `ensemble_from_checkpoint` reads it."""
    torch.save({"config": dataclasses.asdict(robot), "obs_dim": obs_dim, "action_dim": action_dim,
                "ensemble": ensemble.state_dict()}, path)


def load_ensemble(version_dir: Path) -> SegmentRewardEnsemble:
    return ensemble_from_checkpoint(torch.load(version_dir / ENSEMBLE_FILE, map_location="cpu", weights_only=False))


def heldout_pair_accuracy(ensemble: SegmentRewardEnsemble, segments: Segments, comparisons: list[Comparison]) -> float:
    """Share of the held-out votes whose preferred clip the ensemble scores higher (labelled
    ties left out), with segment scores as in Christiano et al.'s Bradley-Terry model: the
    sum of the per-step rewards."""
    index_a, index_b, labels = comparison_arrays(comparisons, segments)
    scores = segment_scores(ensemble, segments)
    return pairwise_accuracy(scores[index_a], scores[index_b], labels, labelled_ties="skip")


# =====================================================================================
# The reward part
# =====================================================================================

class RobotRewardPart(RewardPart):
    """`RewardPart` whose versions are segment-reward ensembles fitted on clip comparisons."""

    def __init__(self, config: RobotLoopConfig, robot: RobotConfig, client: AdminClient | None = None):
        super().__init__(config, robot, client)
        self.robot = robot

    def due(self) -> bool:
        """As the text loop, once a vote can train (a fit needs one pair outside the held-out share)."""
        return super().due() and any(
            label["comparison"] is not None and label["comparison"]["kind"] == "pair"
            and not is_heldout(label["item_id"], self.config.heldout_every) for label in self.labels)

    def train_version(self, tmp: Path, version: int) -> dict:
        """Fit the ensemble (warm: the previous version's members and input scale; refits keep
        training them, as `robot.train` does) on ``tmp/train.jsonl``; save it and check it on
        the held-out votes."""
        segments = load_segments(segments_dir(self.paths))
        obs_dim, action_dim = segments.obs.shape[-1], segments.actions.shape[-1]
        warm = self.config.warm_start and self.version > 0
        if warm:
            ensemble = load_ensemble(self.paths.version_dir(self.version))
        else:
            cfg = self.robot
            columns = feature_columns(cfg.task, cfg.reward_features, obs_dim, action_dim)
            ensemble = make_ensemble(obs_dim + action_dim, cfg.ensemble_members, cfg.reward_hidden, cfg.seed,
                                     cfg.reward_output, columns, cfg.reward_dropout)
        stats = fit_reward(ensemble, segments, load_comparisons(tmp / "train.jsonl", format="core"),
                           reward_train_config(self.robot, version))
        save_ensemble(ensemble, tmp / ENSEMBLE_FILE, self.robot, obs_dim, action_dim)
        heldout_file = tmp / "heldout.jsonl"
        heldout = [c for c in load_comparisons(heldout_file, format="core") if c.kind == "pair"] \
            if heldout_file.exists() else []
        return {"heldout_accuracy": heldout_pair_accuracy(ensemble, segments, heldout) if heldout else None,
                "warm_start_from": str(self.paths.version_dir(self.version)) if warm else None, **stats}


# =====================================================================================
# The policy part
# =====================================================================================

class RobotPolicyPart(QueryingPart):
    """PPO on the newest learned reward; each round's most disputed segment pairs, as clips,
    to the app. Never waits after start-up."""

    @staticmethod
    def iterations(robot: RobotConfig) -> int:
        """Rows the part logs (the launcher's progress bar): the untrained policy's, then one per round."""
        return robot.num_rounds + 1

    @staticmethod
    def write_report(paths: LoopPaths) -> Path:
        return write_robot_report(paths)

    def __init__(self, config: RobotLoopConfig, robot: RobotConfig, client: AdminClient | None = None):
        super().__init__(config, client)
        self.robot = robot
        torch.set_num_threads(1)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.ppo = PPO(robot)
        check_segment_length(robot.segment_length, self.ppo.envs.max_episode_steps)
        self.segments = segments_dir(self.paths)
        self.clips = self.paths.policy / "clips"
        self.metrics = self.paths.policy / "metrics.jsonl"
        self.checkpoint = self.paths.policy / "checkpoint.pt"
        self.round = 0
        self.ensemble: SegmentRewardEnsemble | None = None

    @property
    def step(self) -> int:
        return self.round

    # -- clip items ----------------------------------------------------------------------
    def clip(self, segments: Segments, index: int) -> bytes:
        """A segment's WebM clip (real time: fps = 1 / env dt), rendered once and kept, so a
        re-sent item is byte for byte the one the app holds."""
        path = self.clips / f"{segments.ids[index]}.webm"
        if not path.exists():
            frames = render_qpos(self.ppo.envs.model, segments.qpos[index], mocap_pos=segments.mocap_pos[index],
                                 width=self.config.clip_width, height=self.config.clip_height)
            tmp = self.clips / f".tmp-{path.name}"
            encode_video(frames, tmp, fps=1.0 / self.ppo.envs.dt)
            os.replace(tmp, path)
        return path.read_bytes()

    def clip_items(self, segments: Segments, index_a, index_b) -> list[dict]:
        return [{"id": f"{segments.ids[a]}-{segments.ids[b]}", "segments": [str(segments.ids[a]), str(segments.ids[b])],
                 "clip_data": [base64.b64encode(self.clip(segments, i)).decode() for i in (a, b)]}
                for a, b in zip(index_a, index_b)]

    def write_returns(self, segments: Segments, items: list[dict]) -> None:
        """The bots' eyes: each item's true segment returns, A then B."""
        index = {sid: i for i, sid in enumerate(segments.ids.tolist())}
        returns = segments.true_returns()
        append_durably(self.paths.returns, [{"item_id": item["id"], "returns": [float(returns[index[s]])
                                                                                  for s in item["segments"]]}
                                            for item in items])

    def new_segments(self, episodes: dict, source_round: int) -> Segments:
        return sample_segments(episodes, self.robot.segment_length, self.robot.segments_per_round, self.rng,
                               next_segment_id(self.segments), source_round)

    def publish_pairs(self, pool: Segments, index_a, index_b) -> list[dict]:
        """Save the pairs' segments, render their clips and write their true returns: after
        this, a vote on any of them can be fitted and a bot can answer it."""
        used = np.unique(np.concatenate([index_a, index_b]))
        saved = pool.subset(used)
        save_segments(saved, self.segments)
        position = {i: k for k, i in enumerate(used.tolist())}
        index_a, index_b = [position[i] for i in index_a], [position[i] for i in index_b]
        items = self.clip_items(saved, index_a, index_b)
        self.write_returns(saved, items)
        return items

    # -- start-up ------------------------------------------------------------------------
    def initial_items(self) -> list[dict]:
        """Uniformly chosen pairs of random-policy segments for the initial labels (Christiano
        et al. 2017 label clips of the untrained policy first; B-Pref's uniform first batch).
        Drawn once: ``initial.json`` names them, so a restart re-sends the same items."""
        plan = self.paths.policy / "initial.json"
        if plan.exists():
            saved = load_segments(self.segments)
            pairs = json.loads(plan.read_text())["pairs"]
            return self.clip_items(saved, saved.index_of([a for a, _ in pairs]), saved.index_of([b for _, b in pairs]))
        count = self.config.labels_before_first_fit // self.config.overlap
        episodes = random_policy_episodes(self.ppo, self.robot.segments_per_round, self.rng)
        pool = self.new_segments(episodes, -1)
        count = min(count, len(pool) * (len(pool) - 1) // 2)
        index_a, index_b = choose_queries(None, pool, count, self.robot.candidate_factor, "random", self.rng)
        items = self.publish_pairs(pool, index_a, index_b)
        plan.write_text(json.dumps({"pairs": [item["segments"] for item in items]}))
        return items

    def start(self) -> None:
        """Send the initial items, wait for the first reward version, resume a checkpoint."""
        self.send_initial_and_wait(self.initial_items())
        self.version = self.paths.latest_version()
        if self.checkpoint.exists():
            self.resume(torch.load(self.checkpoint, map_location="cpu", weights_only=False))
        self.ensemble = load_ensemble(self.paths.version_dir(self.version))
        cut_log(self.metrics, self.round)

    def maybe_switch(self) -> None:
        """At a round boundary: the newest published ensemble, if newer than the one in use."""
        newest = self.paths.latest_version()
        if newest != self.version:
            self.ensemble, self.version = load_ensemble(self.paths.version_dir(newest)), newest

    # -- queries -------------------------------------------------------------------------
    def send_queries(self) -> dict:
        """New segments of this round's rollouts; of `candidate_factor` x the room in random
        pairs, those the members disagree on most (Christiano et al. 2017, section 2.2.4: the
        variance of the members' preference probabilities; `robot.disagreement_method`) go
        to the app as clips, the disagreement as priority."""
        if self.items_sent >= self.budget_items:
            return {"loop/queries_sent": 0}
        open_now, room = self.room()
        if not room or not self.ppo.recent_rollouts:
            return {"loop/queue_open": open_now if open_now is not None else -1, "loop/queries_sent": 0}
        pool = self.new_segments(rollout_episodes(self.ppo.recent_rollouts), self.round)
        room = min(room, len(pool) * (len(pool) - 1) // 2)
        cfg = self.robot
        index_a, index_b = choose_queries(self.ensemble, pool, room, cfg.candidate_factor, cfg.query_selection,
                                          self.rng, cfg.disagreement_method)
        with torch.no_grad():
            members = self.ensemble.member_segment_scores(pool.features())
        spread = disagreement(members[:, index_a], members[:, index_b], cfg.disagreement_method).tolist()
        items = self.publish_pairs(pool, index_a, index_b)
        sent = self.send(items, {item["id"]: d for item, d in zip(items, spread)})
        return {"loop/queue_open": open_now, "loop/queries_sent": sent,
                "loop/query_disagreement": float(np.mean(spread))}

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self) -> dict:
        """True return and success of the deterministic policy (the robot stage's evaluation
        episodes), and how the reward in use ranks segments of them against their true returns."""
        cfg = self.robot
        result = evaluate_policy(self.ppo.agent, cfg.task, cfg.eval_episodes, EVAL_SEED + cfg.seed * 1000)
        segments = sample_segments(rollout_episodes(result["rollouts"]), cfg.segment_length,
                                   max(2, cfg.heldout_segments // 2), np.random.default_rng(cfg.seed), 0, self.round)
        agreement = reward_agreement(self.ensemble, segments, seed=cfg.seed)
        return {"eval/return": result["return"], "eval/success": result["success"],
                "eval/reward_pearson": agreement["pearson"], "eval/reward_pair_accuracy": agreement["pair_accuracy"]}

    # -- checkpoint ------------------------------------------------------------------------
    def save(self) -> None:
        """`robot.train.Run.save_checkpoint`'s layout plus the loop's state, written whole
        (tmp, then rename)."""
        state = {"config": dataclasses.asdict(self.robot), "obs_dim": self.ppo.envs.single_observation_space.shape[0],
                 "action_dim": self.ppo.action_dim, "agent": self.ppo.agent.state_dict(),
                 "ensemble": self.ensemble.state_dict(), "timesteps": self.ppo.timesteps,
                 "labels": self.items_sent * self.config.overlap, "optimizer": self.ppo.optimizer.state_dict(),
                 "round": self.round, "reward_version": self.version, "rng": self.rng.bit_generator.state,
                 "startup_seconds": self.startup_seconds}
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint)

    def resume(self, state: dict) -> None:
        self.ppo.agent.load_state_dict(state["agent"])
        self.ppo.optimizer.load_state_dict(state["optimizer"])
        self.ppo.timesteps, self.round, self.version = state["timesteps"], state["round"], state["reward_version"]
        self.rng.bit_generator.state = state["rng"]
        self.startup_seconds = state["startup_seconds"]
        self.ppo.obs, _ = self.ppo.envs.reset(seed=self.config.seed + 1000 * self.round)  # episodes restart

    # -- the part ------------------------------------------------------------------------
    def run(self) -> dict:
        self.start()
        cfg = self.robot
        keep = max(1, -(-cfg.segments_per_round // (2 * cfg.num_envs * cfg.episodes_per_rollout)))
        if self.round == 0 and not self.metrics.exists():
            append_durably(self.metrics, [{"step": 0, "timesteps": 0, "loop/reward_version": self.version,
                                           **self.evaluate()}])  # the untrained policy
        while self.round < cfg.num_rounds:
            self.maybe_switch()
            started = time.time()
            target = cfg.total_timesteps * (self.round + 1) // cfg.num_rounds
            stats = self.ppo.train(target - self.ppo.timesteps, LearnedReward(self.ensemble), keep_last=keep)
            self.round += 1
            row = {"step": self.round, "timesteps": self.ppo.timesteps, "loop/reward_version": self.version,
                   "train/true_return": stats[-1]["true_return"] if stats else None,
                   "train/learned_return": stats[-1]["optimised_return"] if stats else None,
                   "time/ppo": time.time() - started}
            row |= self.send_queries()
            if self.round % cfg.eval_every_rounds == 0 or self.round == cfg.num_rounds:
                row |= self.evaluate()
            row |= {"loop/items_sent": self.items_sent, "loop/waited_seconds": 0.0}
            append_durably(self.metrics, [row])
            self.save()
            self.heartbeat(phase="training", true_return=row["train/true_return"])
        summary = {"rounds": self.round, "timesteps": self.ppo.timesteps, "startup_seconds": self.startup_seconds,
                   "items_sent": self.items_sent, "reward_version": self.version}
        (self.paths.policy / "summary.json").write_text(json.dumps(summary, indent=2))
        self.heartbeat(phase="done")
        return summary


# =====================================================================================
# The report
# =====================================================================================

def robot_summary(paths: LoopPaths) -> dict:
    """The loop's shared summary plus the robot's evaluation: the true return of the policy
    before and after, and the normalised score (R - R_untrained) / (R_baseline - R_untrained)
    of robot.study when the config names the true-reward baseline's return."""
    metrics = report.rows(paths.policy / "metrics.jsonl")
    config = json.loads(paths.config.read_text())["loop"]
    evaluated = [m for m in metrics if "eval/return" in m]
    first, last = (evaluated[0], evaluated[-1]) if evaluated else ({}, {})
    score = None
    if config.get("baseline_return") is not None and evaluated and config["baseline_return"] != first["eval/return"]:
        score = float(normalised_score(last["eval/return"], first["eval/return"], config["baseline_return"]))
    rounds = [m for m in metrics if m["step"] > 0]
    return report.loop_summary(paths, rounds) | {
        "return_before": first.get("eval/return"), "return_after": last.get("eval/return"),
        "success_before": first.get("eval/success"), "success_after": last.get("eval/success"),
        "baseline_return": config.get("baseline_return"), "normalised_score": score,
        "reward_pearson_final": last.get("eval/reward_pearson"),
        "reward_pair_accuracy_final": last.get("eval/reward_pair_accuracy")}


def write_robot_report(paths: LoopPaths) -> Path:
    summary = robot_summary(paths)
    (paths.out / "summary.json").write_text(json.dumps(summary, indent=2))
    metrics = report.rows(paths.policy / "metrics.jsonl")
    evaluated = [m for m in metrics if "eval/return" in m]
    report.plot_panels(paths.out / "loop.png", paths, [m for m in metrics if m["step"] > 0], [
        ("true return of the policy (eval)", "round", [m["step"] for m in evaluated],
         [m["eval/return"] for m in evaluated])])
    fmt = report.fmt
    lines = [
        "# Live preference loop on robot clips", "",
        report.overview(summary, "PPO rounds"), "",
        "| measure | value |", "|---|---|",
        f"| true return (eval), before -> after | {fmt(summary['return_before'])} -> {fmt(summary['return_after'])} |",
        f"| success (eval), before -> after | {fmt(summary['success_before'], '.0%')} -> "
        f"{fmt(summary['success_after'], '.0%')} |",
        f"| normalised score (true-reward baseline {fmt(summary['baseline_return'])}) | "
        f"{fmt(summary['normalised_score'])} |",
        f"| learned vs true segment return, last evaluation: Pearson / pair accuracy | "
        f"{fmt(summary['reward_pearson_final'])} / {fmt(summary['reward_pair_accuracy_final'])} |",
        report.round_trip_row(summary), "",
        "![the loop](loop.png)", "", *report.version_table(summary)]
    path = paths.out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
