"""Critic-free RL throughput and peak memory: our trainer's GRPO and RLOO estimators against
TRL 1.16's GRPOTrainer and RLOOTrainer, side by side in one run.

    python benchmarks/grpo_throughput.py                                  # tiny-random-llama, 8 prompts x G=4
    python benchmarks/grpo_throughput.py --model smollm2-135m-instruct --prompts 4 --steps 2
    python benchmarks/grpo_throughput.py --only ours-grpo trl-grpo --output grpo.json

Every framework runs in its own subprocess (benchmarks/harness.py), one after the other, with
the same model, prompts (the builtin ones, chat-templated, ``--prompts`` x (``--steps`` + 1)
of them so each iteration sees new ones), sampling (temperature 0.7, no top-k/top-p, stop at
EOS, at most ``--response-length`` tokens), learning rate and a rule-based reward of the
completion text (`rule_reward`; no reward model). One iteration = one generation of
B = ``--prompts`` x ``--num-generations`` completions (one ``generate`` call of all B), then
``--num-iterations`` optimizer steps on them (1: one step per generation). The mapping:

============================ ===================================== ======================================
                             ours (ppo.trainer, PPOConfig)          TRL GRPOConfig / RLOOConfig
============================ ===================================== ======================================
completions per generation   batch_size = per_device_train_batch_   generation_batch_size = B
(B)                          size x gradient_accumulation_steps x   (so steps_per_generation =
                             num_mini_batches = B completions       B / per_device_train_batch_size)
micro-batch                  per_device_train_batch_size = --micro  per_device_train_batch_size = --micro
optimizer steps / generation num_mini_batches = 1, num_ppo_epochs   gradient_accumulation_steps = B / --micro,
                             = --num-iterations                     num_iterations = --num-iterations
completions per prompt       num_generations = G                    num_generations = G
generate() call              local_rollout_forward_batch_size = B   the whole generation batch
KL                           GRPO: kl_coef 0.04, kl_in loss;        GRPO: beta 0.04 (in the loss);
                             RLOO: kl_coef 0.05, kl_in reward       RLOO: beta 0.05 (in the reward)
clip                         cliprange 0.2                          epsilon 0.2
loss reduction               GRPO: sequence_mean; RLOO: token_mean  GRPO: loss_type grpo; RLOO: its own
                             (the estimators' defaults)             (a sequence-level ratio, see docs/ppo.md)
iterations                   (--steps + 1) calls of step()          max_steps = (--steps + 1) x
                                                                    --num-iterations (optimizer steps)
gradient checkpointing       gradient_checkpointing = --gradient-   gradient_checkpointing = --gradient-
                             checkpointing (default off)            checkpointing (TRL's default is on)
============================ ===================================== ======================================

The first iteration is a warm-up and is not timed. Reported per framework: samples/s
(completions per second over the timed iterations), seconds per iteration, the share spent
in ``generate``, and the peak resident memory (VmHWM) of its subprocess, which includes
importing the libraries and loading the model; then ours/TRL ratios for GRPO and for RLOO.
Issue 15's target is >= 1.5x TRL GRPO's samples/s at <= 1.0x its peak memory on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages come from this checkout

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from benchmarks.harness import GenerateTimer, StepTimes, run_child, run_part  # noqa: E402
from ppo.config import PPOConfig  # noqa: E402
from ppo.trainer import PPOTrainer  # noqa: E402
from rlhf.generation import builtin_prompts  # noqa: E402
from rlhf.models import TINY_MODELS, load_model, load_tokenizer, resolve  # noqa: E402

PARTS = {"ours-grpo": "ours GRPO", "trl-grpo": "TRL 1.16 GRPO", "ours-rloo": "ours RLOO", "trl-rloo": "TRL 1.16 RLOO"}
PAIRS = (("ours-grpo", "trl-grpo"), ("ours-rloo", "trl-rloo"))
# beta and where the KL goes, as TRL does it for each (GRPOConfig's usual 0.04, RLOOConfig's default 0.05)
KL = {"grpo": {"kl_coef": 0.04, "kl_in": "loss"}, "rloo": {"kl_coef": 0.05, "kl_in": "reward"}}
TEMPERATURE, LEARNING_RATE = 0.7, 1e-6


def rule_reward(completion: str) -> float:
    """Words in the completion, up to 20, over 20: cheap, deterministic, text-only."""
    return min(len(completion.split()), 20) / 20


def ours_reward(prompts, completions, response_ids) -> list[float]:
    return [rule_reward(c) for c in completions]


def trl_reward(completions, **kwargs) -> list[float]:
    """TRL passes conversational completions as [{"role": "assistant", "content": ...}]."""
    return [rule_reward(c[0]["content"] if isinstance(c, list) else c) for c in completions]


def generation_size(args) -> int:
    return args.prompts * args.num_generations


def prompts(args) -> list[str]:
    return builtin_prompts()[: args.prompts * (args.steps + 1)]


def ours_config(args, work: Path, estimator: str) -> PPOConfig:
    batch = generation_size(args)
    return PPOConfig(sft_model_path=args.model, prompts=str(work / "prompts.txt"), advantage_estimator=estimator,
                     num_generations=args.num_generations, kl_in=KL[estimator]["kl_in"],
                     per_device_train_batch_size=args.micro, gradient_accumulation_steps=batch // args.micro,
                     num_mini_batches=1, local_rollout_forward_batch_size=batch, num_ppo_epochs=args.num_iterations,
                     total_episodes=(args.steps + 1) * batch, response_length=args.response_length,
                     temperature=TEMPERATURE, cliprange=0.2, kl_coef=KL[estimator]["kl_coef"],
                     learning_rate=LEARNING_RATE, output_dir=str(work / "out"), disable_tqdm=True,
                     # pinned as TRL's run is (precision: auto could pick bf16 against TRL's fp32)
                     precision="bf16" if args.bf16 else "fp32", gradient_checkpointing=args.gradient_checkpointing,
                     sample_table_every=0, logging_steps=10**6, use_cpu=True)


def trl_config(args, work: Path, estimator: str):
    from trl import GRPOConfig, RLOOConfig

    batch = generation_size(args)
    # GRPO: the paper's per-sequence mean (TRL's default is dapo), as our grpo's loss_aggregation
    extra = {"loss_type": "grpo"} if estimator == "grpo" else {}
    config_class = GRPOConfig if estimator == "grpo" else RLOOConfig
    return config_class(**extra, output_dir=str(work / "out"), per_device_train_batch_size=args.micro,
                        gradient_accumulation_steps=batch // args.micro, generation_batch_size=batch,
                        num_generations=args.num_generations, num_iterations=args.num_iterations,
                        max_completion_length=args.response_length, temperature=TEMPERATURE,
                        beta=KL[estimator]["kl_coef"], epsilon=0.2, learning_rate=LEARNING_RATE,
                        max_steps=(args.steps + 1) * args.num_iterations, use_vllm=False, use_cpu=True,
                        bf16=args.bf16, report_to=[], save_strategy="no", logging_strategy="no", eval_strategy="no",
                        # pinned as ours: TRL's default (on) recomputes the forward in the backward pass
                        gradient_checkpointing=args.gradient_checkpointing, disable_tqdm=True)


def run_ours(args, work: Path, estimator: str) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    (work / "prompts.txt").write_text("\n".join(prompts(args)))
    trainer = PPOTrainer(ours_config(args, work, estimator), reward_fn=ours_reward)
    # step() directly: train() would also save a checkpoint and the policy at the end
    history = [trainer.step() for _ in range(args.steps + 1)][1:]
    seconds = sum(h["time/step"] for h in history)
    return {"framework": PARTS[f"ours-{estimator}"], "seconds_per_iteration": seconds / len(history),
            "samples_per_second": trainer.sizes.batch_size * len(history) / seconds,
            "generation_share": sum(h["time/generation"] for h in history) / seconds,
            "rollout_forward_share": sum(h["time/forward"] for h in history) / seconds,
            "training_share": sum(h["time/update"] for h in history) / seconds,
            "mean_response_length": sum(h["response/length"] for h in history) / len(history)}


class CompletionLengths(TrainerCallback):
    """The mean completion length of the current generation at every optimizer step, read from
    the TRL trainer's metrics before its final log clears them."""

    def __init__(self, trainer):
        self.trainer, self.lengths = trainer, []

    def on_step_end(self, args, state, control, **kwargs):
        self.lengths.append(self.trainer._metrics["train"]["completions/mean_length"][-1])


