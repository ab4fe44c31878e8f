"""`rlhf pipeline --config configs/pipeline/<name>.yaml`: the whole RLHF loop, once.

1. comparisons: K completions per built-in prompt sampled from the policy and ranked by the
   simulated rubric teacher, or people's labels exported by the labelling app (`labels:`);
2. a reward model trained on the training prompts (the `reward_model:` section);
3. PPO with a per-token KL penalty and the ptx term on the training prompts (the `ppo:`
   section), the gold rubric judging each rollout for the reward-hacking monitors
   (`ppo.monitors`);
4. a report (Markdown + PNG): reward, KL and ptx-NLL curves, the gold rubric score on
   held-out prompts before and after, NLL on held-out pretraining text before and after,
   the monitors' panel, and sample completions before and after.

The YAML holds this file's `PipelineConfig` fields and two sections that are a
`RewardModelConfig` and a `PPOConfig` (each may start from a stage config file with
`config: path`); `--field value` overrides a top-level field and `--ppo.learning_rate 1e-5`
a stage field. Every value is checked before anything is sampled or trained.

With `ptx_ablation: true` PPO runs twice from the same reward model, prompts and seed: as
configured, and with `ptx_coef: 0`; the report compares how much each run raised the NLL
of held-out pretraining text (the point of the ptx term; Ouyang et al. 2022, eq. 2).

An `out` folder holding an earlier run is refused unless `--overwrite true`; the earlier
run is then deleted once the configs and labels are checked (`rlhf.outputs`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from pipeline.comparisons import ComparisonsConfig, make_comparisons, reward_model_paths
from pipeline.report import plot_curves, plot_gold_vs_kl, plot_monitors, write_report
from ppo.config import PPOConfig
from ppo.trainer import PPOTrainer
from reward_model.train import RewardModelConfig
from reward_model.train import train as train_reward_model
from rlhf.config import ConfigError, parse_nested_config, run_main
from rlhf.generation import generate_completions, prompt_text
from rlhf.models import load_model, load_tokenizer
from rlhf.outputs import check_output_folder, start_output_folder, write_text
from rlhf.preferences import load_comparisons
from rlhf.rubric import PROPERTIES, gold_score, is_content_free, rubric

STAGES = {"reward_model": RewardModelConfig, "ppo": PPOConfig}
STAGE_DEFAULTS = {"reward_model": {"config": "configs/reward_model/quickstart.yaml"},
                  "ppo": {"config": "configs/ppo/quickstart.yaml"}}


@dataclass
class PipelineConfig(ComparisonsConfig):
    """The pipeline's own fields; the stages' fields live in the `reward_model:` and `ppo:` sections."""

    labels: str | None = field(default=None, metadata={
        "help": "a labelling-app export (core/ranked/TRL JSONL): people's labels instead of the simulated teacher"})
    eval_max_new_tokens: int = field(default=64, metadata={"help": "length of the held-out completions before/after PPO"})
    eval_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the held-out completions"})
    pretrain_heldout: str = field(default="ppo/data/pretrain_heldout.txt", metadata={
        "help": "plain text whose NLL before/after PPO measures drift from pretraining"})
    ptx_ablation: bool = field(default=False, metadata={
        "help": "also run PPO with ptx_coef 0 and compare the NLL rise on held-out pretraining text"})
    out: str = field(default="runs/pipeline/quickstart", metadata={"help": "output folder"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace an earlier run in `out` (deleted once the inputs are checked); without it an earlier run is refused"})

    def __post_init__(self):
        super().__post_init__()
        for name in ("labels", "pretrain_heldout"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValueError(f"{name}: expected an existing file, got {value}")


def stage_paths(config: PipelineConfig) -> dict[str, dict]:
    """What the pipeline sets in the stages' configs itself: the files that join them."""
    out = Path(config.out)
    return {"reward_model": reward_model_paths(out, config.seed),
            "ppo": {"sft_model_path": config.policy_model, "reward_models": [str(out / "reward_model")],
                    "prompts": str(out / "train_prompts.jsonl"), "output_dir": str(out / "ppo"), "seed": config.seed}}


def parse_config(argv: list[str] | None = None) -> tuple[PipelineConfig, RewardModelConfig, PPOConfig]:
    config, stages = parse_nested_config(PipelineConfig, STAGES, argv, prog="rlhf pipeline",
                                         section_defaults=STAGE_DEFAULTS, derived=stage_paths)
    ppo = stages["ppo"]
    if ppo.pretrain_data is not None and not Path(ppo.pretrain_data).is_file():
        raise ConfigError("ppo.pretrain_data", f"an existing text file, got {ppo.pretrain_data}")
    if config.labels is not None:
        check_labels(config.labels)
    return config, stages["reward_model"], ppo


