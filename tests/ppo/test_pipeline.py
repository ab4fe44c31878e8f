"""`rlhf pipeline` end to end on tiny models (the smoke preset), and its config errors."""

import json

import pytest

from ppo.pipeline import load_config, main, text_nll


def test_smoke_pipeline_writes_report(tmp_path):
    assert main(["--config", "configs/pipeline/smoke.yaml", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ppo_steps"] == 2 and summary["train_prompts"] == 18 and summary["heldout_prompts"] == 6
    assert summary["gold_before"]["n"] == 6 and 0.0 <= summary["gold_after"]["mean"] <= 1.0
    assert summary["nll_before"] > 0 and abs(summary["kl_final"]) < 5  # k1 per sequence: near 0, either sign
    report = (tmp_path / "report.md").read_text()
    assert "gold rubric score on held-out prompts" in report and "![training curves](curves.png)" in report
    assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "gold_vs_kl.png").stat().st_size > 1000


def test_text_nll_matches_a_loop():
    import torch

    from rlhf.models import load_model, load_tokenizer

    model, tokenizer = load_model("tiny-random-llama"), load_tokenizer("tiny-random-llama")
    text = "The quick brown fox jumps over the lazy dog. " * 3
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    expected = sum(-torch.log_softmax(logits[t], -1)[ids[t + 1]].item() for t in range(len(ids) - 1)) / (len(ids) - 1)
    assert text_nll(model, tokenizer, text, block=1000) == pytest.approx(expected, rel=1e-5)


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy_modle: x\n")
    with pytest.raises(SystemExit):
        load_config(["--config", str(bad)])
    with pytest.raises(SystemExit):
        load_config(["--config", "configs/pipeline/smoke.yaml", "--heldout_fraction", "1.5"])
    config = load_config(["--config", "configs/pipeline/smoke.yaml", "--k", "5"])
    assert config.k == 5 and config.policy_model == "tiny-random-llama"


def test_ptx_ablation_runs_both_and_reports_the_nll_rise_ratio(tmp_path):
    assert main(["--config", "configs/pipeline/smoke.yaml", "--out", str(tmp_path), "--ptx_ablation", "true"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    with_ptx, without = summary["ablation"]["runs"]
    assert (with_ptx["run"], with_ptx["ptx_coef"], without["run"], without["ptx_coef"]) == ("ppo", 0.1, "ppo_no_ptx", 0.0)
    assert with_ptx["nll_increase"] == pytest.approx(summary["nll_increase"])
    if without["nll_increase"] > 0:
        assert summary["ablation"]["nll_rise_ratio"] == pytest.approx(with_ptx["nll_increase"] / without["nll_increase"])
    assert (tmp_path / "ppo_no_ptx" / "metrics.jsonl").exists()
    assert "## ptx ablation" in (tmp_path / "report.md").read_text()
