"""Step 1 of the demos and the pipeline: comparisons of the policy's own completions.

K completions per built-in prompt are sampled from the policy (or reused, see
`sample_or_reuse`), scored by the gold rubric and ranked by a simulated B-Pref mistake
teacher (Lee et al. 2021), which is what a reward model sees in place of people. The
prompts are then split into training and held-out prompts, once, for every stage after.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reward_model.train import split_by_prompt
from rlhf.generation import builtin_prompts, sample_completions
from rlhf.labelers import mistake
from rlhf.models import load_model, load_tokenizer
from rlhf.preferences import Comparison, load_comparisons, save_comparisons
from rlhf.rubric import gold_score

SHIPPED_SAMPLES = Path(__file__).resolve().parent / "data" / "demo_samples.jsonl"


@dataclass
class ComparisonsConfig:
    """How the comparisons are made; shared by `rlhf demo`, `rlhf sample-demo` and `rlhf pipeline`."""

    policy_model: str = field(default="smollm2-135m-instruct", metadata={
        "help": "the SFT policy that writes the completions (and that PPO tunes): toolkit name, folder or hub id"})
    num_prompts: int | None = field(default=None, metadata={
        "help": "use the first N built-in prompts (null = all 233)"})
    k: int = field(default=4, metadata={"help": "completions per prompt (K >= 2)"})
    max_new_tokens: int = field(default=96, metadata={"help": "length cap of the sampled completions, in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the completions"})
    sample_batch_size: int = field(default=64, metadata={"help": "rows per generate() call while sampling"})
    eps: float = field(default=0.1, metadata={"help": "the simulated teacher's mistake probability (B-Pref)"})
    heldout_fraction: float = field(default=0.25, metadata={
        "help": "share of prompts held out from reward-model and PPO training, for evaluation"})
    resample: bool = field(default=False, metadata={
        "help": "sample afresh instead of reusing cached or shipped samples of the same settings"})
    seed: int = field(default=0, metadata={"help": "seeds sampling, the teacher, the split and every stage"})

    def __post_init__(self):
        if self.k < 2:
            raise ValueError(f"k: expected at least 2 completions per prompt (a comparison needs two), got {self.k}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError(f"num_prompts: expected >= 1 or null (all prompts), got {self.num_prompts}")
        if self.max_new_tokens < 1 or self.sample_batch_size < 1:
            raise ValueError("max_new_tokens: expected >= 1" if self.max_new_tokens < 1
                             else "sample_batch_size: expected >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        if not 0 <= self.eps <= 1:
            raise ValueError(f"eps: expected a probability in [0, 1], got {self.eps}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction: expected a share in (0, 1), got {self.heldout_fraction}")

    def prompts(self) -> list[str]:
        return builtin_prompts()[: self.num_prompts]


def sample_or_reuse(config: ComparisonsConfig, prompts: list[str], out: Path, console) -> list[list[str]]:
    """K completions for every prompt, cached in ``out/samples.jsonl`` keyed by the settings.

    Sampling the 932 completions of the default settings takes about 20 minutes on a 2-core
    CPU, so they ship in ``pipeline/data/demo_samples.jsonl`` (written by this function)
    and are reused when the settings match; ``resample`` samples afresh."""
    settings = {"model": config.policy_model, "k": config.k, "max_new_tokens": config.max_new_tokens,
                "temperature": config.temperature, "seed": config.seed,
                "prompts": hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]}
    cache = out / "samples.jsonl"
    for source in ([] if config.resample else [cache, SHIPPED_SAMPLES]):
        if not source.exists():
            continue
        lines = source.read_text().splitlines()
        if lines and json.loads(lines[0]) == {"settings": settings}:
            console.print(f"   reusing {len(lines) - 1} cached prompts x {config.k} completions from {source}")
            return [json.loads(line)["completions"] for line in lines[1:]]
    tokenizer = load_tokenizer(config.policy_model)
    model = load_model(config.policy_model).eval()
    completions = sample_completions(model, tokenizer, prompts, k=config.k, max_new_tokens=config.max_new_tokens,
                                     temperature=config.temperature, seed=config.seed,
                                     batch_size=config.sample_batch_size)
    out.mkdir(parents=True, exist_ok=True)
    with cache.open("w") as handle:
        handle.write(json.dumps({"settings": settings}) + "\n")
        for prompt, row in zip(prompts, completions):
            handle.write(json.dumps({"prompt": prompt, "completions": row}) + "\n")
    return completions


def rubric_rankings(completions: list[list[str]], prompts: list[str], eps: float, seed: int):
    """Gold rubric scores (prompts x K) and the mistake teacher's rankings of them, with
    ids ``prompt-<index>``."""
    gold = np.array([[gold_score(text, prompt) for text in row] for prompt, row in zip(prompts, completions)])
    rankings = mistake(eps=eps, seed=seed).label_rankings(gold, items=completions, prompts=prompts)
    for index, comparison in enumerate(rankings):
        comparison.id = f"prompt-{index}"
    return gold, rankings


def split_prompts(comparisons: list[Comparison], fraction: float, seed: int) -> tuple[list, list]:
    """`reward_model.train.split_by_prompt` with numpy's seeded permutation (the order the
    pipeline's numbers were measured with): whole prompts held out."""
    return split_by_prompt(comparisons, fraction, seed,
                           permutation=lambda n: np.random.default_rng(seed).permutation(n).tolist())


def save_prompts(prompts: list, path: Path) -> Path:
    """A prompts file PPO reads (``{"prompt": ...}`` per line)."""
    path.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in prompts))
    return path


def reward_model_paths(out: Path, seed: int) -> dict:
    """The reward-model fields a composing command sets itself: its data and output folder."""
    return {"train_data": str(out / "train.jsonl"), "eval_data": str(out / "heldout.jsonl"),
            "output_dir": str(out / "reward_model"), "seed": seed}


@dataclass
class Comparisons:
    """Step 1's result: the split comparisons, and the gold scores when a teacher labelled them."""

    train: list[Comparison]
    heldout: list[Comparison]
    gold: dict[str, list[float]] | None  # prompt -> gold score of each completion (None for people's labels)
    total: int


def make_comparisons(config: ComparisonsConfig, out: Path, console, labels: str | None = None) -> Comparisons:
    """Rankings of the policy's completions by the simulated teacher (or people's labels
    from a labelling-app export), split by prompt and written to ``out``: comparisons.jsonl,
    train.jsonl, heldout.jsonl and train_prompts.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    if labels is not None:
        comparisons, gold = load_comparisons(labels), None
        console.print(f"   {len(comparisons)} labelled comparisons from {labels}")
    else:
        prompts = config.prompts()
        completions = sample_or_reuse(config, prompts, out, console)
        scores, comparisons = rubric_rankings(completions, prompts, config.eps, config.seed)
        gold = {prompt: row.tolist() for prompt, row in zip(prompts, scores)}
    train, heldout = split_prompts(comparisons, config.heldout_fraction, config.seed)
    save_comparisons(comparisons, out / "comparisons.jsonl")
    save_comparisons(train, out / "train.jsonl")
    save_comparisons(heldout, out / "heldout.jsonl")
    save_prompts([c.prompt for c in train], out / "train_prompts.jsonl")
    return Comparisons(train=train, heldout=heldout, gold=gold, total=len(comparisons))
