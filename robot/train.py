"""The Christiano et al. (2017) preference loop on the iiwa14 tasks, and a true-reward baseline.

    python -m robot.train --config configs/robot/reach.yaml [--field value ...]

mode = learned:
  0. segments from the random (untrained) policy; the first 25 % of the label budget is
     asked on uniformly chosen pairs of them; the reward ensemble is fitted;
  1. each round: the learner (`learner`: PPO, or SAC with its replay buffer relabelled) on
     the current learned reward -> segments of the new policy ->
     10x candidate pairs -> keep the most disputed (or random) -> teacher labels ->
     refit the ensemble on all labels; the labels per round decrease.
  With `labels_file` (e.g. human labels from the labelling app) the labels are read once
  instead, the ensemble is fitted on them, and the learner trains on that fixed reward.
  With `pretrain_steps` (SAC) the first labels are asked on segments of a policy pre-trained
  on a state-entropy reward (PEBBLE) instead of the random policy's.
mode = true_reward: the learner on the env's reward, same budget and evaluation points.

Writes to out_dir: metrics.jsonl, checkpoint.pt, segments.npz (every segment the run drew,
so clips and labels can refer to them by id), labels.jsonl, report.md and PNG curves.
An out_dir holding an earlier run is refused unless `--overwrite true` (`rlhf.outputs`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf.config import parse_config, run_main
from rlhf.ensemble import EnsembleTrainConfig
from rlhf.outputs import atomic_path, check_output_folder, start_output_folder, write_text
from rlhf.preferences import load_comparisons, save_comparisons
from robot.config import RobotConfig
from robot.policy import PPO, LearnedReward, TrueReward, evaluate_policy
from robot.reward import (ask_teacher, build_teacher, choose_queries, feature_columns, fit_reward, label_schedule,
                          make_ensemble, reward_agreement, segment_scores)
from robot.sac import SAC
from robot.segments import Segments, check_segment_length, random_pairs, sample_segments

EVAL_SEED = 10_000  # evaluation episodes use seeds disjoint from training envs
LEARNERS = {"ppo": PPO, "sac": SAC}  # RobotConfig.learner


def random_policy_episodes(learner: PPO | SAC, num_segments: int, rng: np.random.Generator) -> dict:
    """Whole episodes of uniformly random actions, about 2 segments drawn per episode."""
    rollouts_needed = rollouts_for_segments(learner.config, num_segments)
    return rollout_episodes([learner.rollout(random_policy=rng) for _ in range(rollouts_needed)])


def rollouts_for_segments(config: RobotConfig, num_segments: int) -> int:
    """Rollouts (of all sub-envs) that hold about 2 segments per episode for `num_segments`."""
    return max(1, math.ceil(num_segments / (2 * config.num_envs * config.episodes_per_rollout)))


def rollout_episodes(rollouts: list) -> dict:
    """The whole episodes of several rollouts, as one `sample_segments` input."""
    episodes = [rollout.episodes() for rollout in rollouts]
    return {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}


def reward_train_config(config: RobotConfig, round_index: int) -> EnsembleTrainConfig:
    """The ensemble's training settings for the fit of one round (its own seed)."""
    return EnsembleTrainConfig(epochs=config.reward_epochs, batch_size=config.reward_batch_size,
                               learning_rate=config.reward_learning_rate, weight_decay=config.reward_weight_decay,
                               noise=config.preference_noise, seed=config.seed * 1000 + round_index,
                               crop_range=config.surf_crop_range,
                               pseudo_label_threshold=config.surf_pseudo_label_threshold,
                               pseudo_label_weight=config.surf_pseudo_label_weight)


