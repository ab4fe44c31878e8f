"""The reward-model entry point: YAML config, command-line overrides, bad configs."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlhf.config
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


def tensorboard_scalars(folder) -> list[tuple[str, int, float]]:
    """Every scalar TensorBoard reads from the runs under ``folder``/runs: (tag, step, value)."""
    scalars = []
    for run in sorted((folder / "runs").iterdir()):
        accumulator = EventAccumulator(str(run))
        accumulator.Reload()
        scalars += [(tag, event.step, event.value) for tag in accumulator.Tags()["scalars"]
                    for event in accumulator.Scalars(tag)]
    return sorted(scalars)


def tensorboard_tag(key: str) -> str:
    """transformers' `rewrite_logs`: eval_x -> eval/x, everything else -> train/x."""
    return f"eval/{key[len('eval_'):]}" if key.startswith("eval_") else f"train/{key}"


def test_report_to_tensorboard_logs_the_trainers_history(tmp_path):
    """Issue 13, defect 5: the event file holds exactly the scalars of the log history, and
    trainer_state.json with that history is at the top of the output folder."""
    out = tmp_path / "rm"
    assert main(["--config", "configs/reward_model/smoke.yaml", "--output_dir", str(out), "--disable_tqdm", "true",
                 "--report_to", "tensorboard", "--eval_fraction", "0.3", "--eval_strategy", "epoch",
                 "--num_train_epochs", "2"]) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3, 4]  # logging_steps 1, 2 epochs
    assert sum("eval_accuracy" in entry for entry in history) == 2
    expected = sorted((tensorboard_tag(key), entry["step"], value) for entry in history
                      for key, value in entry.items() if key != "step" and isinstance(value, (int, float)))
    logged = tensorboard_scalars(out)
    assert [(tag, step) for tag, step, _ in logged] == [(tag, step) for tag, step, _ in expected]
    assert [value for *_, value in logged] == pytest.approx([value for *_, value in expected], rel=1e-6)
    results = json.loads((out / "all_results.json").read_text())
    last_eval = [entry for entry in history if "eval_accuracy" in entry][-1]
    assert results["eval_accuracy"] == last_eval["eval_accuracy"] and results["train_loss"] == history[-1]["train_loss"]


def test_an_ensembles_trainer_state_holds_every_member(tmp_path):
    out = tmp_path / "rm"
    assert main(["--config", "configs/reward_model/smoke.yaml", "--output_dir", str(out), "--disable_tqdm", "true",
                 "--ensemble_size", "2"]) == 0
    members = [json.loads((out / f"member_{i}" / "trainer_state.json").read_text()) for i in range(2)]
    top = json.loads((out / "trainer_state.json").read_text())
    assert top["log_history"] == [{**entry, "member": i} for i, state in enumerate(members)
                                  for entry in state["log_history"]]
    assert top["global_step"] == members[0]["global_step"] == members[1]["global_step"] == 3
    assert members[0]["log_history"][0]["loss"] != members[1]["log_history"][0]["loss"]  # different resamples


def test_report_to_trackio_logs_the_trainers_losses(tmp_path):
    """trackio keeps its runs in a SQLite file under TRACKIO_DIR (read when trackio is
    imported, hence a fresh process)."""
    out = tmp_path / "rm"
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "PYTHONPATH": os.getcwd()}
    subprocess.run([sys.executable, "-m", "reward_model.train", "--config", "configs/reward_model/smoke.yaml",
                    "--output_dir", str(out), "--disable_tqdm", "true", "--report_to", "trackio",
                    "--project", "rm-test", "--run_name", "smoke"], env=env, check=True, capture_output=True)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    with sqlite3.connect(tmp_path / "trackio" / "rm-test.db") as db:
        rows = [json.loads(metrics) for (metrics,) in db.execute(
            "SELECT metrics FROM metrics WHERE run_name = 'smoke' ORDER BY id")]
    assert [row["train/loss"] for row in rows if "train/loss" in row] == [e["loss"] for e in history if "loss" in e]


def test_a_tracker_that_is_not_installed_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys,
                                                                          forbid_model_loading):
    monkeypatch.setattr(rlhf.config, "get_available_reporting_integrations", lambda: ["trackio"])
    common = ["--config", "configs/reward_model/smoke.yaml", "--output_dir", str(tmp_path / "rm")]
    assert run_main(main, [*common, "--report_to", "tensorboard"]) == 2
    assert capsys.readouterr().err == ("error: --report_to: tensorboard is not installed; expected an installed "
                                       "tracker: pip install 'rlhf-toolkit[trackers]' (tensorboard and trackio)\n")
    assert run_main(main, [*common, "--report_to", "wandb"]) == 2
    assert capsys.readouterr().err == "error: --report_to: wandb is not installed; expected an installed tracker: " \
                                      "install wandb\n"
    assert not (tmp_path / "rm").exists()
