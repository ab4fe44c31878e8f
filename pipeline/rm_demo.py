"""`rlhf demo`: the reward-model stage end to end on the embedded model.

1. the pipeline's comparisons (`pipeline.comparisons`): K = 4 completions per built-in
   prompt from SmolLM2-135M-Instruct (the shipped samples of the default settings are
   reused), gold rubric scores and a simulated mistake teacher's rankings (eps = 0.1);
2. a reward model trained on the training prompts (the `reward_model:` section, by
   default configs/reward_model/quickstart.yaml), exactly the one `rlhf pipeline` trains;
3. an evaluation on the held-out prompts: pair accuracy against the gold rubric order
   (what the reward model should learn), against the teacher's noisy labels (ceiling
   about 0.90 at eps = 0.1), and the full `rlhf eval-rm` report.

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
from rlhf.metrics import gold_pair_accuracy


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
    train(rm_config)
    timings["training_s"] = time.time() - t0

    console.print(f"[bold]3.[/] evaluating on {len(comparisons.heldout)} held-out prompts")
    t0 = time.time()
    model = RewardModel.load(rm_config.output_dir)
    heldout = comparisons.heldout
    scores = model.score([c.prompt for c in heldout for _ in c.items], [item for c in heldout for item in c.items])[0]
    scores = scores.reshape(len(heldout), config.k)
    noisy_ranks = torch.tensor([[-1 if r is None else r for r in c.ranks] for c in heldout])
    noisy = pair_metrics(scores, noisy_ranks, torch.ones_like(noisy_ranks, dtype=torch.bool))
    gold = np.array([comparisons.gold[c.prompt] for c in heldout])
    gold_accuracy, gold_pairs = gold_pair_accuracy(scores.numpy(), gold)
    eval_dir = Path(rm_config.output_dir) / "eval"
    evaluate(EvaluateConfig(model_name_or_path=rm_config.output_dir, eval_data=str(out / "heldout.jsonl"),
                            output_dir=str(eval_dir), disable_tqdm=True))
    timings["evaluation_s"] = time.time() - t0
    timings["total_s"] = time.time() - started

    summary = {
        "heldout_prompts": len(heldout), "train_prompts": len(comparisons.train),
        "heldout_accuracy_vs_gold": gold_accuracy, "gold_pairs": gold_pairs,
        "heldout_accuracy_vs_noisy_labels": noisy["accuracy"],
        "gold_score_mean": float(np.mean(list(comparisons.gold.values()))),
        "gold_score_std": float(np.std(list(comparisons.gold.values()))),
        "timings": timings, "report": str(eval_dir / "report.json"),
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    console.print(
        f"\n[bold]held-out pairwise accuracy[/]: {gold_accuracy:.3f} against the gold judge's order ({gold_pairs} "
        f"pairs), {noisy['accuracy']:.3f} against the teacher's noisy labels (ceiling ~0.90)\n"
        f"time: sampling {timings['sampling_s']:.0f} s, training {timings['training_s']:.0f} s, "
        f"evaluation {timings['evaluation_s']:.0f} s, total {timings['total_s']:.0f} s\n"
        f"summary: {out / 'summary.json'}; evaluation report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