class Run:
    """State of one training run: the learner (PPO or SAC), reward model, segments, labels and the metrics log."""

    def __init__(self, config: RobotConfig):
        self.config = config
        self.out = start_output_folder(config.out_dir, config.overwrite)  # the config is checked: replace an earlier run
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.learner = LEARNERS[config.learner](config)
        check_segment_length(config.segment_length, self.learner.envs.max_episode_steps)
        self.obs_dim = self.learner.envs.single_observation_space.shape[0]
        self.ensemble = None
        self.segments: list[Segments] = []  # every segment drawn, in order
        self.comparisons = []  # every answered comparison
        self.unlabeled_pairs: list[tuple[str, str]] = []  # SURF: random pairs of each query's pool, never asked
        self.labels_asked = 0  # includes skipped queries: they cost the teacher time
        self.heldout: Segments | None = None  # random-policy held-out segments (never labelled)
        self.last_heldout: Segments | None = None  # those plus segments of the latest evaluation
        self.round_offset = 0  # imported segments keep their rounds; new ones are numbered after them
        self.metrics_path = self.out / "metrics.jsonl"
        self.history: list[dict] = []
        self.started = time.time()

    # --- bookkeeping ---------------------------------------------------------------------
    def log(self, row: dict) -> None:
        row = {"time": round(time.time() - self.started, 2), **row}
        self.history.append(row)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def all_segments(self) -> Segments:
        return Segments.concat(self.segments)

    def new_segments(self, episodes: dict, count: int, source_round: int) -> Segments:
        first_id = sum(len(s) for s in self.segments)
        segments = sample_segments(episodes, self.config.segment_length, count, self.rng, first_id,
                                   source_round + self.round_offset)
        self.segments.append(segments)
        return segments

    def random_policy_episodes(self, num_segments: int) -> dict:
        return random_policy_episodes(self.learner, num_segments, self.rng)

    def train_config(self, round_index: int) -> EnsembleTrainConfig:
        return reward_train_config(self.config, round_index)

    # --- evaluation ----------------------------------------------------------------------
    def evaluate(self, round_index: int, extra: dict) -> dict:
        cfg = self.config
        result = evaluate_policy(self.learner.agent, cfg.task, cfg.eval_episodes, EVAL_SEED + cfg.seed * 1000)
        row = {"round": round_index, "timesteps": self.learner.timesteps, "labels": self.labels_asked,
               "eval_return": result["return"], "eval_success": result["success"], **extra}
        if self.ensemble is not None:
            # Held-out segments: never labelled; random-policy ones plus the evaluation episodes.
            eval_episodes = {k: np.concatenate([r.episodes()[k] for r in result["rollouts"]])
                             for k in result["rollouts"][0].episodes()}
            count = max(2, cfg.heldout_segments // 2)
            current = sample_segments(eval_episodes, cfg.segment_length, count, self.rng, 0, round_index)
            heldout = Segments.concat([self.heldout, current])
            self.last_heldout = heldout
            agreement = reward_agreement(self.ensemble, heldout, seed=cfg.seed)
            row.update({f"heldout_{k}": v for k, v in agreement.items() if k != "num_segments"})
        self.log(row)
        return row

    # --- modes -----------------------------------------------------------------------------
    def run_true_reward(self, bar) -> None:
        cfg = self.config
        self.evaluate(0, {})
        if cfg.pretrain_steps:  # the same unsupervised phase as the learned run, so both use the same env steps
            self.learner.pretrain(cfg.pretrain_steps, progress=bar)
        first = self.learner.timesteps
        for round_index in range(1, cfg.num_rounds + 1):
            target = first + (cfg.total_timesteps - first) * round_index // cfg.num_rounds
            stats = self.learner.train(target - self.learner.timesteps, TrueReward(), progress=bar)
            self.evaluate(round_index, {"train_true_return": stats[-1]["true_return"] if stats else None})
            self.save_checkpoint()

    def run_learned(self, bar) -> None:
        cfg = self.config
        teacher = None if cfg.labels_file else build_teacher(cfg.teacher, cfg.teacher_kwargs, cfg.seed)
        schedule = label_schedule(cfg.label_budget, cfg.initial_label_fraction, cfg.num_rounds, cfg.schedule_decay)
        columns = feature_columns(cfg.task, cfg.reward_features, self.obs_dim, self.learner.action_dim)
        self.ensemble = make_ensemble(self.obs_dim + self.learner.action_dim, cfg.ensemble_members, cfg.reward_hidden,
                                      cfg.seed, cfg.reward_output, columns, cfg.reward_dropout)

        # Held-out random-policy segments for the learned/true correlation (never labelled).
        self.heldout = sample_segments(self.random_policy_episodes(cfg.heldout_segments), cfg.segment_length,
                                       max(2, cfg.heldout_segments // 2), self.rng, 0, -1)
        keep = rollouts_for_segments(cfg, cfg.segments_per_round)
        if cfg.pretrain_steps:  # PEBBLE: the first labels are asked on the state-entropy policy's segments
            self.learner.pretrain(cfg.pretrain_steps, keep_last=keep, progress=bar)
        if cfg.labels_file:
            self.import_labels()
        else:
            episodes = (rollout_episodes(self.learner.recent_rollouts) if cfg.pretrain_steps
                        else self.random_policy_episodes(cfg.segments_per_round))
            pool = self.new_segments(episodes, cfg.segments_per_round, -1)
            self.query(teacher, None, pool, schedule[0])
        fit_stats = fit_reward(self.ensemble, self.all_segments(), self.comparisons, self.train_config(0),
                               unlabeled_pairs=self.unlabeled_pairs)
        self.evaluate(0, fit_stats)

        first = self.learner.timesteps  # rounds share the env steps left after pretraining
        for round_index in range(1, cfg.num_rounds + 1):
            target = first + (cfg.total_timesteps - first) * round_index // cfg.num_rounds
            stats = self.learner.train(target - self.learner.timesteps, LearnedReward(self.ensemble), keep_last=keep,
                                       progress=bar)
            extra = {"train_true_return": stats[-1]["true_return"] if stats else None}
            if self.learner.recent_rollouts:
                # New segments every round; with imported labels they are the next clips to label by hand.
                episodes = rollout_episodes(self.learner.recent_rollouts)
                pool = self.new_segments(episodes, cfg.segments_per_round, round_index)
            if teacher is not None and schedule[round_index] > 0 and self.learner.recent_rollouts:
                self.query(teacher, self.ensemble, pool, schedule[round_index])
                extra.update(fit_reward(self.ensemble, self.all_segments(), self.comparisons,
                                        self.train_config(round_index), unlabeled_pairs=self.unlabeled_pairs))
            self.evaluate(round_index, extra)
            self.save_checkpoint()

    def query(self, teacher, ensemble, pool: Segments, num_queries: int) -> None:
        cfg = self.config
        num_queries = min(num_queries, len(pool) * (len(pool) - 1) // 2)
        method = cfg.query_selection if ensemble is not None else "random"
        index_a, index_b = choose_queries(ensemble, pool, num_queries, cfg.candidate_factor, method, self.rng,
                                          cfg.disagreement_method)
        answers = ask_teacher(teacher, pool, index_a, index_b)
        if cfg.surf_pseudo_label_threshold > 0:
            unlabeled_a, unlabeled_b = random_pairs(len(pool), cfg.surf_unlabeled_factor * num_queries, self.rng)
            self.unlabeled_pairs += list(zip(pool.ids[unlabeled_a].tolist(), pool.ids[unlabeled_b].tolist()))
        self.labels_asked += len(answers)
        self.comparisons += [c for c in answers if c is not None]
        if self.comparisons:
            save_comparisons(self.comparisons, self.out / "labels.jsonl")

    def import_labels(self) -> None:
        """Human (or any core-format) labels on segments saved by an earlier run (both files
        checked by RobotConfig)."""
        cfg = self.config
        self.segments = [Segments.load(cfg.segments_file)]
        self.round_offset = int(self.segments[0].source_round.max()) + 1
        self.comparisons = [c for c in load_comparisons(cfg.labels_file, format="core")]
        self.labels_asked = len(self.comparisons)

    # --- outputs ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = self.out / "checkpoint.pt"
        with atomic_path(path) as tmp:
            torch.save({
                "config": dataclasses.asdict(self.config),  # its `learner` says which agent class to build
                "obs_dim": self.obs_dim,
                "action_dim": self.learner.action_dim,
                "agent": self.learner.agent.state_dict(),
                "ensemble": None if self.ensemble is None else self.ensemble.state_dict(),
                "timesteps": self.learner.timesteps,
                "labels": self.labels_asked,
            }, tmp)
        if self.segments:  # imported segments included, so later labels can refer to old and new ids
            self.all_segments().save(self.out / "segments.npz")
        return path


def write_report(run_state: Run) -> Path:
    """report.md with learning curves, the label-efficiency curve and held-out reward agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, history, out = run_state.config, run_state.history, run_state.out
    steps = [row["timesteps"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(steps, [row["eval_return"] for row in history], marker="o")
    axes[0].set(xlabel="env steps", ylabel="true return (eval)", title=f"{cfg.task}: {cfg.mode}")
    axes[1].plot(steps, [row["eval_success"] for row in history], marker="o")
    axes[1].set(xlabel="env steps", ylabel="success rate", ylim=(-0.05, 1.05))
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=100)
    plt.close(fig)
    images = ["learning_curves.png"]

    lines = [f"# Robot preference run: {cfg.task}, mode {cfg.mode}, seed {cfg.seed}", "",
             f"- env steps ({cfg.learner.upper()}): {run_state.learner.timesteps}",
             f"- final eval: true return {history[-1]['eval_return']:.2f}, success {history[-1]['eval_success']:.0%} "
             f"over {cfg.eval_episodes} episodes",
             f"- wall time: {time.time() - run_state.started:.0f} s"]
    if cfg.mode == "learned":
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        axes[0].plot([row["labels"] for row in history], [row["eval_return"] for row in history], marker="o")
        axes[0].set(xlabel="labels asked", ylabel="true return (eval)", title="label efficiency")
        if run_state.last_heldout is not None:
            learned = segment_scores(run_state.ensemble, run_state.last_heldout)
            axes[1].scatter(run_state.last_heldout.true_returns(), learned, s=6)
            axes[1].set(xlabel="true segment return", ylabel="learned segment return", title="held-out segments")
        fig.tight_layout()
        fig.savefig(out / "label_efficiency.png", dpi=100)
        plt.close(fig)
        images.append("label_efficiency.png")
        source = cfg.labels_file or f"teacher {cfg.teacher} {cfg.teacher_kwargs}"
        lines += [f"- labels asked: {run_state.labels_asked} ({len(run_state.comparisons)} answered), from {source}, "
                  f"query selection {cfg.query_selection}",
                  f"- held-out reward agreement (final): Pearson {history[-1].get('heldout_pearson', float('nan')):.3f}, "
                  f"Spearman {history[-1].get('heldout_spearman', float('nan')):.3f}, "
                  f"pair accuracy {history[-1].get('heldout_pair_accuracy', float('nan')):.3f}"]
    lines += ["", "| round | env steps | labels | eval return | success | held-out Pearson |", "|---|---|---|---|---|---|"]
    for row in history:
        pearson = row.get("heldout_pearson")
        lines.append(f"| {row['round']} | {row['timesteps']} | {row['labels']} | {row['eval_return']:.2f} | "
                     f"{row['eval_success']:.0%} | {'' if pearson is None else f'{pearson:.3f}'} |")
    lines += [""] + [f"![{name}]({name})" for name in images] + [""]
    return write_text(out / "report.md", "\n".join(lines))


def save_heldout_returns(run_state: Run) -> Path | None:
    """heldout.npz: true and learned returns of the last evaluation's held-out segments
    (the data behind the final heldout_* metrics), for scatter plots and studies."""
    if run_state.ensemble is None or run_state.last_heldout is None:
        return None
    path = run_state.out / "heldout.npz"
    np.savez(path, true=run_state.last_heldout.true_returns(),
             learned=segment_scores(run_state.ensemble, run_state.last_heldout))
    return path


def run(config: RobotConfig, bar=None) -> dict:
    """Train per the config; returns a summary dict (also written into report.md).

    bar: an outer tqdm bar to advance by env steps (a study runs many configs under one
    bar); by default the run makes its own."""
    torch.set_num_threads(1)
    run_state = Run(config)
    own_bar = bar is None
    if own_bar:
        bar = tqdm(total=config.total_timesteps, desc=f"{config.mode} {config.task}", unit="step",
                   disable=not config.progress)
    try:
        if config.mode == "true_reward":
            run_state.run_true_reward(bar)
        else:
            run_state.run_learned(bar)
    finally:
        if own_bar:
            bar.close()
    save_heldout_returns(run_state)
    report = write_report(run_state)
    final = run_state.history[-1]
    return {"report": str(report), "out_dir": str(run_state.out), "eval_return": final["eval_return"],
            "eval_success": final["eval_success"], "labels": run_state.labels_asked,
            "timesteps": run_state.learner.timesteps, "seconds": round(time.time() - run_state.started, 1)}


def main(argv: list[str] | None = None) -> int:
    config = parse_config(RobotConfig, argv, prog="python -m robot.train")
    check_output_folder(config.out_dir, "--out_dir", config.overwrite)
    summary = run(config)
    print(f"done: {summary['timesteps']} steps, {summary['labels']} labels, eval return {summary['eval_return']:.2f}, "
          f"success {summary['eval_success']:.0%} in {summary['seconds']} s")
    print(f"report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
