"""The catalogue of bad configs and inputs: every command answers with ONE line
``error: <where>: <what was expected>`` on stderr and exit code 2, without a traceback, and
before any expensive step (no model is loaded, no output folder is made).

Each case: the command's module, its argv, the files to create first (name -> text, in a
fresh folder; ``{tmp}`` in argv is that folder) and the words the message must contain
(the file, line or field, and what was expected; a word starting with ``!`` must NOT be in
it). Files under ``out/`` stand for an earlier run: every case checks that nothing on disk
changed (no file written, none altered). Most cases run in-process through the module's
``main`` with ``rlhf.config.run_main``; a few run as real subprocesses.

docs/results.md quotes the catalogue's size as "cases with a clean error out of cases
tried"; ``test_the_results_page_quotes_the_catalogue`` keeps that figure true.
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
PIPELINE_SMOKE = str(ROOT / "configs/pipeline/smoke.yaml")
RANKED_TIE = '{"prompt": "p", "completions": ["a", "b", "c"], "ranks": [0, 1, 1]}\n'
NOT_UTF8 = b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'
NOT_COMPARABLE = "".join(f'{{"items": ["a{i}", "b{i}"], "kind": "not_comparable", "prompt": "p{i}"}}\n'
                         for i in range(3))
EARLIER_RUN = {"out/metrics.jsonl": '{"step": 1}\n{"step": 2}\n', "out/summary.json": "{}\n"}
UNWRITABLE = "/sys/rlhf-catalogue-out"  # a folder nobody (root included) can write into
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
    # the smoke configs say precision: fp32; the old bf16 flag asking for bf16 contradicts them
    ("ppo-bf16-vs-precision", "ppo.train", ["--config", PPO_SMOKE, "--bf16", "true", "--output_dir", "{tmp}/out"], {},
     ["smoke.yaml: precision: 'bf16: true' asks for bf16 but 'precision: fp32' for fp32"]),
    ("rm-bf16-vs-precision", "reward_model.train", ["--config", RM_SMOKE, "--bf16", "true", "--output_dir", "{tmp}/out"],
     {}, ["smoke.yaml: precision: 'bf16: true' asks for bf16 but 'precision: fp32' for fp32"]),
    ("rm-unknown-precision", "reward_model.train", ["--config", RM_SMOKE, "--precision", "fp16"], {},
     ["--precision: expected one of ('auto', 'bf16', 'fp32'), got 'fp16'"]),
    ("ppo-bad-override", "ppo.train", ["--config", PPO_SMOKE, "--num_mini_batches", "0", "--output_dir", "{tmp}/out"],
     {}, ["--num_mini_batches: expected >= 1, got 0"]),
    ("ppo-bad-int", "ppo.train", ["--config", PPO_SMOKE, "--total_episodes", "three"], {},
     ["--total_episodes: expected an integer, got 'three'"]),
    ("robot-bad-int-yaml", "robot.train", ["--config", "{tmp}/r.yaml"], {"r.yaml": "num_envs: 2.5\n"},
     ["r.yaml: num_envs: expected an integer, got 2.5"]),
    ("robot-bad-teacher-kwargs", "robot.train", ["--config", ROBOT_SMOKE, "--teacher_kwargs", "[0.2]"], {},
     ["--teacher_kwargs: expected a YAML mapping such as {eps: 0.2}, got '[0.2]'"]),
    ("study-bad-seed", "robot.study", ["--config", ROBOT_SMOKE, "--seeds", "0", "x", "--out_dir", "{tmp}/out"], {},
     ["--seeds: expected integers such as --seeds 0 1 2, got 'x'"]),
    # --- whole-file errors name the file; non-UTF-8 input -------------------------------------
    ("convert-missing-input", "pipeline.convert", ["{tmp}/nope.jsonl", "{tmp}/new.jsonl"], {},
     ["nope.jsonl: file not found", "!<data>"]),
    ("convert-empty-input", "pipeline.convert", ["{tmp}/empty.jsonl", "{tmp}/new.jsonl"], {"empty.jsonl": ""},
     ["empty.jsonl: no rows found", "!<data>"]),
    ("convert-csv-input", "pipeline.convert", ["{tmp}/data.csv", "{tmp}/new.jsonl"], {"data.csv": "a,b\n"},
     ["data.csv: unsupported file type '.csv'; expected .jsonl, .json or .parquet", "!<data>"]),
    ("convert-not-utf8", "pipeline.convert", ["{tmp}/latin1.jsonl", "{tmp}/new.jsonl"], {"latin1.jsonl": NOT_UTF8},
     ["latin1.jsonl: expected a UTF-8 text file"]),
    ("rm-not-utf8", "reward_model.train", ["--config", RM_SMOKE, "--train_data", "{tmp}/latin1.jsonl",
                                           "--output_dir", "{tmp}/new"], {"latin1.jsonl": NOT_UTF8},
     ["latin1.jsonl: expected a UTF-8 text file"]),
    ("convert-ties-flag", "pipeline.convert", ["{tmp}/tie.jsonl", "{tmp}/new.jsonl", "--to", "trl"],
     {"tie.jsonl": RANKED_TIE}, ["tie.jsonl", "ties cannot be written as TRL rows", "--ties drop", "!ties='drop'"]),
    # --- output paths: an earlier run, a folder for a file, a file for a folder, unwritable ----
    ("convert-output-exists", "pipeline.convert", ["{tmp}/in.jsonl", "{tmp}/old.jsonl"],
     {"in.jsonl": RANKED[0] + "\n", "old.jsonl": "{}\n"}, ["--output", "old.jsonl already exists", "--overwrite true"]),
    ("convert-output-is-input", "pipeline.convert", ["{tmp}/in.jsonl", "{tmp}/in.jsonl", "--to", "ranked"],
     {"in.jsonl": RANKED[0] + "\n"}, ["--output", "in.jsonl already exists", "--overwrite true"]),
    ("convert-output-is-folder", "pipeline.convert", ["{tmp}/in.jsonl", "{tmp}/out"],
     {"in.jsonl": RANKED[0] + "\n", **EARLIER_RUN}, ["--output", "out is a folder; expected a file path"]),
    ("convert-output-unwritable", "pipeline.convert", ["{tmp}/in.jsonl", UNWRITABLE + "/new.jsonl"],
     {"in.jsonl": RANKED[0] + "\n"}, ["--output", "cannot write into /sys", "expected a writable folder"]),
    ("rm-earlier-run", "reward_model.train", ["--config", RM_SMOKE, "--train_data", str(ROOT / "tests/fixtures/ranked_small.jsonl"),
                                              "--output_dir", "{tmp}/out"], EARLIER_RUN,
     ["--output_dir", "holds an earlier run", "--overwrite true", "--resume_from_checkpoint"]),
    ("rm-output-is-file", "reward_model.train", ["--config", RM_SMOKE, "--train_data", str(ROOT / "tests/fixtures/ranked_small.jsonl"),
                                                 "--output_dir", "{tmp}/model.txt"], {"model.txt": "x"},
     ["--output_dir", "model.txt is a file; expected a folder"]),
    ("rm-output-unwritable", "reward_model.train", ["--config", RM_SMOKE, "--train_data", str(ROOT / "tests/fixtures/ranked_small.jsonl"),
                                                    "--output_dir", UNWRITABLE], {},
     ["--output_dir", "cannot write into /sys"]),
    ("ppo-earlier-run", "ppo.train", ["--config", PPO_SMOKE, "--output_dir", "{tmp}/out"], EARLIER_RUN,
     ["--output_dir", "holds an earlier run", "--overwrite true", "--resume_from_checkpoint latest"]),
    ("ppo-output-is-file", "ppo.train", ["--config", PPO_SMOKE, "--output_dir", "{tmp}/run.txt"], {"run.txt": "x"},
     ["--output_dir", "run.txt is a file; expected a folder"]),
    ("ppo-overwrite-and-resume", "ppo.train", ["--config", PPO_SMOKE, "--output_dir", "{tmp}/out", "--overwrite", "true",
                                               "--resume_from_checkpoint", "latest"], EARLIER_RUN,
     ["--overwrite", "expected either --overwrite true or --resume_from_checkpoint latest, not both"]),
    ("pipeline-earlier-run", "pipeline.end_to_end", ["--config", PIPELINE_SMOKE, "--out", "{tmp}/out"], EARLIER_RUN,
     ["--out", "holds an earlier run", "--overwrite true"]),
    ("demo-earlier-run", "pipeline.rm_demo", ["--out", "{tmp}/out"], EARLIER_RUN,
     ["--out", "holds an earlier run", "--overwrite true"]),
    ("robot-earlier-run", "robot.train", ["--config", ROBOT_SMOKE, "--out_dir", "{tmp}/out"], EARLIER_RUN,
     ["--out_dir", "holds an earlier run", "--overwrite true"]),
    ("study-earlier-run", "robot.study", ["--config", ROBOT_SMOKE, "--seeds", "0", "--out_dir", "{tmp}/out"],
     EARLIER_RUN, ["--out_dir", "holds an earlier run", "--overwrite true"]),
    ("robot-overwrite-bad-input", "robot.train", ["--config", ROBOT_SMOKE, "--out_dir", "{tmp}/out", "--overwrite", "true",
                                                  "--segment_length", "500"], EARLIER_RUN, ["--segment_length", "500"]),
    ("ppo-overwrite-bad-input", "ppo.train", ["--config", PPO_SMOKE, "--output_dir", "{tmp}/out", "--overwrite", "true",
                                              "--prompts", "{tmp}/none.jsonl"], EARLIER_RUN, ["prompts", "none.jsonl"]),
    ("rm-overwrite-bad-input", "reward_model.train", ["--config", RM_SMOKE, "--train_data", "{tmp}/broken.jsonl",
                                                      "--output_dir", "{tmp}/out", "--overwrite", "true"],
     {"broken.jsonl": BROKEN_AT_LINE_3, **EARLIER_RUN}, ["broken.jsonl, line 3"]),
    ("robot-labels-without-segments", "robot.train", ["--config", ROBOT_SMOKE, "--labels_file", "{tmp}/l.jsonl",
                                                      "--out_dir", "{tmp}/new"], {"l.jsonl": NOT_COMPARABLE},
     ["smoke.yaml: segments_file: expected the segments.npz the labels_file refers to"]),
    ("evalrm-earlier-run", "reward_model.evaluate", ["--model_name_or_path", "{tmp}/model", "--eval_data", "{tmp}/d.jsonl",
                                                     "--output_dir", "{tmp}/out"], {"d.jsonl": RANKED[0] + "\n", **EARLIER_RUN},
     ["--output_dir", "holds an earlier run", "--overwrite true"]),
    # --- a missing model, resume flags, values only a run would have found -----------------------
    ("rm-missing-model", "reward_model.train", ["--config", RM_SMOKE, "--train_data", str(ROOT / "tests/fixtures/ranked_small.jsonl"),
                                                "--model_name_or_path", "{tmp}/no-such-model", "--output_dir", "{tmp}/new"],
     {}, ["--model_name_or_path", "no-such-model", "expected a toolkit model name, a model folder or a hub id"]),
    ("ppo-missing-model", "ppo.train", ["--config", PPO_SMOKE, "--sft_model_path", "{tmp}/no-such-model",
                                        "--output_dir", "{tmp}/new"],
     {}, ["sft_model_path", "no-such-model", "expected a toolkit model name, a model folder or a hub id"]),
    ("evalrm-missing-model", "reward_model.evaluate", ["--model_name_or_path", "{tmp}/no-such-model", "--eval_data",
                                                       "{tmp}/d.jsonl", "--output_dir", "{tmp}/new"],
     {"d.jsonl": RANKED[0] + "\n"}, ["--model_name_or_path", "no-such-model"]),
    ("rm-resume-true-nothing-to-resume", "reward_model.train",
     ["--config", RM_SMOKE, "--train_data", str(ROOT / "tests/fixtures/ranked_small.jsonl"), "--output_dir", "{tmp}/new",
      "--resume_from_checkpoint", "true"], {},
     ["--resume_from_checkpoint", "no checkpoint-N folder", "expected a checkpoint folder"]),
    ("rm-resume-missing-folder", "reward_model.train",
     ["--config", RM_SMOKE, "--train_data", str(ROOT / "tests/fixtures/ranked_small.jsonl"), "--output_dir", "{tmp}/new",
      "--resume_from_checkpoint", "{tmp}/checkpoint-9"], {},
     ["--resume_from_checkpoint", "checkpoint-9 not found"]),
    ("robot-segment-length-500", "robot.train", ["--config", ROBOT_SMOKE, "--segment_length", "500",
                                                 "--out_dir", "{tmp}/new"], {},
     ["--segment_length", "500", "the reach task's 50-step episode"]),
    ("robot-missing-labels-file", "robot.train", ["--config", ROBOT_SMOKE, "--labels_file", "{tmp}/nope.jsonl",
                                                  "--segments_file", "{tmp}/nope.npz", "--out_dir", "{tmp}/new"], {},
     ["--labels_file", "nope.jsonl", "expected an existing"]),
    ("pipeline-negative-num-prompts", "pipeline.end_to_end", ["--config", "{tmp}/p.yaml"], {"p.yaml": "num_prompts: -3\n"},
     ["p.yaml: num_prompts: expected >= 1"]),
    ("pipeline-labels-all-not-comparable", "pipeline.end_to_end",
     ["--config", PIPELINE_SMOKE, "--labels", "{tmp}/labels.jsonl", "--out", "{tmp}/new"], {"labels.jsonl": NOT_COMPARABLE},
     ["--labels", "labels.jsonl", "no trainable comparison (3 not comparable)", "!train.jsonl"]),
    ("evalrm-negative-bootstrap", "reward_model.evaluate", ["--model_name_or_path", "{tmp}/m", "--eval_data", "{tmp}/d.jsonl",
                                                            "--bootstrap", "-5"], {},
     ["--bootstrap: expected >= 0 (0: no confidence intervals), got -5"]),
    ("pipeline-unknown-key", "pipeline.end_to_end", ["--config", "{tmp}/p.yaml"], {"p.yaml": "num_prompt: 3\n"},
     ["p.yaml: unknown key 'num_prompt'", "expected fields of PipelineConfig"]),
    ("pipeline-missing-config", "pipeline.end_to_end", ["--config", "{tmp}/nope.yaml"], {},
     ["nope.yaml: config file not found"]),
    ("convert-unknown-flag", "pipeline.convert", ["{tmp}/in.jsonl", "{tmp}/new.jsonl", "--tie", "drop"],
     {"in.jsonl": RANKED[0] + "\n"}, ["--tie: unknown flag; expected a field of ConvertConfig"]),
    ("evalrm-unknown-flag", "reward_model.evaluate", ["--model_name_or_path", "{tmp}/m", "--bootstrp", "5"], {},
     ["--bootstrp: unknown flag; expected a field of EvaluateConfig"]),
]

SUBPROCESS_CASES = ("ppo-unknown-key", "robot-negative-lr", "rm-jsonl-broken-at-line-3", "label-unknown-flag",
                    "rm-earlier-run", "convert-not-utf8")


def _prepare(tmp_path: Path, argv: list[str], files: dict[str, str | bytes]) -> list[str]:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return [token.replace("{tmp}", str(tmp_path)) for token in argv]


def _disk(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``: what a failed command must not change."""
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def _check_message(err: str, words: list[str]) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        if word.startswith("!"):
            assert word[1:] not in err, (word, err)
        else:
            assert word in err, (word, err)


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
    before = _disk(tmp_path)
    main = importlib.import_module(module).main
    assert run_main(main, argv) == 2
    captured = capsys.readouterr()
    _check_message(captured.err, words)
    assert "Traceback" not in captured.err + captured.out
    assert _disk(tmp_path) == before  # nothing written, nothing already there changed


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_from_a_real_process(tmp_path, case_id):
    _, module, argv, files, words = next(case for case in CASES if case[0] == case_id)
    argv = _prepare(tmp_path, argv, files)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    _check_message(result.stderr, words)  # the one line, no warning or traceback around it


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
    assert issubclass(PPOConfigError, ConfigError) and str(PPOConfigError("total_episodes", "expected >= 1, got 0")) == \
        "total_episodes: expected >= 1, got 0"


