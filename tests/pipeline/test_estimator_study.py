"""`rlhf estimators` on the smoke pipeline: runs, table and picture, and the config errors."""

import json

import numpy as np
import pytest

from pipeline.end_to_end import main as pipeline_main
from pipeline.estimator_study import main, table_rows
from rlhf.config import run_main

SMOKE = "configs/pipeline/smoke.yaml"


@pytest.mark.slow
def test_study_reproduces_the_pipeline_and_tabulates_every_run(tmp_path):
    base, study = tmp_path / "base", tmp_path / "study"
    assert pipeline_main(["--config", SMOKE, "--out", str(base)]) == 0
    argv = ["--pipeline_config", SMOKE, "--pipeline_out", str(base), "--num_generations", "2", "--out", str(study)]
    assert main([*argv, "--runs", "gae:0", "grpo:0"]) == 0
    pipeline = json.loads((base / "summary.json").read_text())
    gae = json.loads((study / "gae_seed0" / "result.json").read_text())
    # gae with the pipeline's seed is the pipeline's own PPO run: the same held-out outcome
    assert gae["gold_after"] == pytest.approx(pipeline["gold_after"]["mean"], abs=1e-12)
    assert gae["kl_final"] == pytest.approx(pipeline["kl_final"], abs=1e-9)
    assert gae["nll_increase"] == pytest.approx(pipeline["nll_increase"], abs=1e-9)
    grpo = json.loads((study / "grpo_seed0" / "result.json").read_text())
    assert grpo["num_generations"] == 2 and grpo["episodes"] == gae["episodes"] == 16
    # a second invocation with --resume keeps both runs and adds one
    assert main([*argv, "--runs", "gae:0", "gae:1", "--resume", "true"]) == 0
    assert json.loads((study / "gae_seed0" / "result.json").read_text()) == gae
    rows = {row["estimator"]: row for row in json.loads((study / "estimators.json").read_text())}
    gains = [json.loads((study / f"gae_seed{s}" / "result.json").read_text())["gold_gain_in_std"] for s in (0, 1)]
    assert rows["gae"]["seeds"] == [0, 1] and rows["gae"]["gold_gain_in_std"] == pytest.approx(np.mean(gains))
    assert rows["gae"]["gold_gain_in_std_std"] == pytest.approx(np.std(gains, ddof=1))
    assert rows["grpo"]["time_vs_gae"] == pytest.approx(
        grpo["ppo_seconds"] / np.mean([json.loads((study / f"gae_seed{s}" / "result.json").read_text())["ppo_seconds"]
                                       for s in (0, 1)]))
    assert "| grpo | 2 | 0 |" in (study / "estimators.md").read_text()
    assert (study / "estimators.png").stat().st_size > 1000


def test_table_rows_without_gae_have_no_time_ratio():
    runs = [{"estimator": "rloo", "seed": s, "num_generations": 4, "gold_gain_in_std": g, "kl_final": 1.0,
             "nll_increase": 0.1, "ppo_seconds": 10.0, "content_free_after": 0.0, "topical_after": 1.0}
            for s, g in ((0, 0.5), (1, 1.5))]
    (row,) = table_rows(runs)
    assert row["gold_gain_in_std"] == 1.0 and row["gold_gain_in_std_std"] == pytest.approx(np.std([0.5, 1.5], ddof=1))
    assert row["time_vs_gae"] is None


@pytest.mark.parametrize("flags, words", [
    (["--runs", "ppo:0"], "--runs: expected estimator:seed"),
    (["--runs", "grpo"], "--runs: expected estimator:seed"),
    (["--num_generations", "1"], "--num_generations: expected at least 2"),
])
def test_config_errors(tmp_path, capsys, flags, words):
    base = tmp_path / "base"
    base.mkdir()
    (base / "summary.json").write_text("{}")
    assert run_main(main, ["--pipeline_out", str(base), "--out", str(tmp_path / "o"), *flags]) == 2
    assert words in capsys.readouterr().err


def test_pipeline_out_must_be_a_finished_run(tmp_path, capsys):
    assert run_main(main, ["--pipeline_out", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--pipeline_out: expected a finished `rlhf pipeline` run" in capsys.readouterr().err
