"""rlhf.outputs: the one rule every command follows for what is already on disk."""

import json

import pytest

from rlhf.config import ConfigError
from rlhf.outputs import atomic_path, check_output_file, check_output_folder, cut_log, start_output_folder


def test_an_earlier_run_is_refused_unless_overwritten_or_resumed(tmp_path):
    run = tmp_path / "run"
    check_output_folder(run, "--out")  # new: fine, and nothing is made
    run.mkdir()
    check_output_folder(run, "--out")  # empty: fine
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ConfigError, match="holds an earlier run.*--overwrite true.*--resume_from latest"):
        check_output_folder(run, "--out", resume_flag="--resume_from latest")
    check_output_folder(run, "--out", overwrite=True)
    check_output_folder(run, "--out", resume=True)
    with pytest.raises(ConfigError, match="not both"):
        check_output_folder(run, "--out", overwrite=True, resume=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["metrics.jsonl", "run"]  # the checks wrote nothing


def test_overwrite_replaces_the_earlier_run_whole(tmp_path):
    run = tmp_path / "run"
    (run / "member_1").mkdir(parents=True)
    (run / "ensemble.json").write_text("{}")
    start_output_folder(run, overwrite=False)
    assert (run / "ensemble.json").exists()
    start_output_folder(run, overwrite=True)
    assert run.is_dir() and list(run.iterdir()) == []


def test_output_file_checks(tmp_path):
    existing = tmp_path / "a.jsonl"
    existing.write_text("x\n")
    with pytest.raises(ConfigError, match="already exists"):
        check_output_file(existing, "--output")
    check_output_file(existing, "--output", overwrite=True)
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path, "--output", overwrite=True)


def test_atomic_path_leaves_the_old_file_or_the_new_one_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_cut_log_keeps_each_step_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    cut_log(log, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    cut_log(tmp_path / "missing.jsonl", 2)  # nothing to cut