def test_forbid_model_loading_reaches_names_bound_at_import(forbid_model_loading):
    """The guard above must catch a load through any module's own `from rlhf.models import ...`."""
    for module in ("reward_model.train", "ppo.trainer", "pipeline.comparisons"):
        with pytest.raises(AssertionError, match="a model was loaded"):
            importlib.import_module(module).load_model("tiny-random-llama")


def test_the_results_page_quotes_the_catalogue():
    """Every case above passing is the figure "N of N cases a clean error" in the docs."""
    assert f"{len(CASES)} of {len(CASES)} catalogue cases" in (ROOT / "docs/results.md").read_text()


def test_renamed_fields_are_aliases_with_one_warning_line_each(tmp_path, capsys):
    """rlhf.config's alias mechanism on any dataclass: old YAML keys and flags land in the new
    field, each with a warning naming the new name; old and new together are refused."""
    import dataclasses

    from rlhf.config import ConfigError, config_from_dict

    @dataclasses.dataclass
    class Toy:
        _renamed_fields = {"lr": "learning_rate", "out": "output_dir"}
        learning_rate: float = dataclasses.field(default=0.1, metadata={"help": "step size"})
        output_dir: str = dataclasses.field(default="x", metadata={"help": "folder"})

    path = tmp_path / "toy.yaml"
    path.write_text("lr: 0.5\n")
    assert parse_config(Toy, ["--config", str(path), "--out", "y"]) == Toy(learning_rate=0.5, output_dir="y")
    assert config_from_dict(Toy, {"out": "z"}, "section") == Toy(output_dir="z")
    assert capsys.readouterr().err.splitlines() == [
        "warning: command line: '--out' is deprecated, use '--output_dir' instead; the old name goes in the next release",
        f"warning: {path}: 'lr' is deprecated, use 'learning_rate' instead; the old name goes in the next release",
        "warning: section: 'out' is deprecated, use 'output_dir' instead; the old name goes in the next release"]
    with pytest.raises(ConfigError) as error:
        config_from_dict(Toy, {"lr": 0.5, "learning_rate": 0.2}, "section")
    assert str(error.value) == "section: lr: give only 'learning_rate' (the new name of 'lr'), not both"
