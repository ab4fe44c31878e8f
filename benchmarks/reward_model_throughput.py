"""Training pairs per second: our PreferenceRewardTrainer vs TRL's RewardTrainer.

Both trainers get the same model (same name, layers and init seed), the same data, the
same optimiser settings, precision, number of prompts per step and number of optimizer
steps. A callback stamps the end of every optimizer step; the first `--warmup` steps are
left out and the speed is taken from the median step duration. By default the clock is
the process CPU time with one torch thread, so other processes on a shared CPU do not
count (`--clock wall --threads 2` for wall-clock time); each trainer runs `--repeats`
times, alternating with the other, and the median run is kept.

Data (`--data`):
  demo     (default) the shipped K = 4 samples of SmolLM2-135M-Instruct for the built-in
           prompts (`pipeline/data/demo_samples.jsonl`, real lengths from 13 to 113
           tokens), ordered by the gold rubric (ties broken by position).
  planted  random words where more 'apple's is better (all sequences about equally long).

  pairwise   K = 2 (the first two completions of each prompt): one pair per prompt; both
             trainers take `--batch` pairs per step.
  K = 4      rankings of 4 completions. Ours is given the rankings (4 sequences per
             prompt, InstructGPT's all-pairs loss `pairwise_ranking`); TRL is given the
             6 induced (better, worse) pairs per prompt (12 sequences), `6 x --batch`
             pairs per step, so both cover the same prompts per step. "pairs/s" counts
             the 6 induced pairs per prompt for both. For full rankings the all-pairs loss
             is the mean of TRL's pair losses, so both optimise the same objective.

Ours runs with its defaults, padding-free packing included (`--no-padding-free` to turn
it off and see what the packing alone is worth). After the K = 4 runs both trained
models score held-out prompts and the share of correctly ordered pairs is printed, so
the speed comparison is at (about) equal accuracy.

The tokenizer's pad token is set to <|endoftext|> (distinct from SmolLM2's EOS) for both,
so TRL's pooling (rightmost non-pad token) reads the EOS as ours does.

Usage:
  .venv/bin/python benchmarks/reward_model_throughput.py            # the demo's reward model (SmolLM2, 4 layers)
  .venv/bin/python benchmarks/reward_model_throughput.py --data planted --model tiny-random-llama-wide --layers 0 \
      --batch 8 --steps 40 --warmup 4 --repeats 3 --lr 3e-3            # per-step overhead on a near-empty model
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from pipeline.comparisons import SHIPPED_SAMPLES  # noqa: E402
from reward_model.collate import ComparisonCollator, tokenize_comparisons  # noqa: E402
from reward_model.modeling import check_padding_free, sequence_scores  # noqa: E402
from reward_model.train import RewardModelConfig  # noqa: E402
from reward_model.trainer import PreferenceRewardTrainer, pair_metrics, scatter_scores  # noqa: E402
from rlhf.models import load_model, load_tokenizer  # noqa: E402
from rlhf.metrics import ranking_pairs  # noqa: E402
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


def demo(k: int, n_train: int, n_held_out: int) -> tuple[list[Comparison], list[Comparison]]:
    """The shipped demo samples as rankings by gold rubric score (first `k` completions of
    each prompt; train prompts first, then held-out ones)."""
    from rlhf.rubric import gold_score

    path = SHIPPED_SAMPLES
    rows = [json.loads(line) for line in path.read_text().splitlines()[1:]]  # line 1: sampling settings
    if n_train + n_held_out > len(rows):
        raise SystemExit(f"--prompts {n_train} + --held-out {n_held_out} > {len(rows)} demo prompts")
    comparisons = []
    for row in rows[:n_train + n_held_out]:
        items = row["completions"][:k]
        order = sorted(range(k), key=lambda j: (-gold_score(items[j], row["prompt"]), j))
        ranks = [order.index(j) for j in range(k)]
        prompt = row["prompt"] + "\n"
        if k == 2:
            comparisons.append(Comparison(items=items, kind="pair", label=1.0 if ranks[0] < ranks[1] else 0.0,
                                          prompt=prompt))
        else:
            comparisons.append(Comparison(items=items, kind="ranking", ranks=ranks, prompt=prompt))
    return comparisons[:n_train], comparisons[n_train:]


def induced_pairs(comparison: Comparison) -> list[dict]:
    """TRL rows (prompt, chosen, rejected): every strictly ordered pair of a comparison."""
    strict, _ = ranking_pairs(comparison.to_ranks())
    return [{"prompt": comparison.prompt, "chosen": comparison.items[a], "rejected": comparison.items[b]}
            for a, b in sorted(strict)]


class StepClock(TrainerCallback):
    """Stamps the end of every optimizer step with the process CPU time (default: robust to
    other processes on a shared CPU, exact with one thread) or the wall clock."""

    def __init__(self, clock: str = "cpu"):
        self.now = time.process_time if clock == "cpu" else time.perf_counter
        self.stamps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(self.now())


def build_model(opts):
    overrides = {"num_hidden_layers": opts.layers} if opts.layers else {}
    return load_model(opts.model, kind="seq_cls", seed=opts.seed, **overrides)


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
    model = build_model(opts)
    model.config.pad_token_id = tokenizer.pad_token_id
    clock = StepClock(opts.clock)
    with tempfile.TemporaryDirectory() as out:
        args = RewardModelConfig(**common_args(opts, out, opts.batch), model_name_or_path=opts.model,
                                 loss="bradley_terry" if k == 2 else "pairwise_ranking", padding_free=opts.padding_free)
        if args.padding_free:
            check_padding_free(model, tokenizer.pad_token_id)
        collator = ComparisonCollator(tokenizer.pad_token_id, padding_free=args.padding_free)
        trainer = PreferenceRewardTrainer(model=model, args=args, processing_class=tokenizer, data_collator=collator,
                                          train_dataset=Dataset.from_list(examples), loss_type=args.loss,
                                          callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    pairs_per_step = opts.batch * k * (k - 1) // 2
    return timed_pairs_per_second(clock, opts.warmup, pairs_per_step), trainer.model


def run_trl(opts, tokenizer, comparisons, k: int):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rows = [row for comparison in comparisons for row in induced_pairs(comparison)]
    model = build_model(opts)
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
    scores = scatter_scores(flat, batch["item_mask"])
    return pair_metrics(scores, batch["ranks"], batch["item_mask"])["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="smollm2-135m-instruct (default) | tiny-random-llama-wide | tiny-random-llama | a folder")
    parser.add_argument("--layers", type=int, default=4,
                        help="keep the first N transformer layers (4: the demo's reward model; 0: all)")
    parser.add_argument("--data", choices=["demo", "planted"], default="demo")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both trainers (fp32 otherwise)")
    parser.add_argument("--no-padding-free", dest="padding_free", action="store_false",
                        help="ours pads like TRL instead of packing")
    parser.add_argument("--prompts", type=int, default=160, help="training prompts per setup")
    parser.add_argument("--words", type=int, default=24, help="planted data: random words per completion (+ 0..K-1 apples)")
    parser.add_argument("--batch", type=int, default=4, help="prompts per optimizer step")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run, warmup included")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per trainer; the median is kept")
    parser.add_argument("--lr", type=float, default=5e-5)
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
    layers = f" ({opts.layers} layers)" if opts.layers else ""
    print(f"model {opts.model}{layers}, {opts.data} data, {precision}, {opts.threads} threads, {opts.clock} clock, "
          f"{opts.prompts} prompts, {opts.batch} prompts/step, {opts.steps} steps ({opts.warmup} warmup), "
          f"{opts.repeats} repeats, ours {'padding-free' if opts.padding_free else 'padded'}")
    results = {}
    for k in (2, 4):
        if opts.data == "demo":
            comparisons, test = demo(k, opts.prompts, opts.held_out)
        else:
            comparisons = planted(opts.prompts, k, opts.words, seed=opts.seed)
            test = planted(opts.held_out, 4, opts.words, seed=opts.seed + 1000)
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
              f"   (runs: ours {', '.join(f'{s:.2f}' for s in ours)}; TRL {', '.join(f'{s:.2f}' for s in trl)})")
        if k == 4:
            print(f"K = 4 held-out pair accuracy ({len(test)} prompts, last run of each): "
                  f"ours {held_out_accuracy(our_model, tokenizer, test, opts.bf16):.3f}   "
                  f"TRL {held_out_accuracy(trl_model, tokenizer, test, opts.bf16):.3f}")
    print("ratios (ours / TRL): " + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in results.items()))


if __name__ == "__main__":
    main()
