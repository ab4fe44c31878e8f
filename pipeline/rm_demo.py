"""`rlhf demo`: the reward-model stage end to end on the embedded model.

1. the pipeline's comparisons (`pipeline.comparisons`): K = 4 completions per built-in
   prompt from SmolLM2-135M-Instruct (the shipped samples of the default settings are
   reused), gold rubric scores and a simulated mistake teacher's rankings (eps = 0.1);
2. a reward model trained on the training prompts (the `reward_model:` section, by
   default configs/reward_model/quickstart.yaml), exactly the one `rlhf pipeline` trains;
3. an evaluation on the held-out prompts, printed as four accuracies, one line each
   (docs/reward_models.md, "The reward-model demo"): against the gold rubric order (what
   the reward model should learn) and against the teacher's noisy labels (a mistake
   swaps one adjacent pair of a ranking: the gold order itself scores 1 - eps / C(K, 2),
   0.983 at eps = 0.1, K = 4), both pooled over pairs; the trainer's eval_accuracy at its last
   evaluation and `rlhf eval-rm`'s (noisy labels, mean over prompts: both are `evaluate_scores`'
   accuracy, equal when that evaluation follows the last step), whose full report is written too.

    rlhf demo
    rlhf demo --num_prompts 40 --reward_model.num_train_epochs 1 --out runs/demo_small
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from pipeline.comparisons import ComparisonsConfig, make_comparisons, reward_model_paths
from reward_model.evaluate import EvaluateConfig, evaluate
from reward_model.modeling import RewardModel
from reward_model.train import RewardModelConfig, train
from reward_model.trainer import pair_metrics
from rlhf.config import parse_nested_config, run_main
from rlhf.outputs import check_output_folder, start_output_folder, write_text
from rlhf.metrics import gold_pair_accuracy, ranking_pairs


@dataclass
class RewardModelDemoConfig(ComparisonsConfig):
    out: str = field(default="runs/demo", metadata={"help": "output folder"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace an earlier run in `out` (deleted once the config is checked); without it an earlier run is refused"})


def parse_config(argv: list[str] | None = None) -> tuple[RewardModelDemoConfig, RewardModelConfig]:
    config, stages = parse_nested_config(
        RewardModelDemoConfig, {"reward_model": RewardModelConfig}, argv, prog="rlhf demo",
        section_defaults={"reward_model": {"config": "configs/reward_model/quickstart.yaml"}},
        derived=lambda top: {"reward_model": reward_model_paths(Path(top.out), top.seed)})
    return config, stages["reward_model"]


def last_eval_accuracy(log_history: list[dict]) -> float | None:
    """The trainer's last logged ``eval_accuracy`` (None when it did not evaluate)."""
    values = [entry["eval_accuracy"] for entry in log_history if "eval_accuracy" in entry]
    return values[-1] if values else None


def accuracy_lines(accuracies: dict, gold_pairs: int, noisy_pairs: int, eps: float, k: int) -> list[str]:
    """One line per held-out accuracy, saying what it measures: they differ in the labels
    (gold rubric or the teacher's noisy rankings) and in how pairs are averaged.

    The teacher's mistake swaps one adjacent pair of a K-ranking with probability eps, so a
    model that orders exactly like gold agrees with 1 - eps / C(K, 2) of the noisy pairs."""
    def number(value):
        return "  n/a" if value is None else f"{value:.3f}"
    ceiling = 1 - eps / (k * (k - 1) / 2)
    gold = accuracies["heldout_accuracy_vs_gold"] if gold_pairs else None  # 0.0 stands for "no pair" there
    noisy = accuracies["heldout_accuracy_vs_noisy_labels"] if noisy_pairs else None
    return [
        f"  {number(gold)}  vs gold: pairs ordered like the gold rubric's "
        f"scores (what the reward model should learn), pooled over {gold_pairs} pairs",
        f"  {number(noisy)}  vs noisy labels: pairs ordered like the "
        f"simulated teacher's rankings (eps={eps}; the gold order scores about {ceiling:.3f}), pooled over "
        f"{noisy_pairs} pairs",
        f"  {number(accuracies['trainer_eval_accuracy'])}  trainer (eval_accuracy, last evaluation): the same "
        "noisy labels, eval-rm's accuracy on the model of that step"
        + ("" if accuracies["trainer_eval_accuracy"] is not None else " (the trainer did not evaluate)"),
        f"  {number(accuracies['eval_rm_accuracy'])}  eval-rm (report.json accuracy): the same noisy labels, "
        "the mean over prompts of each prompt's pair accuracy (RewardBench's per-example rule)",
    ]


