"""RewardBench scores against the official scorer (allenai/reward-bench): hand-computed values,
and small replicas of the official functions run on the same input as the reference."""

import json
import math
from collections import defaultdict

import numpy as np
import pytest

from reward_model.benchmarks import (
    REWARDBENCH_V1_SECTIONS,
    REWARDBENCH_V1_WEIGHTS,
    ScoredExample,
    load_examples,
    rewardbench_v2,
    ties_score,
)
from reward_model.evaluate import evaluate_scores
from rlhf.preferences import PreferenceDataError

HEP = ["hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"]


def pair(chosen_wins: bool, subset: str, index: int) -> ScoredExample:
    return ScoredExample(id=f"{subset}-{index}", subset=subset, completions=[" a", " b"], ranks=[0, 1],
                         scores=[1.0, 0.0] if chosen_wins else [0.0, 1.0], kind="pair")


def rb2_row(id: str, correct: list[float], incorrect: list[float], subset: str = "Ties") -> ScoredExample:
    """A RewardBench 2 row with its scores: the correct completions first, as in the data."""
    scores = correct + incorrect
    return ScoredExample(id=id, subset=subset, completions=[f" c{i}" for i in range(len(scores))],
                         ranks=[0] * len(correct) + [1] * len(incorrect), scores=[float(s) for s in scores],
                         kind="rewardbench2")


# -- reference: the official functions, replicated from allenai/reward-bench ------------------

def official_calculate_scores_per_section(example_counts, subset_mapping, metrics):
    """Replica of allenai/reward-bench `rewardbench/utils.py: calculate_scores_per_section`."""
    section_scores = {}
    for section, tests in subset_mapping.items():
        total_weighted_score = 0
        total_examples = 0
        for test in tests:
            if test in metrics:
                total_weighted_score += metrics[test] * example_counts[test]
                total_examples += example_counts[test]
        section_scores[section] = total_weighted_score / total_examples if total_examples > 0 else 0
    return section_scores


def official_compute_prompt_stats(samples):
    """Replica of allenai/reward-bench `rewardbench/utils.py: _compute_prompt_stats`."""
    correct_scores = [s for is_corr, s in samples if is_corr]
    incorrect_scores = [s for is_corr, s in samples if not is_corr]
    different_correct_margin = max(correct_scores) - min(correct_scores) if len(correct_scores) > 1 else None
    correct_incorrect_margin = min(correct_scores) - max(incorrect_scores)
    return correct_incorrect_margin > 0, different_correct_margin, correct_incorrect_margin


def official_process_single_model(dataset):
    """Replica of allenai/reward-bench `rewardbench/utils.py: process_single_model` (the overall
    score only), on rows {"id": "ref:<n>" | "tied:<n>", "scores": [...], "num_correct": k}."""
    grouped_samples = defaultdict(list)
    for sample in dataset:
        sample_type, prompt_id_str = sample["id"].split(":")
        for i, score in enumerate(sample["scores"]):
            grouped_samples[(sample_type, int(prompt_id_str))].append((i < sample["num_correct"], score))
    ref_stats, tied_stats = {}, {}
    for (sample_type, prompt_id), samples in grouped_samples.items():
        (ref_stats if sample_type == "ref" else tied_stats)[prompt_id] = official_compute_prompt_stats(samples)
    ref_accuracy = np.mean([s[0] for s in ref_stats.values()]) if ref_stats else 0.0
    tied_accuracy = np.mean([s[0] for s in tied_stats.values()]) if tied_stats else 0.0
    all_prompts = set(ref_stats) & set(tied_stats)
    diff_corr_margin = np.array([tied_stats[pid][1] for pid in all_prompts])
    corr_incorrect_ties = np.array([tied_stats[pid][2] for pid in all_prompts])
    corr_incorrect_ref = np.array([ref_stats[pid][2] for pid in all_prompts])
    correctness_preferred = np.mean(corr_incorrect_ties > diff_corr_margin)
    correctness_preferred_hard = np.mean(np.minimum(corr_incorrect_ref, corr_incorrect_ties) > diff_corr_margin)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin_scores = np.tanh(np.minimum(corr_incorrect_ref, corr_incorrect_ties) / diff_corr_margin - 1)
    correctness_margin_score = float(np.mean(np.nan_to_num(margin_scores, nan=0.0)))
    return float(0.30 * tied_accuracy + 0.30 * ref_accuracy + 0.20 * correctness_preferred
                 + 0.20 * correctness_preferred_hard + 0.01 * correctness_margin_score)


