"""The catalogue of bad configs and inputs: every command answers with ONE line
``error: <where>: <what was expected>`` on stderr and exit code 2, without a traceback, and
before any expensive step (no model is loaded, no output folder is made).

Each case: the command's module, its argv, the files to create first (name -> text, in a
fresh folder; ``{tmp}`` in argv is that folder) and the words the message must contain
(the file, line or field, and what was expected). Most cases run in-process through the
module's ``main`` with ``rlhf.config.run_main``; a few run as real subprocesses.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.config import parse_config, run_main
from robot.config import RobotConfig

ROOT = Path(__file__).resolve().parents[1]
PPO_SMOKE = str(ROOT / "configs/ppo/smoke.yaml")
RM_SMOKE = str(ROOT / "configs/reward_model/smoke.yaml")
ROBOT_SMOKE = str(ROOT / "configs/robot/smoke.yaml")
RANKED = (ROOT / "tests/fixtures/ranked_small.jsonl").read_text().splitlines()
BROKEN_AT_LINE_3 = "\n".join(RANKED[:2] + ['{"prompt": "Item 2:", "completions": [" a", " b"], "ranks": [0, 1'] + RANKED[3:5])
PROJECT = ("name: t\nsources:\n  - {type: jsonl, path: items.jsonl}\nstorage: store\nusers: users.json\n")
ITEMS = '{"prompt": "a", "completions": ["x", "y"]}\n'

# (id, module, argv, files, words the message must contain)
CASES = [
    # --- unknown YAML key ------------------------------------------------------------------
    ("ppo-unknown-key", "ppo.train", ["--config", "{tmp}/bad.yaml"], {"bad.yaml": "num_step: 3\n"},
     ["bad.yaml: unknown key 'num_step'", "expected fields of PPOConfig"]),
    ("rm-unknown-key", "reward_model.train", ["--config", "{tmp}/bad.yaml"], {"bad.yaml": "los: hinge\n"},
     ["bad.yaml: unknown key 'los'", "expected fields of RewardModelConfig"]),
    ("robot-unknown-key", "robot.train", ["--config", "{tmp}/bad.yaml"], {"bad.yaml": "learning_rat: 0.1\n"},
     ["bad.yaml: unknown key 'learning_rat'", "expected fields of RobotConfig"]),
    ("label-unknown-key", "labeling_app.__main__", ["--config", "{tmp}/project.yaml", "--check"],
     {"project.yaml": PROJECT + "colour: red\n", "items.jsonl": ITEMS},
     ["project.yaml, field 'colour'", "unknown setting; expected some of"]),
    ("label-bad-export", "labeling_app.__main__", ["--config", "{tmp}/project.yaml", "--check"],
     {"project.yaml": PROJECT + "export: {ties: maybe}\n", "items.jsonl": ITEMS},
     ["project.yaml, field 'export.ties'", "expected one of ('half', 'drop'), got 'maybe'"]),
    ("label-bad-source-type", "labeling_app.__main__", ["--config", "{tmp}/project.yaml", "--check"],
     {"project.yaml": PROJECT.replace("type: jsonl", "type: pdf"), "items.jsonl": ITEMS},
     ["project.yaml, field 'sources[0].type'", "expected one of ('jsonl', 'generations', 'clips'), got 'pdf'"]),
    ("label-two-ensembles", "labeling_app.__main__", ["--config", "{tmp}/project.yaml", "--check"],
     {"project.yaml": PROJECT + "ensemble: {scores: s.jsonl, scorer: 'm:f'}\n", "items.jsonl": ITEMS},
     ["project.yaml, field 'ensemble.scores'", "expected {scores: FILE.jsonl} or {scorer: 'module:function'}"]),
    # --- unknown command-line flag ---------------------------------------------------------
    ("ppo-unknown-flag", "ppo.train", ["--config", PPO_SMOKE, "--num_step", "3"], {},
     ["--num_step: unknown flag; expected a field of PPOConfig"]),
    ("rm-unknown-flag", "reward_model.train", ["--config", RM_SMOKE, "--learning_rat", "3"], {},
     ["--learning_rat: unknown flag; expected a field of RewardModelConfig"]),
    ("robot-unknown-flag", "robot.train", ["--config", ROBOT_SMOKE, "--num_env", "4"], {},
     ["--num_env: unknown flag; expected a field of RobotConfig"]),
    ("label-unknown-flag", "labeling_app.__main__", ["--config", "{tmp}/project.yaml", "--bogus", "1"],
     {"project.yaml": PROJECT, "items.jsonl": ITEMS}, ["--bogus: unknown flag; expected one of", "--config"]),
    # --- a negative learning rate ----------------------------------------------------------
    ("ppo-negative-lr", "ppo.train", ["--config", PPO_SMOKE, "--learning_rate", "-1e-5"], {},
     ["--learning_rate: expected > 0, got -1e-05"]),
    ("rm-negative-lr", "reward_model.train", ["--config", RM_SMOKE, "--learning_rate", "-0.001"], {},
     ["--learning_rate: expected > 0, got -0.001"]),
    ("robot-negative-lr", "robot.train", ["--config", ROBOT_SMOKE, "--learning_rate", "-3e-4"], {},
     ["--learning_rate: expected a number > 0, got -0.0003"]),
    ("robot-negative-lr-yaml", "robot.train", ["--config", "{tmp}/lr.yaml"], {"lr.yaml": "learning_rate: -1e-3\n"},
     ["lr.yaml: learning_rate: expected a number > 0, got -0.001"]),
    # --- a missing config file ---------------------------------------------------------------
    ("ppo-missing-config", "ppo.train", ["--config", "{tmp}/nope.yaml"], {},
     ["nope.yaml: config file not found (expected an existing YAML file)"]),
    ("rm-missing-config", "reward_model.train", ["--config", "{tmp}/nope.yaml"], {},
     ["nope.yaml: config file not found"]),
    ("robot-missing-config", "robot.train", ["--config", "{tmp}/nope.yaml"], {},
     ["nope.yaml: config file not found"]),
    ("label-missing-config", "labeling_app.__main__", ["--config", "{tmp}/nope.yaml", "--check"], {},
     ["nope.yaml: config file not found"]),
    # --- bad data and values that only the run would have found --------------------------------
    ("rm-jsonl-broken-at-line-3", "reward_model.train",
     ["--config", RM_SMOKE, "--train_data", "{tmp}/broken.jsonl", "--output_dir", "{tmp}/out"],
     {"broken.jsonl": BROKEN_AT_LINE_3}, ["broken.jsonl, line 3"]),
    ("rm-no-train-data", "reward_model.train", ["--config", "{tmp}/rm.yaml", "--output_dir", "{tmp}/out"],
     {"rm.yaml": "model_name_or_path: tiny-random-llama\nuse_cpu: true\n"},
     ["train_data: expected a preference file (--train_data FILE"]),
    ("ppo-bad-override", "ppo.train", ["--config", PPO_SMOKE, "--mini_batch_size", "3", "--output_dir", "{tmp}/out"],
     {}, ["--mini_batch_size: 3 must divide rollout_batch_size"]),
    ("ppo-bad-int", "ppo.train", ["--config", PPO_SMOKE, "--num_steps", "three"], {},
     ["--num_steps: expected an integer, got 'three'"]),
    ("robot-bad-int-yaml", "robot.train", ["--config", "{tmp}/r.yaml"], {"r.yaml": "num_envs: 2.5\n"},
     ["r.yaml: num_envs: expected an integer, got 2.5"]),
    ("robot-bad-teacher-kwargs", "robot.train", ["--config", ROBOT_SMOKE, "--teacher_kwargs", "[0.2]"], {},
     ["--teacher_kwargs: expected a YAML mapping such as {eps: 0.2}, got '[0.2]'"]),
    ("study-bad-seed", "robot.study", ["--config", ROBOT_SMOKE, "--seeds", "0", "x", "--out_dir", "{tmp}/out"], {},
     ["--seeds: expected integers such as --seeds 0 1 2, got 'x'"]),
]

SUBPROCESS_CASES = ("ppo-unknown-key", "robot-negative-lr", "rm-jsonl-broken-at-line-3", "label-unknown-flag")


def _prepare(tmp_path: Path, argv: list[str], files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return [token.replace("{tmp}", str(tmp_path)) for token in argv]


@pytest.fixture
def nothing_expensive(monkeypatch, forbid_model_loading):
    """A model load or a robot training run before the error is reported fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a training run started before the bad config was reported")
    monkeypatch.setattr("robot.train.run", forbidden)
    monkeypatch.setattr("robot.study.run", forbidden)


