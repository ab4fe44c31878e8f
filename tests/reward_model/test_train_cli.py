"""The reward-model entry point: YAML config, command-line overrides, bad configs."""

import json

import pytest

from reward_model.modeling import NotARewardModelError, RewardModel
from reward_model.train import main, parse_config
from rlhf.config import ConfigError, run_main


def test_yaml_config_with_cli_override(tmp_path):
    out = tmp_path / "rm"
    code = main(["--config", "configs/reward_model/smoke.yaml", "--output_dir", str(out), "--learning_rate", "5e-4",
                 "--disable_tqdm", "true"])
    assert code == 0
    config = parse_config(["--config", "configs/reward_model/smoke.yaml", "--learning_rate", "5e-4"])
    assert config.learning_rate == 5e-4 and config.loss == "pairwise_ranking"  # override wins, YAML kept
    stats = json.loads((out / "reward_stats.json").read_text())
    assert stats["n"] == 12 * 4
    model = RewardModel.load(out)
    mean, std = model.score(["Item 0:"] * 2, [" red apple", " blue"])
    assert mean.shape == (2,) and std.tolist() == [0.0, 0.0]


def test_a_smaller_ensemble_over_an_earlier_run_is_exactly_the_new_model(tmp_path, capsys):
    """Issue 12, item 10: the old ensemble.json and member folders must not outlive --overwrite."""
    out = tmp_path / "rm"
    common = ["--config", "configs/reward_model/smoke.yaml", "--output_dir", str(out), "--disable_tqdm", "true",
              "--num_train_epochs", "1"]
    assert main([*common, "--ensemble_size", "2"]) == 0 and len(RewardModel.load(out).members) == 2
    assert run_main(main, [*common, "--ensemble_size", "1"]) == 2  # refused: an earlier run is there
    assert "holds an earlier run" in capsys.readouterr().err and (out / "ensemble.json").exists()
    assert main([*common, "--ensemble_size", "1", "--overwrite", "true"]) == 0
    assert not (out / "ensemble.json").exists() and not list(out.glob("member_*"))
    assert len(RewardModel.load(out).members) == 1


def test_bad_configs_fail_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: hinge\ntrain_data: x.jsonl\n")
    with pytest.raises(ConfigError, match=f"^{bad}: loss: expected one of"):
        parse_config(["--config", str(bad), "--output_dir", str(tmp_path)])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("los: bradley_terry\n")
    with pytest.raises(ConfigError, match=f"^{unknown}: unknown key 'los'; expected fields of RewardModelConfig"):
        parse_config(["--config", str(unknown), "--output_dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="^--learning_rate: expected > 0, got -0.001$"):
        parse_config(["--config", "configs/reward_model/smoke.yaml", "--learning_rate", "-1e-3"])
    with pytest.raises(NotARewardModelError, match="no config.json"):
        RewardModel.load(tmp_path)