def run_trl(args, work: Path, estimator: str) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer, RLOOTrainer

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.model, padding_side="left")
    policy = resolve(args.model)
    if args.model in TINY_MODELS:  # TRL builds its reference model from the policy's path: give it a folder
        policy = str(work / "policy")
        load_model(args.model).save_pretrained(policy)
        tokenizer.save_pretrained(policy)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts(args)])
    trainer_class = GRPOTrainer if estimator == "grpo" else RLOOTrainer
    trainer = trainer_class(model=policy, reward_funcs=trl_reward, args=trl_config(args, work, estimator),
                            train_dataset=dataset, processing_class=tokenizer)
    steps = StepTimes(GenerateTimer(trainer.model))
    lengths = CompletionLengths(trainer)
    trainer.add_callback(steps.callback())
    trainer.add_callback(lengths)
    trainer.train()
    result = steps.summary(generation_size(args), None, PARTS[f"trl-{estimator}"], args.num_iterations)
    timed = lengths.lengths[args.num_iterations:]
    return result | {"mean_response_length": sum(timed) / len(timed)}


def run(args, work: Path) -> dict:
    side, estimator = args.part.split("-")
    return (run_ours if side == "ours" else run_trl)(args, work, estimator)


def ratio(ours: dict, trl: dict, key: str) -> float | None:
    if "error" in ours or "error" in trl:
        return None
    return ours[key] / trl[key]


