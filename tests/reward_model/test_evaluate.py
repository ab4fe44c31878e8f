"""Reward-model evaluation: numbers from known scores checked by hand, and the CLI end to end."""

import json
import math

import numpy as np
import pytest
import torch

from reward_model.benchmarks import ScoredExample, load_examples
from reward_model.evaluate import evaluate_scores, main
from reward_model.train import RewardModelConfig, train
from rlhf.config import run_main

torch.set_num_threads(1)
FIXTURES = "tests/fixtures"


def pair(scores, subset="all", ranks=(0, 1), completions=None, id=None):
    """A scored pair; ranks (0, 1) = item 0 chosen, (0, 0) = labelled tie."""
    return ScoredExample(id=id or f"{subset}-{scores}", subset=subset, completions=completions or [" a", " b"],
                         ranks=list(ranks), scores=list(map(float, scores)), kind="pair")


def ranking(scores, ranks, kind="ranking"):
    return ScoredExample(id=str(ranks), subset="all", completions=[f" c{i}" for i in range(len(scores))],
                         ranks=list(ranks), scores=list(map(float, scores)), kind=kind)


def bon_row(scores, subset, n_chosen=1):
    """A RewardBench 2 row: the first n_chosen completions are correct."""
    return ScoredExample(id=f"{subset}-{scores}", subset=subset, completions=[f" c{i}" for i in range(len(scores))],
                         ranks=[0] * n_chosen + [1] * (len(scores) - n_chosen), scores=list(map(float, scores)),
                         kind="rewardbench2")


# -- accuracy ------------------------------------------------------------------------