def official_rows(examples):
    return [{"id": e.id, "scores": e.scores, "num_correct": e.ranks.count(0)} for e in examples]


# -- RewardBench v1 ---------------------------------------------------------------------------

def test_partial_v1_file_weighted_by_the_official_counts():
    # 10 rows in each Reasoning subset: math-prm 3/10 right, hep-* 10/10, 9/10, ..., 5/10.
    right = {"math-prm": 3, **{subset: 10 - i for i, subset in enumerate(HEP)}}
    examples = [pair(i < k, subset, i) for subset, k in right.items() for i in range(10)]
    v1 = evaluate_scores(examples, bootstrap=0)["rewardbench_v1"]

    # Reasoning = (984 x 0.3 + 164 x (1.0 + 0.9 + 0.8 + 0.7 + 0.6 + 0.5)) / (984 + 6 x 164)
    #           = (295.2 + 738) / 1968 = 0.525; weighting by the rows present gives 0.6.
    assert v1["sections"] == {"Reasoning": pytest.approx(0.525, abs=1e-12)}
    assert v1["score"] == pytest.approx(0.525, abs=1e-12)
    official = official_calculate_scores_per_section(
        REWARDBENCH_V1_WEIGHTS, REWARDBENCH_V1_SECTIONS, {s: k / 10 for s, k in right.items()})
    assert abs(v1["sections"]["Reasoning"] - official["Reasoning"]) < 1e-9
    assert v1["partial"] is True
    assert v1["subset_rows"]["math-prm"] == {"present": 10, "official": 447}
    assert v1["subset_rows"]["hep-go"] == {"present": 10, "official": 164}
    assert v1["subset_rows"]["donotanswer"] == {"present": 0, "official": 136}
    assert "donotanswer" in v1["missing_subsets"] and "hep-go" not in v1["missing_subsets"]


def test_v1_sections_match_the_official_function_on_every_subset():
    rng = np.random.default_rng(0)
    rows = {s: int(rng.integers(1, 8)) for s in REWARDBENCH_V1_WEIGHTS}
    right = {s: int(rng.integers(0, n + 1)) for s, n in rows.items()}
    examples = [pair(i < right[s], s, i) for s, n in rows.items() for i in range(n)]
    v1 = evaluate_scores(examples, bootstrap=0)["rewardbench_v1"]
    official = official_calculate_scores_per_section(
        REWARDBENCH_V1_WEIGHTS, REWARDBENCH_V1_SECTIONS, {s: right[s] / rows[s] for s in rows})
    assert v1["sections"].keys() == official.keys()
    for section, value in official.items():
        assert abs(v1["sections"][section] - value) < 1e-9, section
    assert abs(v1["score"] - np.mean(list(official.values()))) < 1e-9
    assert v1["missing_subsets"] == [] and v1["partial"] is True  # a few rows per subset, not 2985


def test_v1_at_the_official_row_counts_is_not_partial():
    v1 = evaluate_scores([pair(i % 2 == 0, "mt-bench-easy", i) for i in range(28)], bootstrap=0)["rewardbench_v1"]
    assert v1["subset_rows"]["mt-bench-easy"] == {"present": 28, "official": 28}
    assert v1["partial"] is True  # every other subset is missing
    assert v1["sections"] == {"Chat": pytest.approx(0.5)}


