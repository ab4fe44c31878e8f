"""The reward-model entry point: YAML config, command-line overrides, bad configs."""

import json

import pytest
from datasets import Dataset, DatasetDict

from reward_model.modeling import NotARewardModelError, RewardModel
from reward_model.train import main, parse_config, train
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


def _implicit_prompt_rows(n):
    """TRL's implicit-prompt conversational rows: the user turn sits inside chosen and rejected."""
    def turns(question, answer):
        return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [{"chosen": turns(f"Question {i}?", f"A good answer {i}."), "rejected": turns(f"Question {i}?", f"No {i}.")}
            for i in range(n)]


def test_implicit_prompt_conversational_data_trains_with_a_held_out_share(tmp_path):
    """Issue 13, defect 4: each row's user turn is its prompt, so --eval_fraction holds out
    whole prompts (before, every row had one empty prompt: 'no trainable comparison')."""
    data = tmp_path / "implicit.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _implicit_prompt_rows(8)))
    config = parse_config(["--model_name_or_path", "tiny-random-llama", "--train_data", str(data),
                           "--eval_fraction", "0.25", "--output_dir", str(tmp_path / "rm"), "--num_train_epochs", "1",
                           "--per_device_train_batch_size", "2", "--eval_strategy", "epoch", "--use_cpu", "true",
                           "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"])
    summary = train(config)
    assert (summary["train_comparisons"], summary["eval_comparisons"]) == (6, 2)
    evaluations = [entry for entry in summary["log_history"][0] if "eval_accuracy" in entry]
    assert len(evaluations) == 1 and evaluations[0]["eval_accuracy"] in (0.0, 0.5, 1.0)  # 2 held-out pairs
    assert RewardModel.load(tmp_path / "rm").score([[{"role": "user", "content": "Question 0?"}]],
                                                   [[{"role": "assistant", "content": "No 0."}]])[0].shape == (1,)


def test_train_and_eval_splits_of_a_saved_dataset(tmp_path):
    rows = _implicit_prompt_rows(8)
    DatasetDict({"train": Dataset.from_list(rows[:5]), "held": Dataset.from_list(rows[5:])}).save_to_disk(
        str(tmp_path / "prefs"))
    common = ["--model_name_or_path", "tiny-random-llama", "--train_data", str(tmp_path / "prefs"),
              "--eval_data", str(tmp_path / "prefs"), "--output_dir", str(tmp_path / "rm"), "--num_train_epochs", "1",
              "--use_cpu", "true", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
    with pytest.raises(ConfigError, match=r"^--eval_data: \S+prefs has the splits \['train', 'held'\] and no 'test'"):
        train(parse_config(common))
    summary = train(parse_config([*common, "--dataset_test_split", "held"]))
    assert (summary["train_comparisons"], summary["eval_comparisons"]) == (5, 3)


def test_a_hub_id_not_in_the_cache_is_one_error_line_offline(tmp_path, capsys, monkeypatch, forbid_model_loading):
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    code = run_main(main, ["--train_data", "trl-lib/ultrafeedback_binarized", "--output_dir", str(tmp_path / "rm")])
    err = capsys.readouterr().err
    assert code == 2 and err == ("error: --train_data: trl-lib/ultrafeedback_binarized is not a file or folder, and "
                                 "the dataset is not in the local cache (datasets or hub); the run is offline "
                                 "(HF_HUB_OFFLINE=1 is the default): set HF_HUB_OFFLINE=0 to download it\n")
