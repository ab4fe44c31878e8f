"""Sampling K completions per prompt with a chat model (batched, left-padded)."""

from __future__ import annotations

import contextlib

import torch


def chat_prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of a prompt wrapped in the chat template, ready for the assistant's turn."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list, k: int = 4, max_new_tokens: int = 64,
                       temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 32,
                       bf16: bool = False, progress: bool = True) -> list[list[str]]:
    """K sampled completions for each prompt, as text without special tokens.

    Rows are the prompts repeated K times, generated `batch_size` rows at a time with left
    padding. `bf16` runs the forward passes under bf16 autocast: worth it only on CPUs
    with AMX (or on GPUs); on an AVX2-only CPU bf16 matmuls are several times slower than
    fp32 (measured: benchmarks/matmul_peak.py), so it is off by default."""
    rows = [prompt for prompt in prompts for _ in range(k)]
    encoded = [chat_prompt_ids(tokenizer, prompt) for prompt in rows]
    pad_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts: list[str] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    batches = range(0, len(rows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="sampling", unit="batch")
    try:
        for start in batches:
            batch = tokenizer.pad({"input_ids": encoded[start:start + batch_size]}, return_tensors="pt")
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with autocast:
                output = model.generate(
                    **batch, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                    max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            texts += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = pad_side
        torch.random.set_rng_state(generator_state)
    return [[text.strip() for text in texts[i * k:(i + 1) * k]] for i in range(len(prompts))]


def builtin_prompts() -> list[str]:
    """The project's own instruction set (rlhf/data/prompts.txt, written for this project)."""
    from importlib.resources import files

    text = files("rlhf").joinpath("data/prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