def main(argv: list[str] | None = None) -> int:
    config, rm_config = parse_config(argv)
    check_output_folder(config.out, "--out", config.overwrite)
    console = Console()
    out = start_output_folder(config.out, config.overwrite)
    timings, started = {}, time.time()

    console.print(f"[bold]1.[/] comparisons: {config.k} completions per prompt from {config.policy_model}, "
                  f"ranked by a mistake teacher (eps={config.eps})")
    comparisons = make_comparisons(config, out, console)
    timings["sampling_s"] = time.time() - started

    console.print(f"[bold]2.[/] training the reward model on {len(comparisons.train)} prompts")
    t0 = time.time()
    trained = train(rm_config)
    timings["training_s"] = time.time() - t0

    console.print(f"[bold]3.[/] evaluating on {len(comparisons.heldout)} held-out prompts; `rlhf eval-rm` says:")
    t0 = time.time()
    model = RewardModel.load(rm_config.output_dir)
    heldout = comparisons.heldout
    scores = model.score([c.prompt for c in heldout for _ in c.items], [item for c in heldout for item in c.items])[0]
    scores = scores.reshape(len(heldout), config.k)
    noisy_ranks = torch.tensor([[-1 if r is None else r for r in c.ranks] for c in heldout])
    noisy = pair_metrics(scores, noisy_ranks, torch.ones_like(noisy_ranks, dtype=torch.bool))
    noisy_pairs = sum(len(ranking_pairs(c.ranks)[0]) for c in heldout)
    gold = np.array([comparisons.gold[c.prompt] for c in heldout])
    gold_accuracy, gold_pairs = gold_pair_accuracy(scores.numpy(), gold)
    eval_dir = Path(rm_config.output_dir) / "eval"
    report = evaluate(EvaluateConfig(model_name_or_path=rm_config.output_dir, eval_data=str(out / "heldout.jsonl"),
                                     output_dir=str(eval_dir), disable_tqdm=True))
    timings["evaluation_s"] = time.time() - t0
    timings["total_s"] = time.time() - started

    accuracies = {
        "heldout_accuracy_vs_gold": gold_accuracy,
        "heldout_accuracy_vs_noisy_labels": noisy["accuracy"],
        "trainer_eval_accuracy": last_eval_accuracy(trained["log_history"][0]),
        "eval_rm_accuracy": report["accuracy"]["accuracy"],
    }
    summary = {
        "heldout_prompts": len(heldout), "train_prompts": len(comparisons.train),
        **accuracies, "gold_pairs": gold_pairs, "noisy_label_pairs": noisy_pairs,
        "gold_score_mean": float(np.mean(list(comparisons.gold.values()))),
        "gold_score_std": float(np.std(list(comparisons.gold.values()))),
        "timings": timings, "report": str(eval_dir / "report.json"),
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    console.print(f"\n[bold]held-out accuracy[/] of the reward model on the same {len(heldout)} held-out prompts, "
                  "four ways:", highlight=False, soft_wrap=True)
    for line in accuracy_lines(accuracies, gold_pairs, noisy_pairs, config.eps, config.k):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(
        f"time: sampling {timings['sampling_s']:.0f} s, training {timings['training_s']:.0f} s, "
        f"evaluation {timings['evaluation_s']:.0f} s, total {timings['total_s']:.0f} s\n"
        f"summary: {out / 'summary.json'}; evaluation report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