def check_labels(labels: str) -> None:
    """People's labels must hold something to train on: found here, naming the user's
    file, rather than by the reward-model stage naming the pipeline's own train.jsonl."""
    comparisons = load_comparisons(labels)
    if not any(comparison.trainable for comparison in comparisons):
        raise ConfigError("--labels", f"{labels}: no trainable comparison ({len(comparisons)} not comparable); "
                                      "expected at least one judged pair, choice or ranking")


@torch.no_grad()
def text_nll(model, tokenizer, text: str, block: int = 128) -> float:
    """Mean token negative log-likelihood of a text, in blocks of `block` tokens."""
    ids = tokenizer(text)["input_ids"]
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, block):
        chunk = torch.tensor([ids[start:start + block + 1]])
        if chunk.shape[1] < 2:
            break
        logits = model(chunk[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
        total, count = total + loss.item(), count + chunk.shape[1] - 1
    return total / max(count, 1)


def gold_summary(texts: list[str], prompts: list[str]) -> dict:
    """Gold judge mean and std of answers to their prompts, words per answer, the shares
    of answers on the prompt's topic and content-free (`rlhf.rubric`'s on_topic property
    and content-free rule), and the mean of each of the judge's properties (where the gold
    went)."""
    scores = [rubric(text, prompt) for text, prompt in zip(texts, prompts)]
    totals = np.array([score.total for score in scores])
    return {"mean": float(totals.mean()), "std": float(totals.std()), "n": len(totals),
            "words": float(np.mean([len(text.split()) for text in texts])),
            "topical": float(np.mean([score.on_topic == 1.0 for score in scores])),
            "content_free": float(np.mean([is_content_free(text, prompt) for text, prompt in zip(texts, prompts)])),
            "properties": {name: float(np.mean([getattr(score, name) for score in scores])) for name in PROPERTIES}}


def gold_gain_in_std(before: dict, after_mean: float) -> float:
    """The change of the held-out gold mean in units of its initial standard deviation
    (``before`` as `gold_summary` gives it). With ``after_mean`` = 1.0, the judge's maximum,
    it is the largest gain the measure allows."""
    return (after_mean - before["mean"]) / max(before["std"], 1e-9)


def rollout_gold(prompts: list, completions: list[str]) -> list[float]:
    """The gold judge on PPO's own rollouts, for the monitors (a conversation prompt is
    judged by its last turn, the one answered)."""
    return [gold_score(completion, prompt_text(prompt)) for prompt, completion in zip(prompts, completions)]


def random_samples(prompts: list[str], before: list[str], after: list[str], n: int = 5, seed: int = 0) -> list:
    """`n` (prompt, before, after) triples drawn at random with a fixed seed, in prompt order
    (not the first n, which a reader could suspect were picked)."""
    chosen = np.random.default_rng(seed).choice(len(prompts), size=min(n, len(prompts)), replace=False)
    return [(prompts[i], before[i], after[i]) for i in sorted(chosen.tolist())]


def run(config: PipelineConfig, rm_config: RewardModelConfig, ppo_config: PPOConfig, console: Console) -> dict:
    """Steps 1-4; returns the summary written to ``out/summary.json``."""
    out = start_output_folder(config.out, config.overwrite)
    write_text(out / "pipeline_config.json", json.dumps(
        {"pipeline": dataclasses.asdict(config), "reward_model": rm_config.to_dict(), "ppo": ppo_config.to_dict()},
        indent=2, default=str))
    timings, started = {}, time.time()

    console.print("[bold]1.[/] comparisons")
    comparisons = make_comparisons(config, out, console, labels=config.labels)
    heldout_prompts = [c.prompt for c in comparisons.heldout]
    timings["comparisons"] = time.time() - started

    console.print(f"[bold]2.[/] reward model on {len(comparisons.train)} training prompts")
    t0 = time.time()
    rm_summary = train_reward_model(rm_config)
    evals = [e for e in rm_summary["log_history"][-1] if "eval_accuracy" in e]
    rm_accuracy = f"{evals[-1]['eval_accuracy']:.3f} (noisy labels)" if evals else "n/a"
    timings["reward_model"] = time.time() - t0

    console.print("[bold]3.[/] PPO with KL penalty and ptx")
    t0 = time.time()
    variants = {"ppo": ppo_config}
    if config.ptx_ablation:
        variants["ppo_no_ptx"] = dataclasses.replace(ppo_config, ptx_coef=0.0,
                                                     output_dir=str(Path(config.out) / "ppo_no_ptx"))
        console.print("   with an ablation run ppo_no_ptx: ptx_coef 0")
    runs = {name: PPOTrainer(variant, gold_fn=rollout_gold).train() for name, variant in variants.items()}
    history = runs["ppo"]["history"]
    timings["ppo"] = time.time() - t0

    console.print(f"[bold]4.[/] evaluation on {len(heldout_prompts)} held-out prompts")
    t0 = time.time()
    tokenizer = load_tokenizer(config.policy_model, padding_side="left")
    pretrain_text = Path(config.pretrain_heldout).read_text(encoding="utf-8")

    def evaluate(model) -> tuple[list[str], dict, float]:
        texts = generate_completions(model, heldout_prompts, tokenizer=tokenizer,
                                     max_new_tokens=config.eval_max_new_tokens, temperature=config.eval_temperature,
                                     seed=config.seed, stop_token=ppo_config.stop_token)
        return texts, gold_summary(texts, heldout_prompts), text_nll(model, tokenizer, pretrain_text)

    pad = {"pad_token_id": tokenizer.pad_token_id}  # the tokenizer is at hand: no second load per model
    before_texts, before, nll_before = evaluate(load_model(config.policy_model, seed=config.seed, **pad))
    after = {name: evaluate(load_model(summary["policy_dir"], **pad)) for name, summary in runs.items()}
    after_texts, after_gold, nll_after = after["ppo"]
    timings["evaluation"] = time.time() - t0
    timings["total"] = time.time() - started

    summary = {
        "comparisons": comparisons.total,
        "label_source": "people" if config.labels else f"mistake teacher eps={config.eps}",
        "train_prompts": len(comparisons.train), "heldout_prompts": len(comparisons.heldout),
        "ppo_steps": runs["ppo"]["steps"], "gold_before": before, "gold_after": after_gold,
        "gold_gain_in_std": gold_gain_in_std(before, after_gold["mean"]),
        "gold_gain_ceiling_in_std": gold_gain_in_std(before, 1.0),
        "kl_final": history[-1]["objective/kl"],
        "kl_mean_last5": float(np.mean([h["objective/kl"] for h in history[-5:]])),
        "nll_before": nll_before, "nll_after": nll_after, "nll_increase": nll_after - nll_before,
        "rm_eval_accuracy": rm_accuracy, "policy_dir": runs["ppo"]["policy_dir"], "timings": timings,
        "monitors": runs["ppo"]["warnings"],
    }
    if config.ptx_ablation:
        rows = [{"run": name, "ptx_coef": variants[name].ptx_coef, "nll_increase": after[name][2] - nll_before,
                 "gold_after": after[name][1]["mean"], "kl_final": runs[name]["history"][-1]["objective/kl"]}
                for name in runs]
        with_ptx, without = rows[0]["nll_increase"], rows[1]["nll_increase"]
        # a ratio only means something when dropping ptx let the NLL rise
        summary["ablation"] = {"runs": rows, "nll_rise_ratio": with_ptx / without if without > 0 else math.nan}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    plot_curves(history, out / "curves.png")
    plot_gold_vs_kl(history, before, after_gold, out / "gold_vs_kl.png")
    plot_monitors(history, summary["monitors"], out / "monitors.png")
    samples = list(zip(heldout_prompts, before_texts, after_texts))
    write_text(out / "heldout_samples.jsonl", "".join(
        json.dumps({"prompt": prompt, "before": old, "after": new}) + "\n" for prompt, old, new in samples))
    summary["report"] = str(write_report(out, config.policy_model, summary,
                                          random_samples(heldout_prompts, before_texts, after_texts, seed=config.seed)))
    return summary


def main(argv: list[str] | None = None) -> int:
    config, rm_config, ppo_config = parse_config(argv)
    check_output_folder(config.out, "--out", config.overwrite)
    console = Console()
    summary = run(config, rm_config, ppo_config, console)
    before, after = summary["gold_before"], summary["gold_after"]
    console.print(
        f"\n[bold]held-out gold judge[/]: {before['mean']:.3f} -> {after['mean']:.3f} "
        f"({summary['gold_gain_in_std']:+.2f} initial std, at most {summary['gold_gain_ceiling_in_std']:+.2f}); "
        f"on topic {before['topical']:.0%} -> {after['topical']:.0%}, "
        f"content-free {before['content_free']:.0%} -> {after['content_free']:.0%}; KL/seq {summary['kl_final']:.2f} nats; "
        f"pretraining NLL {summary['nll_before']:.3f} -> {summary['nll_after']:.3f}; {summary['timings']['total']:.0f} s")
    if config.ptx_ablation:
        console.print(f"ptx ablation: NLL rise with ptx / without = {summary['ablation']['nll_rise_ratio']:.2f} "
                      "(target <= 0.5)")
    console.print(f"report: {summary['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
