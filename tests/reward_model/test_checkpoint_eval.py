"""Issue 14, item 5: every evaluation during `rlhf train-rm` logs the numbers of `rlhf eval-rm`
(`evaluate_scores`) for the held-out data, and the run ends with a plot of them over steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import EvalPrediction

from reward_model.benchmarks import ScoredExample, load_examples, score_examples
from reward_model.evaluate import evaluate_scores
from reward_model.modeling import RewardModel
from reward_model.train import parse_config, train
from reward_model.trainer import HeldOutReport, checkpoint_metrics
from rlhf.config import ConfigError

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = "tests/fixtures"
# Eval keys of the trainer's own (loss, speed, batch statistics), not of the report.
TRAINER_EVAL_KEYS = {"eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second",
                     "eval_num_tokens", "eval_min_reward", "eval_mean_reward", "eval_max_reward"}


def unscored(example: ScoredExample) -> ScoredExample:
    return ScoredExample(example.id, example.subset, example.completions, example.ranks, [], example.kind,
                         example.prompt)


def test_held_out_report_maps_gathered_rows_back_to_their_examples():
    """Rows arrive in any order, padded with -100 to the widest comparison of the set: the
    numbers are evaluate_scores' on the examples scored by hand."""
    examples = [
        ScoredExample("p0", "all", [" a", " bb"], [0, 1], [0.5, -0.25], "pair"),
        ScoredExample("r1", "all", [" a", " bbb", " cc"], [0, 1, 2], [0.1, 0.3, -1.0], "ranking"),
        ScoredExample("p2", "all", [" aaaa", " b"], [0, 0], [2.0, 1.5], "pair"),  # a labelled tie
    ]
    report = HeldOutReport({10: unscored(examples[0]), 11: unscored(examples[1]), 12: unscored(examples[2])})
    predictions = np.array([[2.0, 1.5, -100.0], [0.5, -0.25, -100.0], [0.1, 0.3, -1.0]])
    metrics = report(EvalPrediction(predictions=predictions, label_ids=np.array([12, 10, 11])))
    expected = evaluate_scores(examples, bootstrap=0)
    # Strict accuracy over examples: the pair is right (1), the ranking gets 2 of its 3 pairs (2/3).
    assert metrics["accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["accuracy"] == expected["accuracy"]["accuracy"]
    assert metrics["accuracy_with_ties_half_credit"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert metrics["ece"] == expected["calibration"]["ece"] and metrics["brier"] == expected["calibration"]["brier"]
    assert metrics["kendall_tau_b"] == expected["ranking"]["kendall_tau_b"] == pytest.approx(1 / 3)
    assert metrics["length_bias_pearson_chars"] == expected["length_bias"]["pearson_chars"]
    assert metrics == checkpoint_metrics(expected) and report.names == set(metrics)
    with pytest.raises(RuntimeError, match="scored 2 held-out comparisons, expected 3"):
        report(EvalPrediction(predictions=predictions[:2], label_ids=np.array([12, 10])))


def test_checkpoint_metrics_names_sections_and_subsets():
    examples = [ScoredExample(f"{subset}-{i}", subset, [" a", " bb"], [0, 1], scores, "pair")
                for i, (subset, scores) in enumerate([("alpacaeval-easy", [1.0, 0.0]), ("mt-bench-hard", [0.0, 1.0]),
                                                      ("llmbar-natural", [2.0, 1.0])])]
    metrics = checkpoint_metrics(evaluate_scores(examples, bootstrap=0))
    assert metrics["subset_alpacaeval-easy_accuracy"] == 1.0 and metrics["subset_mt-bench-hard_accuracy"] == 0.0
    # Chat Hard weights its subsets by the official example counts (mt-bench-hard 37, llmbar-natural 100)
    chat_hard = (37 * 0.0 + 100 * 1.0) / (37 + 100)
    assert metrics["rewardbench_v1_chat"] == 1.0 and metrics["rewardbench_v1_chat_hard"] == pytest.approx(chat_hard)
    assert metrics["rewardbench_v1_score"] == pytest.approx((1.0 + chat_hard) / 2)
    assert "accuracy_with_ties_half_credit" not in metrics and "kendall_tau_b" not in metrics  # undefined here


def rewardbench_pairs(path):
    """Five RewardBench v1 pairs (an odd number: the last eval batch of 2 is short)."""
    rows = [json.loads(line) for line in open(f"{FIXTURES}/rewardbench_small.jsonl")][:4]
    rows.append({"id": 5, "subset": "xstest-should-respond", "prompt": "Item 5:", "chosen": " sun sun apple apple",
                 "rejected": " rock"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def train_with_evaluations(tmp_path, eval_data, *extra):
    out = tmp_path / "rm"
    summary = train(parse_config([
        "--config", "configs/reward_model/smoke.yaml", "--train_data", f"{FIXTURES}/ranked_small.jsonl",
        "--eval_data", str(eval_data), "--output_dir", str(out), "--eval_strategy", "steps", "--eval_steps", "1",
        "--per_device_eval_batch_size", "2", "--report_to", "none", "--disable_tqdm", "true", *extra]))
    return out, summary


def recomputed(model_dir, eval_data, data_format="auto") -> dict:
    """rlhf eval-rm's numbers for the saved model: score_examples, then evaluate_scores."""
    examples, _ = load_examples(eval_data, data_format)
    score_examples(RewardModel.load(model_dir), examples, batch_size=3, progress=False)
    return evaluate_scores(examples, bootstrap=0)


def assert_every_evaluation_logs_the_report(history, report):
    """Evaluations at steps 1, 2, 3 (12 comparisons, batch 4); the last one, after the last
    step, is the saved model's: its numbers are the report's to 1e-6."""
    evaluations = [entry for entry in history if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [1, 2, 3]
    expected = {f"eval_{name}": value for name, value in checkpoint_metrics(report).items()}
    for entry in evaluations:
        assert set(entry) - TRAINER_EVAL_KEYS - {"step", "epoch"} == set(expected)
    last = evaluations[-1]
    assert last["eval_accuracy"] == pytest.approx(report["accuracy"]["accuracy"], abs=1e-6)
    assert last["eval_ece"] == pytest.approx(report["calibration"]["ece"], abs=1e-6)
    assert last["eval_brier"] == pytest.approx(report["calibration"]["brier"], abs=1e-6)
    assert last["eval_margin"] == pytest.approx(report["rewards"]["mean_margin"], abs=1e-6)
    assert last["eval_length_bias_pearson_chars"] == pytest.approx(report["length_bias"]["pearson_chars"], abs=1e-6)
    assert {key: last[key] for key in expected} == pytest.approx(expected, abs=1e-6)
    assert evaluations[0]["eval_brier"] != last["eval_brier"]  # each evaluation scores the model of its step


def assert_a_plot(path):
    assert path.stat().st_size > 10_000
    height, width, _ = plt.imread(path).shape
    assert height > 200 and width > 200


def test_each_evaluation_logs_rewardbench_sections_and_the_report_numbers(tmp_path):
    eval_data = rewardbench_pairs(tmp_path / "rewardbench_pairs.jsonl")
    out, summary = train_with_evaluations(tmp_path, eval_data, "--report_to", "tensorboard")
    report = recomputed(out, eval_data)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert history == summary["log_history"][0]
    assert_every_evaluation_logs_the_report(history, report)
    last = [entry for entry in history if "eval_loss" in entry][-1]
    assert last["eval_rewardbench_v1_score"] == pytest.approx(report["rewardbench_v1"]["score"], abs=1e-6)
    assert last["eval_rewardbench_v1_safety"] == pytest.approx(report["rewardbench_v1"]["sections"]["Safety"],
                                                               abs=1e-6)
    assert last["eval_subset_math-prm_accuracy"] == report["subsets"]["math-prm"]["accuracy"]
    eval_results = json.loads((out / "eval_results.json").read_text())
    assert eval_results["eval_ece"] == last["eval_ece"]  # the last evaluation, as transformers saves it
    assert_a_plot(out / "eval_metrics.png")
    # The trackers show them as eval/<name> at every evaluation, like eval/loss.
    (run,) = (out / "runs").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    evaluations = [entry for entry in history if "eval_loss" in entry]
    for name in ("ece", "brier", "rewardbench_v1_safety", "length_bias_pearson_words"):
        scalars = events.Scalars(f"eval/{name}")
        assert [e.step for e in scalars] == [entry["step"] for entry in evaluations]
        assert [e.value for e in scalars] == pytest.approx([entry[f"eval_{name}"] for entry in evaluations], rel=1e-6)


def test_each_ensemble_member_evaluates_itself_on_rankings(tmp_path):
    """K = 4 rankings (Kendall's tau-b, top-1 accuracy); each member's log holds its own
    model's numbers, and the plot has every member."""
    eval_data = f"{FIXTURES}/ranked_small.jsonl"
    out, summary = train_with_evaluations(tmp_path, eval_data, "--ensemble_size", "2")
    for member in range(2):
        report = recomputed(out / f"member_{member}", eval_data)
        assert report["ranking"]["kendall_tau_b"] is not None
        assert_every_evaluation_logs_the_report(summary["log_history"][member], report)
    assert_a_plot(out / "eval_metrics.png")


def test_dropping_held_out_comparisons_from_evaluations_is_refused_before_the_model_loads(tmp_path,
                                                                                          forbid_model_loading):
    eval_data = rewardbench_pairs(tmp_path / "rewardbench_pairs.jsonl")
    with pytest.raises(ConfigError, match=r"^--dataloader_drop_last: would leave 1 of the 5 held-out comparisons "
                                          r"out of every evaluation \(batches of 2\); expected false"):
        train_with_evaluations(tmp_path, eval_data, "--dataloader_drop_last", "true")
    assert not (tmp_path / "rm").exists()


@pytest.mark.slow
def test_two_processes_log_the_numbers_of_one(tmp_path):
    """Distributed evaluation: the evaluation loop gathers every process's rows (accelerate's
    gather_for_metrics, which drops the sample repeated to even out 5 comparisons over 2
    processes) and every process computes the report from all of them. The training steps
    are those of one process with gradient accumulation 2 (tests/reward_model/test_distributed.py),
    so the report numbers must agree to float32 summation order."""
    eval_data = rewardbench_pairs(tmp_path / "rewardbench_pairs.jsonl")
    common = ["--config", str(ROOT / "configs/reward_model/smoke.yaml"),
              "--train_data", str(ROOT / FIXTURES / "ranked_small.jsonl"), "--eval_data", str(eval_data),
              "--use_cpu", "true", "--per_device_train_batch_size", "2", "--train_sampling_strategy", "sequential",
              "--eval_strategy", "steps", "--eval_steps", "1", "--per_device_eval_batch_size", "1", "--seed", "0",
              "--disable_tqdm", "true", "--report_to", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "reward_model.train", *common, "--output_dir", str(tmp_path / "ddp"),
                             "--ddp_backend", "gloo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    single = train(parse_config([*common, "--output_dir", str(tmp_path / "single"),
                                 "--gradient_accumulation_steps", "2"]))

    ddp_history = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())["log_history"]
    ddp = [entry for entry in ddp_history if "eval_loss" in entry]
    one = [entry for entry in single["log_history"][0] if "eval_loss" in entry]
    assert [entry["step"] for entry in ddp] == [entry["step"] for entry in one] == [1, 2, 3]
    for ddp_entry, one_entry in zip(ddp, one):
        report_keys = set(one_entry) - TRAINER_EVAL_KEYS - {"step", "epoch"}
        assert report_keys == set(ddp_entry) - TRAINER_EVAL_KEYS - {"step", "epoch"}
        assert "eval_rewardbench_v1_safety" in report_keys
        assert {key: ddp_entry[key] for key in report_keys} == pytest.approx(
            {key: one_entry[key] for key in report_keys}, abs=1e-5)
    assert_a_plot(tmp_path / "ddp" / "eval_metrics.png")


def test_prediction_loss_only_keeps_the_batch_metrics(tmp_path):
    eval_data = rewardbench_pairs(tmp_path / "rewardbench_pairs.jsonl")
    out, summary = train_with_evaluations(tmp_path, eval_data, "--prediction_loss_only", "true")
    evaluations = [entry for entry in summary["log_history"][0] if "eval_loss" in entry]
    assert len(evaluations) == 3 and all("eval_accuracy" in entry and "eval_accuracy_ties_half" in entry
                                         and "eval_ece" not in entry for entry in evaluations)
    assert not (out / "eval_metrics.png").exists()


def test_held_out_report_takes_per_batch_arrays_too():
    """eval_do_concat_batches false: the evaluation loop hands over one array per batch."""
    examples = [ScoredExample("p0", "all", [" a", " bb"], [0, 1], [0.5, -0.25], "pair"),
                ScoredExample("r1", "all", [" a", " bbb", " cc"], [0, 1, 2], [0.1, 0.3, -1.0], "ranking")]
    concatenated = HeldOutReport({0: unscored(examples[0]), 1: unscored(examples[1])})(EvalPrediction(
        predictions=np.array([[0.5, -0.25, -100.0], [0.1, 0.3, -1.0]]), label_ids=np.array([0, 1])))
    per_batch = HeldOutReport({0: unscored(examples[0]), 1: unscored(examples[1])})(EvalPrediction(
        predictions=[np.array([[0.1, 0.3, -1.0]]), np.array([[0.5, -0.25]])], label_ids=[np.array([1]), np.array([0])]))
    assert per_batch == concatenated == checkpoint_metrics(evaluate_scores(examples, bootstrap=0))
