"""The study's numbers (normalised score, label efficiency, spread over seeds), its command line,
the reward-model feature sets, and a tiny two-seed study whose report must agree with the
runs' own metrics.jsonl (about 20 s)."""

import json

import numpy as np
import pytest
import torch

from rlhf.config import ConfigError
from robot.config import RobotConfig
from robot.reward import ensemble_from_checkpoint, feature_columns, make_ensemble
from robot.study import (label_efficiency, main, mean_and_std, normalised_score, parse_args, read_metrics,
                         run_configs, target_met)

torch.set_num_threads(1)


# --- math against hand values ---------------------------------------------------------------

def test_normalised_score_hand_values():
    # untrained -11, baseline -2: the gap is 9
    assert normalised_score(-11.0, -11.0, -2.0) == 0.0
    assert normalised_score(-2.0, -11.0, -2.0) == 1.0
    assert normalised_score(-3.0, -11.0, -2.0) == pytest.approx(8 / 9)
    assert normalised_score(-1.1, -11.0, -2.0) == pytest.approx(1.1)  # better than the baseline: above 1
    np.testing.assert_allclose(normalised_score([-6.5, -12.8], [-11.0, -11.0], [-2.0, -2.0]), [0.5, -0.2])
    # Per seed: each return against its own seed's untrained and baseline returns.
    np.testing.assert_allclose(normalised_score([-3.0, -4.0], [-11.0, -10.0], [-2.0, -2.0]), [8 / 9, 6 / 8])


def test_normalised_score_needs_a_gap():
    with pytest.raises(ValueError, match="undefined"):
        normalised_score(-3.0, -5.0, -5.0)