def report(args, results: dict) -> dict:
    """The table (rich) and the ours/TRL ratios per estimator."""
    table = Table(title=f"{args.model}: {args.prompts} prompts x G={args.num_generations}, "
                        f"{args.response_length} tokens, {args.num_iterations} step(s) per generation, "
                        f"{args.steps} timed iterations, {args.threads} threads, {'bf16' if args.bf16 else 'fp32'}")
    for column in ("framework", "samples/s", "s/iteration", "in generate", "response length", "peak RSS (MB)"):
        table.add_column(column, justify="left" if column == "framework" else "right")
    for part, r in results.items():
        if "error" in r:
            table.add_row(PARTS[part], f"error: {r['error']}", "", "", "", "")
            continue
        table.add_row(r["framework"], f"{r['samples_per_second']:.2f}", f"{r['seconds_per_iteration']:.2f}",
                      f"{100 * r['generation_share']:.0f} %", f"{r['mean_response_length']:.1f}",
                      f"{r['peak_rss_bytes'] / 1e6:.0f}")
    ratios = {}
    for ours, trl in PAIRS:
        if ours in results and trl in results:
            ratios[ours.split("-")[1]] = {
                key: ratio(results[ours], results[trl], key)
                for key in ("samples_per_second", "seconds_per_iteration", "peak_rss_bytes")}
    for estimator, r in ratios.items():
        if None not in r.values():
            table.add_row(f"ours/TRL {estimator.upper()}", f"{r['samples_per_second']:.2f}x",
                          f"{r['seconds_per_iteration']:.2f}x", "", "", f"{r['peak_rss_bytes']:.2f}x")
    Console(width=120).print(table)
    return ratios


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-llama")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per generation")
    parser.add_argument("--num-generations", type=int, default=4, help="completions per prompt (G)")
    parser.add_argument("--micro", type=int, default=8, help="completions per forward/backward pass")
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--num-iterations", type=int, default=1, help="optimizer steps per generation")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="both frameworks recompute activations in the backward pass (default: neither)")
    parser.add_argument("--only", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="write the results and ratios as JSON here")
    args = parser.parse_args(argv)
    if generation_size(args) % args.micro:
        parser.error(f"--micro {args.micro} must divide --prompts x --num-generations = {generation_size(args)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part:
        run_child(run, args)
        return 0

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
    passthrough = argv if argv is not None else sys.argv[1:]
    results = {part: run_part(sys.executable, __file__, part, passthrough, env, ROOT) for part in args.only}
    ratios = report(args, results)
    if args.output:
        Path(args.output).write_text(json.dumps({"settings": vars(args), "results": results, "ratios": ratios},
                                                indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
