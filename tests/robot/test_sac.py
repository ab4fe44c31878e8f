"""SAC for the robot tasks (robot.sac): each formula against a plain loop or a hand value,
the replay buffer's transitions and relabelling, and a whole `robot.train` run with it."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from rlhf.config import ConfigError
from robot.config import RobotConfig
from robot.policy import LearnedReward, Rollout
from robot.reward import make_ensemble
from robot.sac import (SAC, ReplayBuffer, actor_loss, knn_distances, soft_q_target, squashed_gaussian_log_prob,
                       temperature_loss)


def test_squashed_gaussian_log_prob_matches_a_plain_loop():
    torch.manual_seed(0)
    pre_tanh, mean, log_std = torch.randn(4, 3) * 2, torch.randn(4, 3), torch.randn(4, 3) * 0.5
    expected = []
    for row in range(4):
        total = 0.0
        for dim in range(3):
            u, m, s = pre_tanh[row, dim].item(), mean[row, dim].item(), math.exp(log_std[row, dim].item())
            gaussian = -0.5 * ((u - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
            total += gaussian - math.log(1 - math.tanh(u) ** 2)  # change of variables a = tanh(u)
        expected.append(total)
    got = squashed_gaussian_log_prob(pre_tanh, mean, log_std)
    assert got.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    # Far in the tail tanh(u) rounds to 1 in float32; the stable form stays finite.
    assert torch.isfinite(squashed_gaussian_log_prob(torch.tensor([[30.0]]), torch.zeros(1, 1), torch.zeros(1, 1))).all()


def test_soft_q_target_actor_and_temperature_losses_by_hand():
    rewards, q1, q2 = torch.tensor([1.0, -0.5]), torch.tensor([2.0, 3.0]), torch.tensor([2.5, 1.0])
    log_prob = torch.tensor([-1.0, 0.5])
    # y = r + gamma (min(Q1, Q2) - alpha log pi): 1 + 0.9 (2 + 0.2) = 2.98; -0.5 + 0.9 (1 - 0.1) = 0.31
    assert soft_q_target(rewards, q1, q2, log_prob, 0.2, 0.9).tolist() == pytest.approx([2.98, 0.31])
    # E[alpha log pi - min Q] = ((-0.2 - 2) + (0.1 - 1)) / 2 = -1.55
    assert actor_loss(q1, q2, log_prob, 0.2).item() == pytest.approx(-1.55)
    # E[-alpha (log pi + H)] with alpha 0.5, H = -2: -0.5 ((-3) + (-1.5)) / 2 = 1.125
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    loss = temperature_loss(log_alpha, log_prob, -2.0)
    assert loss.item() == pytest.approx(1.125)
    loss.backward()  # d/d log alpha = the loss itself: alpha rises while the entropy is below target
    assert log_alpha.grad.item() == pytest.approx(1.125)


def test_knn_distances_match_a_plain_loop_and_count_the_state_itself():
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn(30, 4, generator=generator)
    states = reference[:5]
    for k in (1, 3):
        expected = [sorted(torch.linalg.norm(s - r).item() for r in reference)[k] for s in states]
        got = knn_distances(states, reference, k, chunk=7)  # several chunks
        assert got.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def fake_rollout(num_envs=2, episodes=2, horizon=3, obs_dim=2, action_dim=1) -> Rollout:
    steps = episodes * horizon
    obs = np.arange(num_envs * steps * obs_dim, dtype=np.float32).reshape(num_envs, steps, obs_dim)
    actions = np.full((num_envs, steps, action_dim), 0.5, np.float32)
    final_obs = -np.arange(num_envs * episodes * obs_dim, dtype=np.float32).reshape(num_envs, episodes, obs_dim) - 1
    zeros = np.zeros((num_envs, steps))
    return Rollout(obs=obs, actions=actions, raw_actions=actions, true_rewards=obs[..., 0].astype(np.float64),
                   success=zeros, qpos=zeros, qvel=zeros, mocap_pos=zeros, final_obs=final_obs, horizon=horizon)


def test_replay_buffer_pairs_each_step_with_its_next_observation_and_relabels():
    rollout = fake_rollout()
    buffer = ReplayBuffer(capacity=10, obs_dim=2, action_dim=1)
    rows = buffer.add_rollout(rollout)  # 12 transitions into 10 rows: the first 2 are overwritten
    assert buffer.size == 10 and rows.tolist() == [*range(10), 0, 1]
    episodes = rollout.episodes()
    # Row 4 holds episode 1, step 1; its next obs is step 2 of the same episode.
    np.testing.assert_array_equal(buffer.obs[4], episodes["obs"][1, 1])
    np.testing.assert_array_equal(buffer.next_obs[4], episodes["obs"][1, 2])
    # Row 5 is the last step of episode 1: its next obs is that episode's final observation.
    np.testing.assert_array_equal(buffer.next_obs[5], rollout.final_obs.reshape(-1, 2)[1])
    np.testing.assert_array_equal(buffer.obs[0], episodes["obs"][3, 1])  # FIFO: row 0 was rewritten
    buffer.relabel(lambda obs, actions, true: true * 2 + actions[:, 0])
    np.testing.assert_allclose(buffer.rewards, buffer.true_rewards * 2 + 0.5)


def small_config(**overrides) -> RobotConfig:
    values = dict(num_envs=4, total_timesteps=1200, sac_learning_starts=200, sac_updates_per_step=0.05,
                  sac_batch_size=32, sac_hidden_size=32, progress=False) | overrides
    return RobotConfig(**values)


def test_train_relabels_the_whole_buffer_with_the_newest_reward():
    sac = SAC(small_config())
    ensemble = make_ensemble(30, 2, 8, seed=0)
    sac.train(200, LearnedReward(ensemble))  # from an empty buffer, as a learned run's first round starts
    np.testing.assert_allclose(sac.buffer.rewards[:200], LearnedReward(ensemble)(
        sac.buffer.obs[:200], sac.buffer.actions[:200], sac.buffer.true_rewards[:200]), rtol=1e-6)
    sac.train(200, lambda obs, actions, true: np.full(len(obs), 1.0))
    assert sac.buffer.size == 400 and (sac.buffer.rewards[:400] == 1.0).all()
    stats = sac.train(200, lambda obs, actions, true: np.full(len(obs), -3.0))  # a refitted reward
    assert sac.buffer.size == 600 and (sac.buffer.rewards[:600] == -3.0).all()
    assert sac.timesteps == 600 and len(stats) == 1 and stats[0]["reward"] == -3.0  # 10 updates on it


def test_pretraining_learns_from_the_state_entropy_reward():
    sac = SAC(small_config())
    stats = sac.pretrain(400, keep_last=1)
    assert sac.timesteps == 400 and len(sac.recent_rollouts) == 1
    # The reward of the last updates: k-NN distances over their running std, so positive and O(1).
    assert 0.5 < stats[-1]["reward"] < 10
    batch = torch.from_numpy(sac.buffer.obs[:8])
    distances = knn_distances(batch, torch.from_numpy(sac.buffer.obs[:sac.buffer.size]), 5)
    assert (distances > 0).all()


def test_bad_sac_settings_are_clear_errors():
    with pytest.raises(ConfigError, match=r"^learner: expected one of \('ppo', 'sac'\), got 'td3'$"):
        RobotConfig(learner="td3")
    with pytest.raises(ConfigError, match="^pretrain_steps: expected 0 unless learner is sac"):
        RobotConfig(pretrain_steps=1000)
    with pytest.raises(ConfigError, match="^pretrain_steps: expected fewer than total_timesteps"):
        RobotConfig(learner="sac", pretrain_steps=200_000)
    with pytest.raises(ConfigError, match="^sac_tau: expected a number > 0, got 0.0$"):
        RobotConfig(learner="sac", sac_tau=0.0)


@pytest.mark.slow
def test_sac_run_with_pretraining_end_to_end(tmp_path):
    from robot.evaluate import main as evaluate_main
    from robot.train import main as train_main

    run_dir = tmp_path / "sac"
    assert train_main(["--config", "configs/robot/smoke.yaml", "--out_dir", str(run_dir), "--learner", "sac",
                       "--sac_learning_starts", "800", "--pretrain_steps", "1600"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 1600 pretraining steps, then the 3200 left split over 2 rounds; the first labels come after pretraining.
    assert [(row["round"], row["timesteps"]) for row in rows] == [(0, 1600), (1, 3200), (2, 4800)]
    assert rows[0]["labels"] == 10 and rows[-1]["labels"] == 40
    assert "env steps (SAC): 4800" in (run_dir / "report.md").read_text()
    assert evaluate_main(["--checkpoint", str(run_dir / "checkpoint.pt"), "--episodes", "4"]) == 0

    # The true-reward baseline takes the same unsupervised phase, after its round-0 evaluation of the untrained actor.
    baseline_dir = tmp_path / "baseline"
    assert train_main(["--config", "configs/robot/smoke.yaml", "--out_dir", str(baseline_dir), "--learner", "sac",
                       "--mode", "true_reward", "--sac_learning_starts", "400", "--pretrain_steps", "800",
                       "--total_timesteps", "1600", "--num_rounds", "1"]) == 0
    rows = [json.loads(line) for line in (baseline_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(row["round"], row["timesteps"]) for row in rows] == [(0, 0), (1, 1600)]


def test_learner_throughput_benchmark_prints_both_learners_and_the_ratio():
    result = subprocess.run([sys.executable, "benchmarks/robot_learner_throughput.py", "--config", "configs/robot/smoke.yaml",
                             "--steps", "400", "--rounds", "1", "--sac_learning_starts", "0"],
                            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    rates = {line.split()[0]: float(line.split()[1]) for line in result.stdout.splitlines()
             if line.split() and line.split()[0] in ("ppo", "sac")}
    ratio = float(re.search(r"ratio SAC / PPO \(CPU time\): ([\d.]+)x", result.stdout).group(1))
    assert rates["ppo"] > 0 and rates["sac"] > 0
    # the rates are printed rounded to whole steps/s and the ratio to 2 decimals: equal within both roundings
    rounding = 0.005 + ratio * (0.5 / rates["sac"] + 0.5 / rates["ppo"])
    assert abs(ratio - rates["sac"] / rates["ppo"]) <= rounding
