"""The reward-model demo end to end on the tiny model (the real run is `make demo`)."""

import json

import numpy as np

from reward_model.demo import gold_pair_accuracy, main


def test_gold_pair_accuracy_by_hand():
    scores = np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 1.0]])
    gold = np.array([[0.9, 0.5, 0.5], [0.2, 0.8, 0.1]])
    # row 1: (0,1) right, (0,2) right, (1,2) gold tie: skipped.
    # row 2: (0,1) right, (0,2) wrong, (1,2) equal model scores: wrong.
    accuracy, pairs = gold_pair_accuracy(scores, gold)
    assert pairs == 5 and accuracy == 3 / 5


def test_demo_pipeline_on_tiny_model(tmp_path, capsys):
    args = ["--model", "tiny-random-llama", "--num-prompts", "12", "--k", "3", "--max-new-tokens", "8",
            "--rm-config", "configs/reward_model/smoke.yaml", "--out", str(tmp_path)]
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_prompts"] == 9 and summary["heldout_prompts"] == 3
    assert 0.0 <= summary["heldout_accuracy_vs_gold"] <= 1.0
    report = json.loads((tmp_path / "reward_model" / "eval" / "report.json").read_text())
    assert report["n_examples"] == 3
    # The second run reuses the cached samples instead of sampling again.
    assert main(args) == 0
    assert "reusing 12 cached prompts" in " ".join(capsys.readouterr().out.split())