def test_exact_score_tie_is_wrong_and_labelled_tie_gets_half_credit():
    examples = [pair([2, 1]), pair([1, 1]), pair([3, 0]),  # right, exact score tie (wrong), right
                pair([1.0, 1.5], ranks=(0, 0))]  # labelled tie, |delta| = 0.5
    report = evaluate_scores(examples, bootstrap=0)
    accuracy = report["accuracy"]
    assert accuracy["accuracy"] == pytest.approx(2 / 3) and accuracy["n"] == 3  # ties left out of strict accuracy
    assert accuracy["ci95"] is None  # bootstrap=0
    assert accuracy["with_ties_half_credit"]["accuracy"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert accuracy["labelled_ties"] == {"n_pairs": 1, "mean_abs_score_difference": pytest.approx(0.5)}
    assert report["rewards"] == {"mean_chosen": pytest.approx(2.0), "mean_rejected": pytest.approx(2 / 3),
                                 "mean_margin": pytest.approx(4 / 3), "n_pairs": 3}
    no_ties = evaluate_scores(examples[:3], bootstrap=0)["accuracy"]
    assert "with_ties_half_credit" not in no_ties and "labelled_ties" not in no_ties


def test_label_zero_pair_means_item_one_is_chosen():
    report = evaluate_scores([pair([0, 5], ranks=(1, 0)), pair([0, 5])], bootstrap=0)
    assert report["accuracy"]["accuracy"] == 0.5


def test_bootstrap_interval_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    examples = [pair([rng.normal() + 0.5, rng.normal()], subset=f"s{i % 2}") for i in range(60)]
    first = evaluate_scores(examples, bootstrap=500, seed=3)
    low, high = first["accuracy"]["ci95"]
    assert low <= first["accuracy"]["accuracy"] <= high and low < high
    for block in first["subsets"].values():
        assert block["ci95"][0] <= block["accuracy"] <= block["ci95"][1] and block["n"] == 30
    assert evaluate_scores(examples, bootstrap=500, seed=3)["accuracy"]["ci95"] == [low, high]


# -- RewardBench ---------------------------------------------------------------------

def test_rewardbench_v1_section_weighting_by_hand():
    examples = [pair([1, 0], "math-prm"), pair([0, 1], "math-prm"),  # math-prm: 1/2, weighted as 984
                pair([1, 0], "hep-python"), pair([2, 0], "hep-python"),  # hep-python: 2/2, weighted as 164
                pair([1, 0], "alpacaeval-easy"),  # 1/1, weighted as 100
                pair([1, 0], "mt-bench-easy"), pair([0, 1], "mt-bench-easy"), pair([0, 0], "mt-bench-easy")]  # 1/3, 28
    v1 = evaluate_scores(examples, bootstrap=0)["rewardbench_v1"]
    reasoning = (984 * 0.5 + 164 * 1.0) / (984 + 164)  # official counts, not the rows present
    chat = (100 * 1.0 + 28 * (1 / 3)) / (100 + 28)
    assert v1["sections"] == {"Chat": pytest.approx(chat), "Reasoning": pytest.approx(reasoning)}
    assert v1["score"] == pytest.approx((chat + reasoning) / 2)  # only the sections present
    assert v1["partial"] and "donotanswer" in v1["missing_subsets"]
    assert v1["subset_rows"]["mt-bench-easy"] == {"present": 3, "official": 28}
    # Subsets that are not RewardBench's: no section scores.
    assert evaluate_scores([pair([1, 0], "math-prm"), pair([1, 0], "mine")], bootstrap=0)["rewardbench_v1"] is None
    assert evaluate_scores([pair([1, 0])], bootstrap=0)["rewardbench_v1"] is None


def test_rewardbench_v2_best_of_4_with_ties_at_the_max():
    examples = [bon_row([3, 1, 2, 0], "Math"),  # chosen alone at the max: 1
                bon_row([3, 3, 1, 0], "Math"),  # tied with one rejected: 1/2
                bon_row([2, 2, 2, 1], "Focus"),  # tied with two rejected: 1/3
                bon_row([1, 2, 0, 0], "Focus")]  # a rejected completion wins: 0
    v2 = evaluate_scores(examples, bootstrap=0)["rewardbench_v2"]
    assert v2["subsets"]["Math"]["accuracy"] == pytest.approx(0.75)
    assert v2["subsets"]["Focus"]["accuracy"] == pytest.approx(1 / 6)
    assert v2["subsets"]["Math"]["completions_per_row"] == [4]
    assert v2["score"] == pytest.approx((0.75 + 1 / 6) / 2)  # Ties: tests/reward_model/test_benchmarks.py


# -- calibration, rankings, length ------------------------------------------------------

def logit(p):
    return math.log(p / (1 - p))


def test_ece_and_brier_by_hand():
    # p(item 0 preferred) and which item was chosen; each confidence falls in its own bin of width 0.05.
    examples = [pair([logit(0.92), 0]), pair([logit(0.83), 0]),
                pair([logit(0.27), 0], ranks=(1, 0)),  # item 1 chosen with p = 0.73: right
                pair([logit(0.64), 0], ranks=(1, 0))]  # item 1 chosen, model gave item 0 0.64: wrong
    calibration = evaluate_scores(examples, bootstrap=0)["calibration"]
    assert calibration["ece"] == pytest.approx((0.08 + 0.17 + 0.27 + 0.64) / 4)
    assert calibration["brier"] == pytest.approx((0.08 ** 2 + 0.17 ** 2 + 0.27 ** 2 + 0.64 ** 2) / 4)
    assert calibration["n_pairs"] == 4 and sum(calibration["bins"]["count"]) == 4
    # The note's example: p = [0.9, 0.8, 0.3, 0.6], y = [1, 1, 0, 0] -> Brier 0.125.
    note = [pair([logit(p), 0], ranks=(0, 1) if y else (1, 0)) for p, y in zip([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0])]
    assert evaluate_scores(note, bootstrap=0)["calibration"]["brier"] == pytest.approx(0.125)


def test_kendall_tau_b_and_top1_on_hand_rankings():
    # Items 1 and 2 tied in the truth; the model orders 0 > 2 > 1 > 3: C = 5, D = 0, one tie
    # in the truth -> tau_b = 5 / sqrt((6 - 1) * 6).
    tied = ranking([4, 1, 3, 0], [0, 1, 1, 2])
    reversed_ = ranking([1, 2, 3], [0, 1, 2])  # tau_b = -1, top-1 wrong
    report = evaluate_scores([tied, reversed_], bootstrap=0)
    assert report["ranking"]["kendall_tau_b"] == pytest.approx((5 / math.sqrt(30) - 1) / 2)
    assert report["ranking"]["top1_accuracy"] == pytest.approx(0.5) and report["ranking"]["n"] == 2
    # Accuracy of a ranking = mean over its ordered pairs, averaged over prompts.
    assert report["accuracy"]["accuracy"] == pytest.approx((5 / 5 + 0 / 3) / 2)
    assert report["accuracy"]["with_ties_half_credit"]["accuracy"] == pytest.approx((5.5 / 6 + 0) / 2)
    # best-of-K: top-1 shares credit among completions tied at the max.
    best = ranking([2, 2, 1], [0, None, None], kind="best_of_k")
    assert evaluate_scores([best], bootstrap=0)["ranking"]["top1_accuracy"] == pytest.approx(0.5)


def test_length_bias_against_numpy():
    examples = [pair([1, 0], completions=["aa", "bbbb"]),  # chosen shorter, right
                pair([0, 1], completions=["cccccc", "d"]),  # chosen longer, wrong
                pair([2, 1], completions=["eee ff", "g h i"])]  # chosen longer (6 vs 5 chars), right
    bias = evaluate_scores(examples, bootstrap=0)["length_bias"]
    scores = [1, 0, 0, 1, 2, 1]
    assert bias["pearson_chars"] == pytest.approx(np.corrcoef(scores, [2, 4, 6, 1, 6, 5])[0, 1])
    assert bias["pearson_words"] == pytest.approx(np.corrcoef(scores, [1, 1, 1, 1, 2, 3])[0, 1])
    assert bias["accuracy_by_length"]["chosen_shorter"] == {"accuracy": 1.0, "n_pairs": 1}
    assert bias["accuracy_by_length"]["chosen_longer"] == {"accuracy": 0.5, "n_pairs": 2}
    assert bias["share_human_prefers_longer"] == pytest.approx(2 / 3)
    # The RM prefers "aa" (shorter), "d" (shorter) and "eee ff" (longer).
    assert bias["share_rm_prefers_longer"] == pytest.approx(1 / 3)


# -- data loading ----------------------------------------------------------------------

def test_rewardbench_rows_keep_subset_id_and_completion_lists():
    examples, skipped = load_examples(f"{FIXTURES}/rewardbench_small.jsonl", "rewardbench")
    assert skipped == 0 and [e.id for e in examples][:2] == ["1", "2"]
    v2 = examples[4]
    assert v2.kind == "rewardbench2" and v2.subset == "Math" and len(v2.completions) == 4
    assert v2.ranks == [0, 1, 1, 1] and examples[0].kind == "pair" and examples[0].ranks == [0, 1]


# -- command line --------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    train(RewardModelConfig(output_dir=str(out), model_name_or_path="tiny-random-llama",
                            train_data=f"{FIXTURES}/ranked_small.jsonl", loss="pairwise_ranking", max_steps=2,
                            use_cpu=True, save_strategy="no", disable_tqdm=True, report_to="none"))
    return out


