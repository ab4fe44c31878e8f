"""Training pairs per second: our PreferenceRewardTrainer vs TRL's RewardTrainer.

Both trainers get the same model (same name and init seed), the same planted preference
data, the same optimiser settings, precision, number of prompts per step and number of
optimizer steps. A callback stamps the end of every optimizer step; the first `--warmup`
steps are left out and the speed is taken from the median step duration. By default the
clock is the process CPU time with one torch thread, so other processes on a shared CPU
do not count (`--clock wall --threads 2` for wall-clock time); each trainer runs
`--repeats` times, alternating with the other, and the median run is kept.

  pairwise   K = 2: each prompt is one pair; both trainers take `--batch` pairs per step.
  K = 4      rankings of 4 completions. Ours is given the rankings (4 sequences per
             prompt, InstructGPT's all-pairs loss `pairwise_ranking`); TRL is given the
             6 induced (better, worse) pairs per prompt (12 sequences), `6 x --batch`
             pairs per step, so both cover the same prompts per step. "pairs/s" counts
             the 6 induced pairs per prompt for both.

After the K = 4 runs both trained models score a held-out planted set (new prompts, same
rule: more 'apple's is better) and the share of correctly ordered pairs is printed, so
the speed comparison is at (about) equal accuracy.

The tokenizer's pad token is set to <|endoftext|> (distinct from SmolLM2's EOS) for both,
so TRL's pooling (rightmost non-pad token) reads the EOS as ours does.

Usage:
  .venv/bin/python benchmarks/reward_model_throughput.py
  .venv/bin/python benchmarks/reward_model_throughput.py --model smollm2-135m-instruct [--bf16] \
      --prompts 32 --batch 2 --words 8 --steps 6 --warmup 2 --repeats 1 --lr 2e-5   # minutes on 1 core
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from reward_model.data import ComparisonCollator, tokenize_comparisons  # noqa: E402
from reward_model.modeling import sequence_scores  # noqa: E402
from reward_model.train import ListDataset, RewardModelConfig  # noqa: E402
from reward_model.trainer import PreferenceRewardTrainer, pair_metrics  # noqa: E402
from rlhf.models import load_model, load_tokenizer  # noqa: E402
from rlhf.preferences import Comparison  # noqa: E402

WORDS = ["red", "blue", "green", "cat", "dog", "sun", "tree", "rock", "moon", "fish", "bird", "leaf"]


def planted(n: int, k: int, words: int, seed: int) -> list[Comparison]:
    """n prompts with k completions of random words; completion j of a prompt has j
    'apple's among them and more apples is better (ties impossible)."""
    rng = random.Random(seed)
    comparisons = []
    for i in range(n):
        texts = []
        for apples in range(k):
            tokens = [rng.choice(WORDS) for _ in range(words)] + ["apple"] * apples
            rng.shuffle(tokens)
            texts.append(" " + " ".join(tokens))
        order = list(range(k))
        rng.shuffle(order)
        items = [texts[j] for j in order]
        if k == 2:
            comparisons.append(Comparison(items=items, kind="pair", label=1.0 if order[0] > order[1] else 0.0,
                                          prompt=f"Item {i}:"))
        else:
            comparisons.append(Comparison(items=items, kind="ranking", ranks=[k - 1 - a for a in order],
                                          prompt=f"Item {i}:"))
    return comparisons


def induced_pairs(comparison: Comparison) -> list[dict]:
    """TRL rows (prompt, chosen, rejected): every strictly ordered pair of a comparison."""
    ranks = comparison.to_ranks()
    return [{"prompt": comparison.prompt, "chosen": comparison.items[a], "rejected": comparison.items[b]}
            for a, b in itertools.permutations(range(len(ranks)), 2) if ranks[a] < ranks[b]]


class StepClock(TrainerCallback):
    """Stamps the end of every optimizer step with the process CPU time (default: robust to
    other processes on a shared CPU, exact with one thread) or the wall clock."""

    def __init__(self, clock: str = "cpu"):
        self.now = time.process_time if clock == "cpu" else time.perf_counter
        self.stamps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(self.now())


def common_args(opts, output_dir: str, batch: int) -> dict:
    return dict(output_dir=output_dir, per_device_train_batch_size=batch, max_steps=opts.steps,
                learning_rate=opts.lr, bf16=opts.bf16, use_cpu=True, gradient_checkpointing=False,
                logging_steps=opts.steps, save_strategy="no", report_to="none", disable_tqdm=True,
                seed=opts.seed, dataloader_num_workers=0)


def timed_pairs_per_second(clock: StepClock, warmup: int, pairs_per_step: int) -> float:
    """Pairs per second from the median duration of the steps after the warmup (the CPU is
    shared: a median step is robust to bursts of load from other processes)."""
    stamps = clock.stamps[warmup - 1:]
    return pairs_per_step / statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def run_ours(opts, tokenizer, comparisons, k: int):
    examples, _ = tokenize_comparisons(comparisons, tokenizer)
    model = load_model(opts.model, kind="seq_cls", seed=opts.seed)
    model.config.pad_token_id = tokenizer.pad_token_id
    clock = StepClock(opts.clock)
    with tempfile.TemporaryDirectory() as out:
        args = RewardModelConfig(**common_args(opts, out, opts.batch), model_name_or_path=opts.model,
                                 loss="bradley_terry" if k == 2 else "pairwise_ranking")
        trainer = PreferenceRewardTrainer(model=model, args=args, processing_class=tokenizer,
                                          data_collator=ComparisonCollator(tokenizer.pad_token_id),
                                          train_dataset=ListDataset(examples), loss_type=args.loss,
                                          callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    pairs_per_step = opts.batch * k * (k - 1) // 2
    return timed_pairs_per_second(clock, opts.warmup, pairs_per_step), trainer.model


def run_trl(opts, tokenizer, comparisons, k: int):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rows = [row for comparison in comparisons for row in induced_pairs(comparison)]
    model = load_model(opts.model, kind="seq_cls", seed=opts.seed)
    model.config.pad_token_id = tokenizer.pad_token_id
    pairs_per_step = opts.batch * k * (k - 1) // 2
    clock = StepClock(opts.clock)
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(**common_args(opts, out, pairs_per_step))
        trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer,
                                train_dataset=Dataset.from_list(rows), callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return timed_pairs_per_second(clock, opts.warmup, pairs_per_step), trainer.model


@torch.no_grad()
def held_out_accuracy(model, tokenizer, comparisons, bf16: bool) -> float:
    """Share of the induced pairs ordered correctly (pooled at the EOS, as both trained)."""
    model.eval()
    examples, _ = tokenize_comparisons(comparisons, tokenizer)
    batch = ComparisonCollator(tokenizer.pad_token_id)(examples)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        flat = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
    scores = flat.new_zeros(batch["item_mask"].shape).masked_scatter(batch["item_mask"], flat)
    return pair_metrics(scores, batch["ranks"], batch["item_mask"])["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-random-llama-wide",
                        help="tiny-random-llama-wide (default) | smollm2-135m-instruct | tiny-random-llama")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both trainers (fp32 otherwise)")
    parser.add_argument("--prompts", type=int, default=128, help="training prompts per setup")
    parser.add_argument("--words", type=int, default=24, help="random words per completion (+ 0..K-1 apples)")
    parser.add_argument("--batch", type=int, default=8, help="prompts per optimizer step")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run, warmup included")
    parser.add_argument("--warmup", type=int, default=4, help="first steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per trainer; the median is kept")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time = work done)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="time steps by process CPU time (default; the CPU may be shared) or wall clock")
    parser.add_argument("--held-out", type=int, default=64, help="held-out K = 4 prompts for the accuracy check")
    opts = parser.parse_args()
    assert 0 < opts.warmup < opts.steps
    torch.set_num_threads(opts.threads)
    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()

    tokenizer = load_tokenizer(opts.model)
    tokenizer.pad_token = "<|endoftext|>"  # distinct from EOS: TRL then pools at the EOS too
    precision = "bf16" if opts.bf16 else "fp32"
    print(f"model {opts.model}, {precision}, {opts.threads} threads, {opts.clock} clock, {opts.prompts} prompts x {opts.words}+ words, "
          f"{opts.batch} prompts/step, {opts.steps} steps ({opts.warmup} warmup), {opts.repeats} repeats")
    results = {}
    for k in (2, 4):
        comparisons = planted(opts.prompts, k, opts.words, seed=opts.seed)
        ours, trl = [], []
        for _ in range(opts.repeats):
            speed, our_model = run_ours(opts, tokenizer, comparisons, k)
            ours.append(speed)
            speed, trl_model = run_trl(opts, tokenizer, comparisons, k)
            trl.append(speed)
        name = "pairwise" if k == 2 else "K = 4"
        our_speed, trl_speed = statistics.median(ours), statistics.median(trl)
        results[name] = our_speed / trl_speed
        print(f"{name:8s}  ours {our_speed:8.1f} pairs/s   TRL {trl_speed:8.1f} pairs/s   ratio {our_speed / trl_speed:.2f}x"
              f"   (runs: ours {', '.join(f'{s:.0f}' for s in ours)}; TRL {', '.join(f'{s:.0f}' for s in trl)})")
        if k == 4:
            test = planted(opts.held_out, 4, opts.words, seed=opts.seed + 1000)
            print(f"K = 4 held-out pair accuracy ({opts.held_out} prompts, last run of each): "
                  f"ours {held_out_accuracy(our_model, tokenizer, test, opts.bf16):.3f}   "
                  f"TRL {held_out_accuracy(trl_model, tokenizer, test, opts.bf16):.3f}")
    print("ratios (ours / TRL): " + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in results.items()))


if __name__ == "__main__":
    main()