@pytest.mark.parametrize("case_id, module, argv, files, words", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_clear_error_line(tmp_path, capsys, nothing_expensive, case_id, module, argv, files, words):
    argv = _prepare(tmp_path, argv, files)
    main = importlib.import_module(module).main
    assert run_main(main, argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    for word in words:
        assert word in captured.err, (word, captured.err)
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists()  # nothing written before the error


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_from_a_real_process(tmp_path, case_id):
    _, module, argv, files, words = next(case for case in CASES if case[0] == case_id)
    argv = _prepare(tmp_path, argv, files)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(word in last for word in words), result.stderr
    assert "Traceback" not in result.stderr


def test_robot_accepts_exponent_learning_rates(tmp_path, monkeypatch):
    """YAML ``learning_rate: 1e-3`` (a string to PyYAML) and ``--learning_rate 3e-4`` are numbers."""
    config_file = tmp_path / "lr.yaml"
    config_file.write_text("learning_rate: 1e-3\nreward_learning_rate: 3e-3\n")
    from_yaml = parse_config(RobotConfig, ["--config", str(config_file)])
    assert from_yaml.learning_rate == 0.001 and from_yaml.reward_learning_rate == 0.003
    from_flag = parse_config(RobotConfig, ["--config", ROBOT_SMOKE, "--learning_rate", "3e-4"])
    assert from_flag.learning_rate == 0.0003
    # and through the command itself, up to the run it would start
    seen = []
    monkeypatch.setattr("robot.train.run", lambda config: seen.append(config) or {
        "timesteps": 0, "labels": 0, "eval_return": 0.0, "eval_success": 0.0, "seconds": 0.0, "report": "-"})
    robot_train = importlib.import_module("robot.train")
    assert run_main(robot_train.main, ["--config", str(config_file), "--learning_rate", "3e-4"]) == 0
    assert seen[0].learning_rate == 0.0003 and seen[0].reward_learning_rate == 0.003


def test_one_config_error_class_with_a_one_argument_form():
    from ppo.config import PPOConfigError
    from rlhf.config import ConfigError
    from rlhf.preferences import PreferenceDataError

    two = ConfigError("--learning_rate", "expected > 0, got -1.0")
    assert str(two) == "--learning_rate: expected > 0, got -1.0" and two.where == "--learning_rate"
    one = ConfigError("a.jsonl, line 3: malformed JSON")
    assert (str(one), one.where, one.expected) == ("a.jsonl, line 3: malformed JSON", "a.jsonl, line 3", "malformed JSON")
    data = PreferenceDataError("expected a list", "a.jsonl", 3, "completions")
    assert isinstance(data, ConfigError) and str(data) == "a.jsonl, line 3, field 'completions': expected a list"
    assert issubclass(PPOConfigError, ConfigError) and str(PPOConfigError("num_steps", "expected >= 1, got 0")) == \
        "num_steps: expected >= 1, got 0"


def test_forbid_model_loading_reaches_names_bound_at_import(forbid_model_loading):
    """The guard above must catch a load through any module's own `from rlhf.models import ...`."""
    for module in ("reward_model.train", "ppo.trainer", "pipeline.comparisons"):
        with pytest.raises(AssertionError, match="a model was loaded"):
            importlib.import_module(module).load_model("tiny-random-llama")
