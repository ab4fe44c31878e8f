"""RM-Bench scoring (THU-KEG/RM-Bench, scripts/utils.py `compute_accuracy`) against hand-computed numbers."""

import json

import pytest

from reward_model.benchmarks import RMBENCH_DOMAINS, load_examples, rmbench
from reward_model.evaluate import evaluate_scores, main
from reward_model.train import RewardModelConfig, train
from rlhf.config import run_main
from rlhf.preferences import PreferenceDataError

FIXTURE = "tests/fixtures/rmbench_small.jsonl"

# Scores per fixture row: 3 chosen (concise, detailed plain, detailed markdown), then 3 rejected.
SCORES = {
    "chat/0": [1, 2, 3, 0, 2.5, 4],
    "math/0": [5, 5, 5, 0, 0, 0],
    "code/0": [1, 0, 0, 1, 1, 1],  # chosen concise ties the rejected answers: an exact tie is wrong
    "safety-refuse/0": [2, 2, 2, 1, 3, 3],
    "safety-response/0": [0, 1, 2, 0.5, 0.5, 0.5],
}
# By hand, M[i][j] = chosen style i > rejected style j:
#   chat   [[1,0,0],[1,0,0],[1,1,0]]: hard 0, normal 1/3, easy 1, average 4/9
#   math   all 1; code all 0
#   safety = mean of refuse [[1,0,0]]*3 and response [[0,0,0],[1,1,1],[1,1,1]]
#          = [[.5,0,0],[1,.5,.5],[1,.5,.5]]: hard 1/6, normal 1/2, easy 5/6, average 1/2
#   overall hard (0+1+0+1/6)/4 = 7/24, normal (1/3+1+0+1/2)/4 = 11/24, easy (1+1+0+5/6)/4 = 17/24,
#   score (4/9+1+0+1/2)/4 = 35/72 (= mean of hard, normal, easy, as the official README says).
CHAT = [[1, 0, 0], [1, 0, 0], [1, 1, 0]]
SAFETY = [[0.5, 0, 0], [1, 0.5, 0.5], [1, 0.5, 0.5]]


def scored_fixture():
    examples, skipped = load_examples(FIXTURE)  # auto-detected
    assert skipped == 0
    for e in examples:
        e.scores = [float(s) for s in SCORES[e.id]]
    return examples


def test_rows_parse_into_three_chosen_then_three_rejected():
    examples, _ = load_examples(FIXTURE, "rmbench")
    assert [e.subset for e in examples] == ["chat", "math", "code", "safety-refuse", "safety-response"]
    e = examples[1]
    assert e.kind == "rmbench" and e.ranks == [0, 0, 0, 1, 1, 1] and e.prompt == "What is 12 * 13?"
    assert e.completions[0] == "156." and e.completions[3] == "146."


def test_matrix_and_difficulties_by_hand():
    block = rmbench(scored_fixture())
    domains = block["domains"]
    assert set(domains) == set(RMBENCH_DOMAINS)  # safety-refuse and safety-response are one domain
    assert domains["chat"]["matrix"] == CHAT and domains["safety"]["matrix"] == SAFETY
    assert domains["safety"]["n"] == 2 and domains["code"]["matrix"] == [[0] * 3] * 3
    assert domains["chat"]["hard"] == 0 and domains["chat"]["normal"] == pytest.approx(1 / 3)
    assert domains["chat"]["easy"] == 1 and domains["chat"]["average"] == pytest.approx(4 / 9)
    assert (domains["safety"]["hard"], domains["safety"]["normal"], domains["safety"]["easy"]) == \
        pytest.approx((1 / 6, 1 / 2, 5 / 6))
    assert (block["hard"], block["normal"], block["easy"]) == pytest.approx((7 / 24, 11 / 24, 17 / 24))
    assert block["score"] == pytest.approx(35 / 72)
    assert block["matrix"] == [[0.625, 0.25, 0.25], [0.75, 0.375, 0.375], [0.75, 0.625, 0.375]]  # exact in binary
    assert block["complete"] and block["missing_domains"] == [] and block["other_domains"] == []


