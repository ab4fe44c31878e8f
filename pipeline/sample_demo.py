"""`rlhf sample-demo`: what the core does with a policy's samples, printed as tables.

Samples K completions for a few built-in prompts chosen at random, scores each with the
transparent gold rubric (`rlhf.rubric`), ranks them with a simulated B-Pref mistake
teacher (Lee et al. 2021) and prints a table per prompt; the comparisons are written as
core JSONL.

    rlhf sample-demo --num_prompts 4 --k 4
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from pipeline.comparisons import ComparisonsConfig, rubric_rankings
from rlhf.config import parse_config, run_main
from rlhf.generation import builtin_prompts, sample_completions
from rlhf.models import load_model, load_tokenizer
from rlhf.outputs import check_output_file
from rlhf.preferences import save_comparisons
from rlhf.rubric import PROPERTIES, rubric


@dataclass
class SampleDemoConfig(ComparisonsConfig):
    num_prompts: int | None = field(default=4, metadata={"help": "built-in prompts, chosen at random"})
    max_new_tokens: int = field(default=64, metadata={"help": "length cap of the sampled completions, in tokens"})
    out: str = field(default="runs/sample_demo", metadata={
        "help": "output folder (comparisons.jsonl); its own, apart from `rlhf demo`'s runs/demo, which configs read"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the comparisons.jsonl of an earlier run in `out`; without it an earlier one is refused"})


def main(argv: list[str] | None = None) -> int:
    config = parse_config(SampleDemoConfig, argv, prog="rlhf sample-demo")
    output = Path(config.out) / "comparisons.jsonl"
    check_output_file(output, "--out", config.overwrite)
    console = Console()
    started = time.time()
    console.print(f"[bold]1.[/] loading {config.policy_model}")
    tokenizer = load_tokenizer(config.policy_model)
    model = load_model(config.policy_model).eval()

    prompts = builtin_prompts()
    rng = np.random.default_rng(config.seed)
    chosen = rng.choice(len(prompts), size=min(config.num_prompts or len(prompts), len(prompts)), replace=False)
    prompts = [prompts[i] for i in chosen]
    console.print(f"[bold]2.[/] sampling {config.k} completions for {len(prompts)} prompts")
    completions = sample_completions(model, tokenizer, prompts, k=config.k, max_new_tokens=config.max_new_tokens,
                                     temperature=config.temperature, seed=config.seed)

    console.print(f"[bold]3.[/] scoring with the gold rubric; [bold]4.[/] ranking with a mistake teacher "
                  f"(eps={config.eps})")
    gold, comparisons = rubric_rankings(completions, prompts, config.eps, config.seed)
    for prompt, row, comparison in zip(prompts, completions, comparisons):
        table = Table(title=prompt, show_lines=True, title_justify="left")
        for column in ("teacher rank", "completion", *PROPERTIES, "gold"):
            table.add_column(column, overflow="fold")
        scores = [rubric(text, prompt) for text in row]
        ranks = comparison.ranks if comparison is not None else [None] * len(row)
        for rank, text, score in sorted(zip(ranks, row, scores), key=lambda x: (x[0] is None, x[0])):
            shown = text if len(text) <= 160 else text[:157] + "..."
            table.add_row(str(rank), shown, *(f"{getattr(score, name):.2f}" for name in PROPERTIES),
                          f"{score.total:.3f}")
        console.print(table)

    path = save_comparisons([c for c in comparisons if c is not None], output)
    agree = np.mean([
        np.array_equal(np.argsort(np.argsort(-g, kind="stable")), np.argsort(np.argsort(c.ranks, kind="stable")))
        for g, c in zip(gold, comparisons) if c is not None and len(set(g)) == len(g)
    ] or [np.nan])
    console.print(f"\n[bold]summary[/]: {len(prompts)} prompts x {config.k} completions, mean gold "
                  f"{gold.mean():.3f} (std {gold.std():.3f}); teacher rankings equal the gold order on "
                  f"{agree:.0%} of prompts; {time.time() - started:.0f} s")
    console.print(f"comparisons written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
