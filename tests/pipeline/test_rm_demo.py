"""`rlhf demo`, the reward-model stage end to end, on the tiny model (the real run is `rlhf demo`)."""

import json

import pytest

from rich.console import Console

from pipeline.comparisons import sample_or_reuse
from pipeline.rm_demo import main, parse_config
from reward_model.modeling import RewardModel
from rlhf.config import ConfigError
from rlhf.preferences import load_comparisons
from rlhf.rubric import gold_score


@pytest.mark.slow
def test_demo_on_tiny_model(tmp_path, capsys):
    args = ["--policy_model", "tiny-random-llama", "--num_prompts", "12", "--k", "3", "--max_new_tokens", "60",
            "--reward_model.config", "configs/reward_model/smoke.yaml", "--out", str(tmp_path)]
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_prompts"] == 9 and summary["heldout_prompts"] == 3
    # Recompute the accuracy against gold with a plain loop over the saved held-out rankings.
    heldout = load_comparisons(tmp_path / "heldout.jsonl")
    model = RewardModel.load(tmp_path / "reward_model")
    correct = total = 0
    for comparison in heldout:
        scores = model.score([comparison.prompt] * 3, list(comparison.items))[0].tolist()
        gold = [gold_score(text, comparison.prompt) for text in comparison.items]
        for i in range(3):
            for j in range(i + 1, 3):
                if gold[i] != gold[j]:
                    total += 1
                    correct += (scores[i] - scores[j]) * (gold[i] - gold[j]) > 0
    assert summary["gold_pairs"] == total and summary["heldout_accuracy_vs_gold"] == pytest.approx(correct / total)
    report = json.loads((tmp_path / "reward_model" / "eval" / "report.json").read_text())
    assert report["n_examples"] == 3
    # A second run into the same folder is refused (nothing lost); the samples cached there are
    # what sampling with the same settings reuses instead of sampling again.
    with pytest.raises(ConfigError, match="holds an earlier run"):
        main(args)
    config, _ = parse_config(args)
    capsys.readouterr()
    cached = sample_or_reuse(config, config.prompts(), tmp_path, Console())
    assert "reusing 12 cached prompts" in " ".join(capsys.readouterr().out.split())
    assert cached == [row["completions"] for row in map(json.loads, (tmp_path / "samples.jsonl").read_text().splitlines()[1:])]