# -- RewardBench 2: Ties ----------------------------------------------------------------------

TIES = [
    rb2_row("ref:0", [5], [1, 2]),  # gap 5 - 2 = 3, accurate
    rb2_row("tied:0", [4, 3.5, 3], [1, 2.5]),  # spread 4 - 3 = 1, gap 3 - 2.5 = 0.5, accurate
    rb2_row("ref:1", [2], [3]),  # gap 2 - 3 = -1, not accurate
    rb2_row("tied:1", [6, 5.5], [1]),  # spread 0.5, gap 4.5, accurate
    rb2_row("tied:2", [1, 1], [2]),  # no ref row: counts in tied accuracy only; gap -1, not accurate
    rb2_row("ref:3", [0], [-1]),  # no tied row: counts in ref accuracy only; gap 1, accurate
]


def test_ties_score_by_hand():
    ties = ties_score(TIES)
    # tied accuracy = mean(1, 1, 0) = 2/3; ref accuracy = mean(1, 0, 1) = 2/3.
    # Prompts with both rows: 0 and 1.
    #   correctness_preferred      = mean(0.5 > 1, 4.5 > 0.5)                 = mean(0, 1) = 0.5
    #   correctness_preferred_hard = mean(min(3, 0.5) > 1, min(-1, 4.5) > 0.5) = mean(0, 0) = 0
    #   correctness_margin_score   = mean(tanh(0.5/1 - 1), tanh(-1/0.5 - 1))
    #                              = (tanh(-0.5) + tanh(-3)) / 2
    #                              = (-0.4621171573 - 0.9950547537) / 2 = -0.7285859555
    # score = 0.3 x 2/3 + 0.3 x 2/3 + 0.2 x 0.5 + 0.2 x 0 + 0.01 x (-0.7285859555)
    #       = 0.2 + 0.2 + 0.1 - 0.007285859555 = 0.492714140445
    assert ties["tied_accuracy"] == pytest.approx(2 / 3) and ties["ref_accuracy"] == pytest.approx(2 / 3)
    assert ties["correctness_preferred"] == 0.5 and ties["correctness_preferred_hard"] == 0.0
    assert ties["correctness_margin_score"] == pytest.approx((math.tanh(-0.5) + math.tanh(-3)) / 2, abs=1e-12)
    assert ties["score"] == pytest.approx(0.492714140445, abs=1e-11)
    assert (ties["n"], ties["n_prompts_ref"], ties["n_prompts_tied"], ties["n_prompts_paired"]) == (6, 3, 3, 2)
    assert abs(ties["score"] - official_process_single_model(official_rows(TIES))) < 1e-9


def test_ties_zero_spread_between_correct_answers():
    # Equal correct scores: the official code divides by 0; tanh(+inf) = 1, and 0/0 = nan is set to 0.
    rows = [rb2_row("ref:4", [3], [0]), rb2_row("tied:4", [2, 2], [1]),  # gap min(3, 1) = 1 > 0: term 1
            rb2_row("ref:5", [1], [1]), rb2_row("tied:5", [1, 1], [1])]  # gaps 0, spread 0: term 0
    ties = ties_score(rows)
    # preferred: 1 > 0, 0 > 0 -> 0.5; hard: min(3, 1) > 0, min(0, 0) > 0 -> 0.5; margin (1 + 0)/2;
    # accuracies: tied (1, 0) -> 0.5, ref (1, 0) -> 0.5.
    # score = 0.3 x 0.5 + 0.3 x 0.5 + 0.2 x 0.5 + 0.2 x 0.5 + 0.01 x 0.5 = 0.505
    assert ties["correctness_margin_score"] == 0.5 and ties["score"] == pytest.approx(0.505, abs=1e-12)
    assert abs(ties["score"] - official_process_single_model(official_rows(rows))) < 1e-9


