"""`rlhf pipeline` end to end on tiny models (the smoke preset), and its config."""

import json
import math
import numpy as np
import pytest
import torch

from pipeline.end_to_end import main, parse_config, rollout_gold, text_nll
from pipeline.report import plot_monitors, write_report
from ppo.monitors import RewardHackingMonitor
from rlhf.config import ConfigError
from rlhf.models import load_model, load_tokenizer
from rlhf.rubric import PROPERTIES, WEIGHTS, gold_score, is_content_free, on_topic_score, rubric

SMOKE = ["--config", "configs/pipeline/smoke.yaml"]


@pytest.mark.slow
def test_smoke_pipeline_writes_report(tmp_path):
    assert main([*SMOKE, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ppo_steps"] == 2 and summary["train_prompts"] == 18 and summary["heldout_prompts"] == 6
    # The summary's gold numbers are those of the saved held-out answers, recomputed here.
    samples = [json.loads(line) for line in (tmp_path / "heldout_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6
    for key, when in (("gold_before", "before"), ("gold_after", "after")):
        scores = [gold_score(s[when], s["prompt"]) for s in samples]
        assert summary[key]["mean"] == pytest.approx(np.mean(scores)) and summary[key]["n"] == 6
        assert summary[key]["std"] == pytest.approx(np.std(scores))
    gain = (summary["gold_after"]["mean"] - summary["gold_before"]["mean"]) / summary["gold_before"]["std"]
    assert summary["gold_gain_in_std"] == pytest.approx(gain)
    ceiling = (1.0 - np.mean([gold_score(s["before"], s["prompt"]) for s in samples])) / summary["gold_before"]["std"]
    assert summary["gold_gain_ceiling_in_std"] == pytest.approx(ceiling)
    # each property's mean, recomputed; the weighted sum of the means is the gold mean
    for key, when in (("gold_before", "before"), ("gold_after", "after")):
        properties = summary[key]["properties"]
        for name in PROPERTIES:
            assert properties[name] == pytest.approx(np.mean([getattr(rubric(s[when], s["prompt"]), name)
                                                              for s in samples]))
        assert sum(WEIGHTS[name] * properties[name] for name in PROPERTIES) == pytest.approx(summary[key]["mean"])
    history = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2]
    assert summary["kl_final"] == pytest.approx(history[-1]["objective/kl"])
    assert summary["nll_increase"] == pytest.approx(summary["nll_after"] - summary["nll_before"])
    report = (tmp_path / "report.md").read_text()
    topical = [on_topic_score(s["after"], s["prompt"]) == 1.0 for s in samples]
    free = [is_content_free(s["after"], s["prompt"]) for s in samples]
    assert summary["gold_after"]["topical"] == np.mean(topical) and summary["gold_after"]["content_free"] == np.mean(free)
    assert f"{summary['gold_gain_in_std']:+.2f} std" in report and "![training curves](curves.png)" in report
    assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "gold_vs_kl.png").stat().st_size > 1000
    assert json.loads((tmp_path / "pipeline_config.json").read_text())["ppo"]["total_episodes"] == 16
    # the monitors ran on every iteration, the gold judge scoring each rollout
    assert all(0.0 <= h["objective/gold"] <= 1.0 and h["monitor/proxy_gold_divergence"] in (0.0, 1.0)
               for h in history)
    fired = {w["check"]: w for w in summary["monitors"]}
    for check in ("kl_runaway", "entropy_collapse", "length_drift", "clip_jump", "proxy_gold_divergence"):
        warning = fired.get(check)
        assert (f"| {check} | {warning['iteration']} | {warning['seen']} |" if warning else f"| {check} | no | |") in report
        assert [h[f"monitor/{check}"] for h in history] == [float(check in fired and step >= fired[check]["iteration"])
                                                            for step in (1, 2)]
    assert (tmp_path / "monitors.png").stat().st_size > 1000 and "![reward-hacking monitors](monitors.png)" in report


def test_rollout_gold_judges_the_answered_turn():
    conversation = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Name a planet."}]
    answers = ["Mars is a planet.", "Bananas."]
    assert rollout_gold([conversation, "Name a planet."], answers) == [gold_score(answers[0], "Name a planet."),
                                                                       gold_score(answers[1], "Name a planet.")]


def test_report_has_the_monitor_table_and_panel(tmp_path):
    """A synthetic history whose response length drifts +60 % at iteration 3: the table says
    so, the other checks say no, and monitors.png is drawn."""
    monitor, history = RewardHackingMonitor(), []
    for step, (length, gold) in enumerate([(20.0, 0.8), (24.0, 0.8), (32.0, 0.81), (33.0, 0.8), (34.0, 0.79)], 1):
        metrics = {"step": step, "objective/kl": 0.5 * step, "objective/entropy": 2.0, "response/length": length,
                   "policy/clipfrac_avg": 0.05, "objective/scores": 0.1 * step, "objective/gold": gold}
        monitor.update(metrics)
        history.append(metrics | monitor.flags())
    warnings = [{"iteration": w.iteration, "check": w.check, "seen": w.seen} for w in monitor.warnings]
    gold = {"mean": 0.8, "std": 0.1, "words": 20.0, "topical": 1.0, "content_free": 0.0, "n": 6,
            "properties": {name: 0.8 for name in PROPERTIES}}
    after = gold | {"properties": gold["properties"] | {"task": 0.5}}
    summary = {"train_prompts": 18, "heldout_prompts": 6, "comparisons": 54, "label_source": "teacher", "ppo_steps": 5,
               "gold_before": gold, "gold_after": after, "nll_before": 3.0, "nll_after": 3.1, "kl_final": 2.5,
               "kl_mean_last5": 1.5, "gold_gain_in_std": 0.0, "gold_gain_ceiling_in_std": 2.0,
               "rm_eval_accuracy": "0.6", "timings": {"total": 1.0}, "monitors": warnings}
    plot_monitors(history, warnings, tmp_path / "monitors.png")
    report = write_report(tmp_path, "tiny-random-llama", summary, []).read_text()
    table = report[report.index("## Reward-hacking monitors"):report.index("![reward-hacking monitors](monitors.png)")]
    assert [line for line in table.splitlines() if line.startswith("| ")] == [
        "| check | fired at iteration | what it saw |",
        "| kl_runaway | no | |", "| entropy_collapse | no | |",
        "| length_drift | 3 | mean response length 32 tokens at iteration 3 vs 20 at the first: a change of +60%, "
        "more than 50% |",
        "| clip_jump | no | |", "| proxy_gold_divergence | no | |"]
    assert (tmp_path / "monitors.png").stat().st_size > 1000
    assert "(the most this measure allows, every held-out answer at the judge's maximum 1.0: +2.00 std)" in report
    assert "| task | 0.15 | 0.800 | 0.500 |" in report and "| on_topic | 0.30 | 0.800 | 0.800 |" in report


def test_text_nll_matches_a_loop():
    model, tokenizer = load_model("tiny-random-llama"), load_tokenizer("tiny-random-llama")
    text = "The quick brown fox jumps over the lazy dog. " * 3
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    expected = sum(-torch.log_softmax(logits[t], -1)[ids[t + 1]].item() for t in range(len(ids) - 1)) / (len(ids) - 1)
    assert text_nll(model, tokenizer, text, block=1000) == pytest.approx(expected, rel=1e-5)


def test_config_nests_the_stage_configs(tmp_path):
    config, rm, ppo = parse_config([*SMOKE, "--k", "5", "--ppo.learning_rate", "3e-4",
                                    "--reward_model.num_train_epochs", "1", "--out", str(tmp_path)])
    assert (config.k, config.policy_model) == (5, "tiny-random-llama")
    assert (ppo.learning_rate, ppo.total_episodes, ppo.ptx_coef) == (3e-4, 16, 0.1)  # CLI over section over stage file
    assert ppo.prompts == str(tmp_path / "train_prompts.jsonl")  # set by the pipeline
    assert ppo.reward_models == [{"path": str(tmp_path / "reward_model"), "weight": 1.0}]
    assert (rm.num_train_epochs, rm.train_data) == (1, str(tmp_path / "train.jsonl"))


def test_old_ppo_names_in_a_section_still_work(tmp_path, capsys):
    """The previous release's PPO names, in a ppo: section or as --ppo.<old> overrides, are
    converted (iterations of the stage file's 8-episode rollouts into episodes), with a warning."""
    section = tmp_path / "p.yaml"
    section.write_text("policy_model: tiny-random-llama\nppo:\n  config: configs/ppo/smoke.yaml\n  num_steps: 5\n"
                       "  ppo_epochs: 3\n")
    _, _, ppo = parse_config(["--config", str(section), "--out", str(tmp_path / "out")])
    assert (ppo.total_episodes, ppo.num_ppo_epochs, ppo.per_device_train_batch_size) == (40, 3, 2)
    _, _, ppo = parse_config([*SMOKE, "--ppo.num_steps", "4", "--ppo.init_kl_coef", "0.2", "--out", str(tmp_path / "o")])
    assert (ppo.total_episodes, ppo.kl_coef) == (32, 0.2)
    warnings = capsys.readouterr().err
    assert "'num_steps' is deprecated, use 'total_episodes'" in warnings
    assert "'init_kl_coef' is deprecated, use 'kl_coef'" in warnings


@pytest.mark.parametrize("argv, where, words", [
    (["--heldout_fraction", "1.5"], "--heldout_fraction", "heldout_fraction: expected a share in (0, 1)"),
    (["--ppo.learning_rate", "-1"], "configs/pipeline/smoke.yaml: ppo: learning_rate", "expected > 0"),
    (["--ppo.frobnicate", "1"], "configs/pipeline/smoke.yaml: ppo", "unknown key 'frobnicate'"),
    (["--ppo.prompts", "x.jsonl"], "configs/pipeline/smoke.yaml: ppo.prompts", "sets it itself"),
    (["--reward_model.loss", "hinge"], "configs/pipeline/smoke.yaml: reward_model: loss", "expected one of"),
    (["--ppo.pretrain_data", "missing.txt"], "ppo.pretrain_data", "an existing text file"),
])
def test_config_errors_name_where_and_what(argv, where, words):
    with pytest.raises(ConfigError) as caught:
        parse_config([*SMOKE, *argv])
    assert caught.value.where == where and words in str(caught.value)


def test_unknown_top_level_key_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy_modle: x\n")
    with pytest.raises(ConfigError, match="unknown key 'policy_modle'"):
        parse_config(["--config", str(bad)])


@pytest.mark.slow
def test_ptx_ablation_runs_both_and_reports_the_nll_rise_ratio(tmp_path):
    assert main([*SMOKE, "--out", str(tmp_path), "--ptx_ablation", "true"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    with_ptx, without = summary["ablation"]["runs"]
    assert (with_ptx["run"], with_ptx["ptx_coef"], without["run"], without["ptx_coef"]) == ("ppo", 0.1, "ppo_no_ptx", 0.0)
    assert with_ptx["nll_increase"] == pytest.approx(summary["nll_increase"])
    # The ptx term trains on the pretraining text itself, so with it the NLL ends lower than
    # without it (on a tiny random model PPO alone barely moves the NLL, up or down).
    assert with_ptx["nll_increase"] < without["nll_increase"]
    # The ratio is with / without when the NLL rose without ptx, NaN (not a meaningless
    # quotient) when it fell.
    expected = with_ptx["nll_increase"] / without["nll_increase"] if without["nll_increase"] > 0 else math.nan
    assert summary["ablation"]["nll_rise_ratio"] == pytest.approx(expected, nan_ok=True)
    assert (tmp_path / "ppo_no_ptx" / "metrics.jsonl").exists()
    assert "## ptx ablation" in (tmp_path / "report.md").read_text()