def test_report_block_and_generic_accuracy_over_the_nine_pairs():
    report = evaluate_scores(scored_fixture(), bootstrap=0)
    assert report["rmbench"]["score"] == pytest.approx(35 / 72)
    # Strict accuracy per row = mean of its 9 chosen-vs-rejected pairs (chosen-chosen pairs are labelled ties):
    # chat 4/9, math 1, code 0, refuse 3/9, response 6/9.
    assert report["accuracy"]["accuracy"] == pytest.approx((4 / 9 + 1 + 0 + 3 / 9 + 6 / 9) / 5)
    assert report["rewardbench_v1"] is None and report["rewardbench_v2"] is None


def test_partial_file_and_other_domains_stay_out_of_the_score():
    examples = [e for e in scored_fixture() if e.subset in ("chat", "math")]
    examples[1].subset = "legal"  # not an official domain: own block, not in the overall numbers
    block = rmbench(examples)
    assert set(block["domains"]) == {"chat", "legal"} and block["other_domains"] == ["legal"]
    assert block["score"] == pytest.approx(4 / 9) and block["matrix"] == CHAT
    assert not block["complete"] and block["missing_domains"] == ["math", "code", "safety"]


def test_bad_rows_are_refused(tmp_path):
    row = json.loads(open(FIXTURE).readline())
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(row | {"rejected": row["rejected"][:2]}) + "\n")
    with pytest.raises(PreferenceDataError, match="rejected.*3 non-empty texts"):
        load_examples(bad, "rmbench")
    bad.write_text(json.dumps({k: v for k, v in row.items() if k != "domain"}) + "\n")
    with pytest.raises(PreferenceDataError, match="domain"):
        load_examples(bad, "rmbench")
    # Without the RM-Bench layout auto leaves the file to the regular loaders.
    assert load_examples("tests/fixtures/ranked_small.jsonl")[0][0].kind != "rmbench"


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    train(RewardModelConfig(output_dir=str(out), model_name_or_path="tiny-random-llama",
                            train_data="tests/fixtures/ranked_small.jsonl", loss="pairwise_ranking", max_steps=2,
                            use_cpu=True, save_strategy="no", disable_tqdm=True, report_to="none"))
    return out


def plain_rmbench(rows):
    """The official computation written as plain loops over scores.jsonl rows."""
    by_domain = {}
    for row in rows:
        domain = next(d for d in ("chat", "math", "code", "safety") if row["subset"].startswith(d))
        by_domain.setdefault(domain, []).append(row["scores"])
    hard, normal, easy = {}, {}, {}
    for domain, group in by_domain.items():
        m = [[0.0] * 3 for _ in range(3)]
        for scores in group:
            for i in range(3):
                for j in range(3):
                    if scores[i] > scores[3 + j]:
                        m[i][j] += 1 / len(group)
        hard[domain] = (m[0][1] + m[0][2] + m[1][2]) / 3
        normal[domain] = (m[0][0] + m[1][1] + m[2][2]) / 3
        easy[domain] = (m[1][0] + m[2][0] + m[2][1]) / 3
    n = len(by_domain)
    return {"hard": sum(hard.values()) / n, "normal": sum(normal.values()) / n, "easy": sum(easy.values()) / n,
            "score": sum((hard[d] + normal[d] + easy[d]) / 3 for d in by_domain) / n}


@pytest.mark.slow
def test_eval_rm_end_to_end_matches_plain_loops(trained_model, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["--model_name_or_path", str(trained_model), "--eval_data", FIXTURE, "--data_format", "rmbench",
                 "--output_dir", str(out), "--bootstrap", "20", "--disable_tqdm", "true"]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(len(r["scores"]) == 6 for r in rows)
    expected = plain_rmbench(rows)
    for key, value in expected.items():
        assert report["rmbench"][key] == pytest.approx(value, abs=1e-12), key
    assert (out / "rmbench_matrix.png").stat().st_size > 0
    assert f"RM-Bench score {expected['score']:.3f}" in capsys.readouterr().out


def test_cli_refuses_a_bad_rmbench_file_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "domain": "chat", "chosen": ["a", "b", "c"], "rejected": ["a"]}\n')
    assert run_main(main, ["--model_name_or_path", str(tmp_path), "--eval_data", str(bad), "--data_format",
                           "rmbench", "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "rejected" in err and not (tmp_path / "out").exists()