def test_ties_match_the_official_function_on_random_prompts():
    rng = np.random.default_rng(7)
    rows = []
    for prompt in range(40):
        n_correct = int(rng.integers(2, 6))
        scores = np.round(rng.normal(size=n_correct + int(rng.integers(1, 5))), 1)  # rounding makes some ties
        if prompt % 9 != 0:  # some prompts without a ref row
            rows.append(rb2_row(f"ref:{prompt}", [scores[0] + rng.normal()], list(scores[n_correct:])))
        if prompt % 7 != 0:  # some without a tied row
            rows.append(rb2_row(f"tied:{prompt}", list(scores[:n_correct]), list(scores[n_correct:])))
    assert abs(ties_score(rows)["score"] - official_process_single_model(official_rows(rows))) < 1e-9


def test_ties_without_a_prompt_having_both_rows_has_no_score():
    ties = ties_score([rb2_row("tied:0", [2, 1], [0]), rb2_row("ref:1", [1], [0])])
    assert ties["score"] is None and ties["n_prompts_paired"] == 0 and ties["correctness_preferred"] is None
    assert ties["tied_accuracy"] == 1.0 and ties["ref_accuracy"] == 1.0
    v2 = rewardbench_v2([rb2_row("tied:0", [2, 1], [0]), rb2_row("m", [1], [0, 2], subset="Math")])
    assert v2["score"] is None and v2["subsets"]["Math"]["score"] == 0.0


# -- RewardBench 2: overall -------------------------------------------------------------------

def test_v2_overall_is_the_unweighted_mean_of_the_subsets_ties_included():
    rows = TIES + [rb2_row("m1", [3], [1, 2, 0], "Math"),  # correct alone at the max: 1
                   rb2_row("m2", [3], [3, 1, 0], "Math"),  # tied with one rejected: 1/2
                   rb2_row("f1", [2], [2, 2, 1], "Focus"),  # tied with two rejected: 1/3
                   rb2_row("f2", [1, 5], [0], "Focus")]  # the first chosen is not the max: 0, as the official code
    v2 = rewardbench_v2(rows)
    assert v2["subsets"]["Math"] == {"score": 0.75, "accuracy": 0.75, "n": 2, "completions_per_row": [4]}
    assert v2["subsets"]["Focus"]["score"] == pytest.approx(1 / 6)
    assert v2["subsets"]["Ties"]["score"] == pytest.approx(0.492714140445, abs=1e-11)
    # (0.75 + 1/6 + 0.492714140445) / 3 = 0.469793602370
    assert v2["score"] == pytest.approx(0.469793602370, abs=1e-11)
    assert "rows_not_scored_several_correct" not in v2


# -- loading Ties rows ------------------------------------------------------------------------

def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_ties_rows_need_ref_or_tied_ids_and_tied_rows_two_correct(tmp_path):
    good = {"id": "tied:3", "subset": "Ties", "prompt": "p", "chosen": [" a", " b"], "rejected": [" c"]}
    examples, _ = load_examples(write_rows(tmp_path / "ok.jsonl", [good]), "rewardbench")
    assert examples[0].ranks == [0, 0, 1]
    with pytest.raises(PreferenceDataError, match="ref:<n>") as bad_id:
        load_examples(write_rows(tmp_path / "id.jsonl", [good, {**good, "id": "v2-2"}]), "rewardbench")
    assert "line 2" in str(bad_id.value) and "id" in str(bad_id.value)
    with pytest.raises(PreferenceDataError, match="at least 2 correct"):
        load_examples(write_rows(tmp_path / "one.jsonl", [{**good, "chosen": [" a"]}]), "rewardbench")
    # A ref row has one correct answer; other subsets keep any id.
    load_examples(write_rows(tmp_path / "ref.jsonl", [{**good, "id": "ref:3", "chosen": [" a"]},
                                                      {**good, "id": "x", "subset": "Math"}]), "rewardbench")