def test_mean_and_std_over_seeds():
    mean, std = mean_and_std([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(mean, [2.0, 4.0])
    np.testing.assert_allclose(std, [1.0, 2.0])  # population std: |3 - 1| / 2, |6 - 2| / 2
    with pytest.raises(ValueError, match="seeds, points"):
        mean_and_std([1.0, 2.0])


def test_label_efficiency_hand_values():
    rows = [{"labels": 175, "eval_return": -11.0}, {"labels": 355, "eval_return": -6.5},
            {"labels": 700, "eval_return": -2.9}]
    labels, scores = label_efficiency(rows, untrained=-11.0, baseline=-2.0)
    np.testing.assert_array_equal(labels, [175, 355, 700])
    np.testing.assert_allclose(scores, [0.0, 0.5, 0.9])


# --- command line errors --------------------------------------------------------------------

def test_target_met_hand_values():
    assert target_met(0.95, 0.95) is True
    assert target_met(0.9, 0.9) is True  # both thresholds inclusive
    assert target_met(0.89, 1.0) is False  # learned reward short of 90 % of the baseline's gain
    assert target_met(1.2, 0.85) is False  # baseline itself not successful enough
    assert target_met(-0.1, 0.0) is False


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "a", "1"], "^--seeds: expected integers such as --seeds 0 1 2, got 'a'$"),
    (["--seeds", "0.5"], "^--seeds: expected integers such as --seeds 0 1 2, got '0.5'$"),
    (["--seeds"], "^--seeds: expected at least one integer"),
    (["--seeds", "0", "0"], "^--seeds: expected each seed once"),
    (["--seeds", "-1"], "^--seeds: expected seeds >= 0, got -1$"),
    (["--seeds", "0", "--mode", "learned"], "^--mode: .*the study sets it"),
    (["--seeds", "0", "--seed", "3"], "^--seed: .*the study sets it"),
    (["--config"], "^--config: expected a value"),
])
def test_bad_study_arguments_name_the_field(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


@pytest.mark.parametrize("flag, value, message", [
    ("--num_envs", "0", "^--num_envs: expected a positive integer, got 0$"),
    ("--bogus", "1", "^--bogus: unknown flag; expected a field of RobotConfig"),
])
def test_bad_config_value_fails_before_any_run(tmp_path, flag, value, message):
    args = parse_args(["--config", "configs/robot/smoke.yaml", "--seeds", "0", flag, value,
                       "--out_dir", str(tmp_path)])
    with pytest.raises(ConfigError, match=message):
        run_configs(args)
    assert not any(tmp_path.iterdir())  # nothing was run


def test_run_configs_cover_both_modes_per_seed(tmp_path):
    args = parse_args(["--config", "configs/robot/smoke.yaml", "--seeds", "3", "5", "--out_dir", str(tmp_path)])
    configs = run_configs(args)
    assert [(c.seed, c.mode) for c in configs] == [(3, "true_reward"), (3, "learned"), (5, "true_reward"),
                                                   (5, "learned")]
    assert {c.total_timesteps for c in configs} == {4800}  # same env-step budget in both modes
    assert configs[1].out_dir == str(tmp_path / "learned" / "seed_3")


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl not found"):
        read_metrics(tmp_path)


# --- reward-model feature sets --------------------------------------------------------------

def test_feature_columns_per_set():
    assert feature_columns("reach", "obs_action", 23, 7) == tuple(range(30))
    assert feature_columns("reach", "obs", 23, 7) == tuple(range(23))
    assert feature_columns("reach", "relative", 23, 7) == (20, 21, 22)
    assert feature_columns("robot/Iiwa14Push-v0", "relative", 32, 7) == tuple(range(23, 29))
    # relative + the 7 action columns, which follow the observation in the step features
    assert feature_columns("reach", "relative_action", 23, 7) == (20, 21, 22, 23, 24, 25, 26, 27, 28, 29)
    assert feature_columns("push", "relative_action", 32, 7) == (23, 24, 25, 26, 27, 28, 32, 33, 34, 35, 36, 37, 38)
    with pytest.raises(ValueError, match="unknown reward feature set 'pixels'"):
        feature_columns("reach", "pixels", 23, 7)
    with pytest.raises(ConfigError, match="^reward_features: expected one of obs_action, obs, relative"):
        RobotConfig(reward_features="pixels")


def test_relative_columns_are_flange_minus_target():
    from robot.vec_env import make_vec_env

    envs = make_vec_env("reach", 4)
    obs, _ = envs.reset(seed=0)
    relative = obs[:, list(feature_columns("reach", "relative", 23, 7))]
    np.testing.assert_allclose(relative, obs[:, 14:17] - obs[:, 17:20], atol=1e-6)


def test_ensemble_reads_only_its_columns():
    ensemble = make_ensemble(30, members=2, hidden=8, seed=0, columns=(20, 21, 22))
    features = torch.randn(5, 30)
    changed = features.clone()
    changed[:, :20] = torch.randn(5, 20)  # everything but the relative position
    torch.testing.assert_close(ensemble.predict(features)[0], ensemble.predict(changed)[0])
    with pytest.raises(ValueError, match="columns must be in"):
        make_ensemble(30, members=2, hidden=8, seed=0, columns=(29, 30))


def test_old_checkpoint_without_feature_set_loads_with_all_features():
    new = make_ensemble(30, members=2, hidden=8, seed=0)
    # The layout before column selection: members.<i>.0 was the standardiser, no columns buffer.
    old_weights = {}
    for key, value in new.state_dict().items():
        parts = key.split(".")
        if parts[0] == "members":
            if parts[2] == "0":
                continue
            parts[2] = str(int(parts[2]) - 1)
        old_weights[".".join(parts)] = value
    state = {"ensemble": old_weights, "obs_dim": 23, "action_dim": 7,
             "config": {"task": "reach", "ensemble_members": 2, "reward_hidden": 8, "seed": 0, "reward_output": "tanh"}}
    loaded = ensemble_from_checkpoint(state)
    features = torch.randn(4, 30)
    torch.testing.assert_close(loaded.predict(features)[0], new.predict(features)[0])
    assert ensemble_from_checkpoint({**state, "ensemble": None}) is None


def test_reward_dropout_only_while_fitting():
    from rlhf.ensemble import EnsembleTrainConfig
    from rlhf.labelers import make_teacher
    from robot.reward import fit_reward
    from robot.segments import Segments

    ensemble = make_ensemble(30, members=2, hidden=8, seed=0, dropout=0.5)
    dropouts = [m for m in ensemble.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 4 and all(m.p == 0.5 for m in dropouts)  # 2 hidden layers x 2 members
    assert not ensemble.training  # predictions never drop units
    assert not any(isinstance(m, torch.nn.Dropout) for m in make_ensemble(30, 2, 8, 0).modules())

    rng = np.random.default_rng(0)
    n, steps = 12, 5
    obs = rng.normal(size=(n, steps, 23)).astype(np.float32)
    segments = Segments(ids=np.array([f"s{i}" for i in range(n)]), obs=obs,
                        actions=rng.normal(size=(n, steps, 7)).astype(np.float32),
                        true_rewards=-np.abs(obs[..., 20]).astype(np.float64),
                        qpos=np.zeros((n, steps, 7)), qvel=np.zeros((n, steps, 7)), mocap_pos=np.zeros((n, steps, 1, 3)),
                        source_round=np.full(n, -1))
    a, b = np.arange(0, n, 2), np.arange(1, n, 2)
    labels = make_teacher("oracle").label_pairs(segments.true_rewards[a], segments.true_rewards[b],
                                                segments.ids[a].tolist(), segments.ids[b].tolist())
    fit_reward(ensemble, segments, labels, EnsembleTrainConfig(epochs=3, seed=0))
    assert not ensemble.training
    features = segments.features()
    torch.testing.assert_close(ensemble.predict(features)[0], ensemble.predict(features)[0])  # deterministic
    # Members are normalised (zero mean, unit std) without dropout, on the labelled segments' steps.
    steps_seen = ensemble.member_step_rewards(features.reshape(-1, 30))
    torch.testing.assert_close(steps_seen.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(steps_seen.std(1), torch.ones(2), atol=1e-4, rtol=0)

    state = {"ensemble": ensemble.state_dict(), "obs_dim": 23, "action_dim": 7,
             "config": {"task": "reach", "ensemble_members": 2, "reward_hidden": 8, "seed": 0, "reward_output": "tanh",
                        "reward_features": "obs_action", "reward_dropout": 0.5}}
    torch.testing.assert_close(ensemble_from_checkpoint(state).predict(features)[0], ensemble.predict(features)[0])
    with pytest.raises(ConfigError, match=r"^reward_dropout: expected in \[0, 1\), got 1.0$"):
        RobotConfig(reward_dropout=1.0)


# --- a tiny study: the report agrees with metrics.jsonl -------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    argv = ["--config", "configs/robot/smoke.yaml", "--seeds", "0", "1", "--out_dir", str(out),
            "--total_timesteps", "1600", "--label_budget", "20", "--segments_per_round", "20",
            "--eval_episodes", "4", "--heldout_segments", "10", "--reward_epochs", "2"]
    assert main(argv) == 0
    return out, json.loads((out / "study.json").read_text())


@pytest.mark.slow
def test_study_numbers_match_the_runs_metrics(tiny_study):
    out, summary = tiny_study
    assert summary["seeds"] == [0, 1]
    for entry in summary["per_seed"]:
        true_rows = read_metrics(out / "true_reward" / f"seed_{entry['seed']}")
        learned_rows = read_metrics(out / "learned" / f"seed_{entry['seed']}")
        untrained, baseline, learned = (true_rows[0]["eval_return"], true_rows[-1]["eval_return"],
                                        learned_rows[-1]["eval_return"])
        # Both modes start from the same initial policy and use the same env steps.
        assert learned_rows[0]["eval_return"] == pytest.approx(untrained)
        assert true_rows[-1]["timesteps"] == learned_rows[-1]["timesteps"] == 1600
        assert learned_rows[-1]["labels"] == 20
        assert entry["untrained_return"] == untrained and entry["baseline_return"] == baseline
        assert entry["learned_return"] == learned
        assert entry["normalised_score"] == pytest.approx((learned - untrained) / (baseline - untrained))
        assert entry["learned_success"] == learned_rows[-1]["eval_success"]
        # The held-out scatter is the data behind the final held-out Pearson.
        held = entry["heldout_returns"]
        assert np.corrcoef(held["true"], held["learned"])[0, 1] == pytest.approx(learned_rows[-1]["heldout_pearson"],
                                                                                 abs=1e-5)
        assert entry["heldout_pearson"] == learned_rows[-1]["heldout_pearson"]
    mean = summary["mean"]
    returns = {k: [e[k] for e in summary["per_seed"]] for k in ("untrained_return", "baseline_return", "learned_return")}
    assert mean["learned_return"] == pytest.approx(np.mean(returns["learned_return"]))
    assert summary["normalised_score"] == pytest.approx(
        (np.mean(returns["learned_return"]) - np.mean(returns["untrained_return"]))
        / (np.mean(returns["baseline_return"]) - np.mean(returns["untrained_return"])))
    # 1,600 env steps cannot solve reach: the baseline succeeds in none of the 4 evaluation episodes
    assert mean["baseline_success"] == 0.0 and summary["target_met"] is False


@pytest.mark.slow
def test_study_curves_are_means_over_seeds(tiny_study):
    out, summary = tiny_study
    for mode in ("true_reward", "learned"):
        runs = [read_metrics(out / mode / f"seed_{s}") for s in (0, 1)]
        returns = np.array([[row["eval_return"] for row in rows] for rows in runs])
        curve = summary["curves"][mode]
        assert curve["steps"] == [row["timesteps"] for row in runs[0]] == [0, 800, 1600]
        np.testing.assert_allclose(curve["return_mean"], returns.mean(0))
        np.testing.assert_allclose(curve["return_std"], returns.std(0))
    # Label efficiency: the learned runs' label counts, normalised returns averaged over seeds.
    learned = [read_metrics(out / "learned" / f"seed_{s}") for s in (0, 1)]
    assert summary["label_efficiency"]["labels"] == [row["labels"] for row in learned[0]] == [5, 15, 20]
    scores = [[(row["eval_return"] - e["untrained_return"]) / (e["baseline_return"] - e["untrained_return"])
               for row in rows] for rows, e in zip(learned, summary["per_seed"])]
    np.testing.assert_allclose(summary["label_efficiency"]["score_mean"], np.mean(scores, axis=0))
    assert summary["label_efficiency"]["score_mean"][0] == pytest.approx(0.0)  # round 0: the untrained policy


@pytest.mark.slow
def test_study_report_shows_the_numbers(tiny_study):
    out, summary = tiny_study
    report = (out / "study.md").read_text()
    assert (out / "study.png").stat().st_size > 10_000
    for entry in summary["per_seed"]:
        assert f"| {entry['seed']} | {entry['untrained_return']:.2f} | {entry['baseline_return']:.2f} |" in report
        assert f"{entry['normalised_score']:.3f}" in report
    assert f"{summary['normalised_score']:.3f}" in report
    assert "wall time of the whole study" in report and "normalised score = (R - R_untrained)" in report


def test_rlhf_robot_study_reports_config_errors_without_traceback(capsys):
    from robot.cli import main as robot_main

    assert robot_main(["study", "--seeds", "x"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --seeds: expected integers such as --seeds 0 1 2, got 'x'\n"