@pytest.mark.slow
def test_cli_end_to_end(trained_model, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["--model_name_or_path", str(trained_model), "--eval_data", f"{FIXTURES}/ranked_small.jsonl",
                 "--output_dir", str(out), "--bootstrap", "50", "--per_device_eval_batch_size", "8"])
    assert code == 0
    for name in ("report.json", "scores.jsonl", "margins.png", "reliability.png", "subset_accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    for key in ("n_examples", "accuracy", "subsets", "rewardbench_v1", "rewardbench_v2", "rewards", "calibration",
                "ranking", "length_bias", "bootstrap", "score_scale"):
        assert key in report, key
    assert report["n_examples"] == 12 and report["subsets"].keys() == {"all"}
    assert report["ranking"]["n"] == 12 and report["calibration"]["n_pairs"] == 12 * 6
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"id", "subset", "scores"} <= rows[0].keys() and len(rows[0]["scores"]) == 4
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "n = 12" in printed and str(out / "report.json") in printed

    rb_out = tmp_path / "rb"
    assert main(["--model_name_or_path", str(trained_model), "--eval_data", f"{FIXTURES}/rewardbench_small.jsonl",
                 "--data_format", "rewardbench", "--output_dir", str(rb_out), "--bootstrap", "20",
                 "--disable_tqdm", "true"]) == 0
    report = json.loads((rb_out / "report.json").read_text())
    ties = report["rewardbench_v2"]["subsets"]["Ties"]  # one prompt with its ref and its tied row
    assert (ties["n"], ties["n_prompts_paired"]) == (2, 1) and ties["score"] is not None
    assert report["rewardbench_v2"]["score"] == pytest.approx(
        (report["rewardbench_v2"]["subsets"]["Math"]["score"] + ties["score"]) / 2)
    assert set(report["subsets"]) == {"alpacaeval-easy", "mt-bench-hard", "math-prm", "hep-python", "Math", "Ties"}


def test_bad_data_and_not_a_reward_model_exit_2(trained_model, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": " a"}\n')
    out = tmp_path / "out"
    assert run_main(main, ["--model_name_or_path", str(trained_model), "--eval_data", str(bad),
                           "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "rejected" in err and not out.exists()

    no_subset = tmp_path / "rb.jsonl"
    no_subset.write_text('{"prompt": "p", "chosen": " a", "rejected": " b"}\n')
    assert run_main(main, ["--model_name_or_path", str(trained_model), "--eval_data", str(no_subset),
                           "--data_format", "rewardbench", "--output_dir", str(out)]) == 2
    assert "subset" in capsys.readouterr().err and not out.exists()

    nothing = tmp_path / "nc.jsonl"
    nothing.write_text('{"items": [" a", " b"], "kind": "not_comparable"}\n')
    assert run_main(main, ["--model_name_or_path", str(trained_model), "--eval_data", str(nothing),
                           "--output_dir", str(out)]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err and not out.exists()

    assert run_main(main, ["--model_name_or_path", str(tmp_path), "--eval_data", f"{FIXTURES}/ranked_small.jsonl",
                           "--output_dir", str(out)]) == 2
    assert "is not a reward model" in capsys.readouterr().err and not out.exists()
