"""`rlhf demo`, the reward-model stage end to end, on the tiny model (the real run is `rlhf demo`)."""

import json

import pytest

from rich.console import Console

from pipeline.comparisons import sample_or_reuse
from pipeline.rm_demo import RewardModelDemoConfig, accuracy_lines, main, parse_config
from pipeline.sample_demo import SampleDemoConfig
from pipeline.sample_demo import main as sample_demo_main
from reward_model.modeling import RewardModel
from rlhf.config import ConfigError
from rlhf.preferences import load_comparisons
from rlhf.rubric import gold_score


@pytest.mark.slow
def test_demo_on_tiny_model(tmp_path, capsys):
    args = ["--policy_model", "tiny-random-llama", "--num_prompts", "12", "--k", "3", "--max_new_tokens", "60",
            "--reward_model.config", "configs/reward_model/smoke.yaml", "--reward_model.eval_strategy", "epoch",
            "--out", str(tmp_path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
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
    # Issue 13, defect 7: four accuracies of one held-out set, each printed on a line that
    # says what it measures, with the numbers of the trainer's log and eval-rm's report.
    history = json.loads((tmp_path / "reward_model" / "trainer_state.json").read_text())["log_history"]
    trainer_accuracy = [entry["eval_accuracy"] for entry in history if "eval_accuracy" in entry][-1]
    assert summary["trainer_eval_accuracy"] == trainer_accuracy
    assert summary["eval_rm_accuracy"] == report["accuracy"]["accuracy"]
    lines = accuracy_lines(summary, summary["gold_pairs"], summary["noisy_label_pairs"], eps=0.1, k=3)
    assert all(line.strip() in printed for line in lines)
    # A second run into the same folder is refused (nothing lost); the samples cached there are
    # what sampling with the same settings reuses instead of sampling again.
    with pytest.raises(ConfigError, match="holds an earlier run"):
        main(args)
    config, _ = parse_config(args)
    capsys.readouterr()
    cached = sample_or_reuse(config, config.prompts(), tmp_path, Console())
    assert "reusing 12 cached prompts" in " ".join(capsys.readouterr().out.split())
    assert cached == [row["completions"] for row in map(json.loads, (tmp_path / "samples.jsonl").read_text().splitlines()[1:])]


def test_the_four_accuracies_say_what_they_measure():
    accuracies = {"heldout_accuracy_vs_gold": 0.75, "heldout_accuracy_vs_noisy_labels": 0.5,
                  "trainer_eval_accuracy": None, "eval_rm_accuracy": 0.625}
    lines = accuracy_lines(accuracies, gold_pairs=16, noisy_pairs=18, eps=0.1, k=4)
    assert lines[0].startswith("  0.750  vs gold: ") and lines[0].endswith("pooled over 16 pairs")
    # a mistake swaps one adjacent pair of the 6 a 4-ranking induces: 1 - 0.1 / 6
    assert lines[1].startswith("  0.500  vs noisy labels: ") and "the gold order scores about 0.983" in lines[1]
    assert lines[2].startswith("    n/a  trainer (eval_accuracy") and "did not evaluate" in lines[2]
    assert lines[3].startswith("  0.625  eval-rm (report.json accuracy)") and "mean over prompts" in lines[3]
    no_pairs = accuracy_lines(accuracies, gold_pairs=0, noisy_pairs=0, eps=0.1, k=4)
    assert no_pairs[0].startswith("    n/a  vs gold") and no_pairs[1].startswith("    n/a  vs noisy labels")


def test_the_sample_demo_writes_its_own_folder_and_keeps_an_earlier_run(tmp_path, forbid_model_loading):
    """Issue 13, defect 7: the sample demo does not write the comparisons `rlhf demo` makes
    (and that configs read), and refuses to replace its own earlier ones."""
    assert SampleDemoConfig().out == "runs/sample_demo" and RewardModelDemoConfig().out == "runs/demo"
    (tmp_path / "comparisons.jsonl").write_text("earlier\n")
    with pytest.raises(ConfigError, match="comparisons.jsonl already exists; expected a new file"):
        sample_demo_main(["--policy_model", "tiny-random-llama", "--out", str(tmp_path)])
    assert (tmp_path / "comparisons.jsonl").read_text() == "earlier\n"
