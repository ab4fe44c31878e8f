"""Sampling from causal LMs, and the padding it needs: one home for both.

* ``pad_sequences`` pads token-id lists. Prompts are LEFT-padded, so every row's last
  prompt token sits in the same column and ``generate`` continues all rows from there;
  responses are RIGHT-padded (per-token tensors with ``right_pad``); a prompt + response
  batch is the two side by side (``pad_prompts_and_responses``). Position ids count from each row's first real token
  (``position_ids_from_mask``), so padding never shifts them.
* ``sample_responses``: one response per prompt in one seeded ``generate`` call, drawn from
  softmax(logits / temperature) with no top-k/top-p (by inversion, ``InverseCDFSampling``)
  and cut after the first stop token: PPO's rollouts and evaluation
  (``generate_completions``) sample this way.
* ``sample_completions``: K completions per prompt as text, for comparison data.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from rlhf.models import load_model, load_tokenizer


def derive_seed(*parts) -> int:
    """A reproducible 63-bit seed from any tuple of ints/strings (e.g. (seed, "sample", step, chunk))."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


def prompt_messages(prompt: str | list[dict]) -> list[dict]:
    """A prompt as chat messages: text is one user turn; a conversation (TRL's
    conversational format, a list of ``{"role", "content"}``) is kept as it is."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def prompt_text(prompt: str | list[dict]) -> str:
    """A prompt for display (sample tables, reports): text as it is; for a conversation,
    the content of its last message, the turn the policy answers."""
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def chat_prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of a prompt (text or a conversation, see `prompt_messages`) wrapped in the
    chat template, ready for the assistant's turn."""
    return tokenizer.apply_chat_template(prompt_messages(prompt), add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]


# ---------------------------------------------------------------------------
# Padding
# ---------------------------------------------------------------------------


def pad_sequences(sequences: list[list[int]], pad_token_id: int, padding_side: str = "right",
                  pad_to_multiple_of: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (rows, longest) int64: token-id lists padded to
    one length (rounded up to ``pad_to_multiple_of``) on ``padding_side`` ("left" for prompts
    to generate from, "right" for scoring and responses)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side: expected 'left' or 'right', got {padding_side!r}")
    length = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, tokens in enumerate(sequences):
        span = slice(0, len(tokens)) if padding_side == "right" else slice(length - len(tokens), length)
        input_ids[row, span] = torch.tensor(tokens, dtype=torch.long)
        attention_mask[row, span] = 1
    return input_ids, attention_mask


def right_pad(rows: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    """1-D tensors of different lengths stacked into (rows, longest), ``value`` after each row's end."""
    return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)


def pad_prompts_and_responses(prompts: list[list[int]], responses: list[list[int]], pad_token_id: int):
    """Left-padded prompts and right-padded responses side by side in one tensor.

    Returns ``input_ids``, ``attention_mask`` (rows, P + R), ``response_mask`` (rows, R) and
    ``P``, the padded prompt width: response token j of a row sits at column P + j and is
    predicted by the logits at column P + j - 1.
    """
    prompt_ids, prompt_mask = pad_sequences(prompts, pad_token_id, padding_side="left")
    response_ids, response_mask = pad_sequences(responses, pad_token_id, padding_side="right")
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    return input_ids, attention_mask, response_mask, prompt_ids.shape[1]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (left padding does not shift them)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real (non-zero) position of each row, shape ``mask.shape[:-1]``.

    Works for right-padded rows (the usual case) and also for left-padded ones.
    Raises if a row has no real token, since whatever is read there would be padding.
    """
    valid = mask.bool()
    if not valid.any(dim=-1).all():
        raise ValueError("every row needs at least one real generated token (mask row is all zero)")
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(valid)
    return torch.where(valid, positions, torch.full_like(positions, -1)).amax(dim=-1)


def stop_token_id(tokenizer, stop_token: str = "eos") -> int:
    """Token id that ends a response: the tokenizer's EOS for ``"eos"``, otherwise ``stop_token``,
    which must be exactly one token of this tokenizer (ValueError if not)."""
    if stop_token == "eos":
        return tokenizer.eos_token_id
    ids = tokenizer.encode(stop_token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"stop_token: {stop_token!r} is {len(ids)} tokens for the policy tokenizer; it must be "
                         "exactly one")
    return ids[0]


def truncate_at_stop(tokens: list[int], stop_id: int) -> tuple[list[int], bool]:
    """Tokens up to and including the first stop token, and whether it was there."""
    if stop_id in tokens:
        return tokens[:tokens.index(stop_id) + 1], True
    return tokens, False


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


class InverseCDFSampling(LogitsProcessor):
    """Draws each row's next token from softmax(scores / temperature) by inversion (Devroye
    1986, Non-Uniform Random Variate Generation, ch. III.2): one uniform u per row from
    torch's global RNG; the token is the first whose cumulative probability exceeds u times
    the total. Returns scores that are 0 at the drawn token and -inf elsewhere, so that
    ``generate`` run greedily (``do_sample=False``) emits exactly that token.

    Written by hand because transformers' sampling step is ``torch.multinomial``, which
    draws one exponential per vocabulary entry: 23 ms per step (with its softmax) for 16
    rows x 49,152 tokens on this project's CPU, about half of a small model's rollout;
    this costs 1.1 ms. The cumulative sum is fp32, so each token's probability is rounded
    to a multiple of the float spacing at the running sum (relative 6e-8 of the total): over
    SmolLM2's next-token distributions at T = 0.7 that is a total-variation distance of
    1.6e-5 on average from the exact distribution (docs/ppo.md, "Sampling")."""

    def __init__(self, temperature: float, keep_scores: bool = False):
        self.temperature = temperature
        self.drawn_from: list[torch.Tensor] | None = [] if keep_scores else None  # each step's scores / T

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.drawn_from is not None:
            self.drawn_from.append(scores / self.temperature)
        # the cumulative sum of exp(x - max), unnormalised (u is scaled by the total instead), in one
        # buffer: a step allocates one vocabulary-wide tensor (softmax, then cumsum, took 4x as long)
        cdf = (scores / self.temperature).sub_(scores.amax(dim=-1, keepdim=True) / self.temperature)
        cdf = cdf.exp_().cumsum_(dim=-1)
        total = cdf[:, -1:]
        # u * total can round up to total; the float just below it still lands on the last token of positive probability
        targets = torch.minimum(torch.rand_like(total) * total, torch.nextafter(total, torch.zeros_like(total)))
        tokens = torch.searchsorted(cdf, targets, right=True)
        return cdf.fill_(float("-inf")).scatter_(1, tokens, 0.0)


@dataclass
class SampledResponses:
    responses: list[list[int]]  # generated token ids per prompt, up to and including the first stop token
    has_stop: list[bool]  # whether each response ended with the stop token (False: cut at max_new_tokens)
    step_scores: tuple[torch.Tensor, ...] | None = None  # the logits / T each token was drawn from (the sampler's), one (rows, vocab) per step; only with keep_scores


@torch.no_grad()
def sample_responses(model, prompt_ids: list[list[int]], *, pad_token_id: int, stop_id: int, max_new_tokens: int,
                     temperature: float, seed: int, keep_scores: bool = False, group_size: int = 1) -> SampledResponses:
    """One sampled response per prompt, in one ``generate`` call on left-padded prompts.

    Tokens are drawn from softmax(logits / temperature) with no top-k/top-p (by
    ``InverseCDFSampling``), so the sampling distribution is the one whose log-probabilities
    PPO's ratio and KL use; generation stops at ``stop_id`` and each response is cut after its first stop token.
    torch's global RNG is seeded with ``seed`` just before the call. The model runs in eval
    mode and is given back in the mode it was in. Mixed precision is the caller's (wrap the
    call in an autocast context).

    ``group_size`` G > 1: the prompts come in consecutive groups of G equal ones (GRPO's G
    answers per prompt), and each distinct prompt is run once: its KV cache (all but the last
    token) is repeated G times and handed to ``generate``, which then starts from the last
    prompt token. The same distribution, a G-th of the prompt forward."""
    device = next(model.parameters()).device
    input_ids, attention_mask = pad_sequences(prompt_ids, pad_token_id, padding_side="left")
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    generation_config = GenerationConfig(  # greedy over InverseCDFSampling's scores: a draw from softmax(logits / T)
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_id, pad_token_id=pad_token_id,
        use_cache=True, return_dict_in_generate=True,
    )
    sampler = InverseCDFSampling(temperature, keep_scores=keep_scores)
    was_training = model.training
    model.eval()
    try:
        prefilled = {}
        if group_size > 1:  # the cache of all but the last prompt token: generate starts from that one
            prefilled["cache"] = grouped_prompt_cache(model, input_ids[:, :-1], attention_mask[:, :-1], group_size)
        torch.manual_seed(seed)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config,
                             logits_processor=LogitsProcessorList([sampler]), **prefilled)
    finally:
        model.train(was_training)
    generated = out.sequences[:, input_ids.shape[1]:]
    cut = [truncate_at_stop(row, stop_id) for row in generated.tolist()]
    # generate may run a step past the last one it returns (its deferred stop check): keep the returned steps' scores
    step_scores = tuple(sampler.drawn_from[:generated.shape[1]]) if keep_scores else None
    return SampledResponses([tokens for tokens, _ in cut], [stopped for _, stopped in cut], step_scores)


def check_prompt_groups(prompt_ids: torch.Tensor, group_size: int) -> None:
    """Raise unless the rows come in consecutive groups of ``group_size`` equal prompts."""
    rows = prompt_ids.shape[0]
    if rows % group_size or not torch.equal(prompt_ids, prompt_ids[::group_size].repeat_interleave(group_size, dim=0)):
        raise ValueError(f"the {rows} rows are not groups of {group_size} equal prompts")


def grouped_prompt_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                         prompt_embeds: torch.Tensor | None = None):
    """The KV cache of left-padded prompt rows that come in consecutive groups of
    ``group_size`` equal ones (the G answers to one prompt), each group's prompt run once
    through the decoder (no LM head), then repeated for every row (transformers'
    ``DynamicCache.batch_repeat_interleave``). ``prompt_embeds``: the distinct prompts' token
    embeddings, (groups, width, hidden), when the caller embeds them itself. Gradients,
    where enabled, flow through the cache into the prompts' activations."""
    check_prompt_groups(prompt_ids, group_size)
    distinct_mask = prompt_mask[::group_size]
    tokens = {"inputs_embeds": prompt_embeds} if prompt_embeds is not None else {"input_ids": prompt_ids[::group_size]}
    cache = model.get_decoder()(**tokens, attention_mask=distinct_mask, position_ids=position_ids_from_mask(distinct_mask),
                                use_cache=True).cache
    cache.batch_repeat_interleave(group_size)
    return cache


def decode_responses(tokenizer, responses: list[list[int]]) -> list[str]:
    """Response token ids as text: special tokens (the stop token) dropped, outer whitespace stripped."""
    return [text.strip() for text in tokenizer.batch_decode(responses, skip_special_tokens=True)]


@torch.no_grad()
def generate_completions(policy: str | Path | nn.Module, prompts: list[str | list[dict]], tokenizer=None, *,
                         max_new_tokens: int = 64, temperature: float = 0.7, stop_token: str = "eos",
                         seed: int = 0, batch_size: int = 8) -> list[str]:
    """One completion per prompt from a policy (a saved folder, any model name, or a model
    object) for evaluation, as text.

    Prompts (text or conversations) go through the chat template and are sampled ``batch_size`` at a time with
    ``sample_responses`` (the PPO rollouts' sampling), batch ``start`` seeded with
    ``derive_seed(seed, "eval", start)``; responses end at ``stop_token`` (see
    ``stop_token_id``). The policy is left in eval mode."""
    if isinstance(policy, (str, Path)):
        tokenizer = tokenizer or load_tokenizer(str(policy), padding_side="left")
        policy = load_model(str(policy))
    if tokenizer is None:
        raise ValueError("tokenizer: required when policy is a model object")
    policy.eval()
    stop_id = stop_token_id(tokenizer, stop_token)
    texts = []
    for start in range(0, len(prompts), batch_size):
        ids = [chat_prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        sampled = sample_responses(policy, ids, pad_token_id=tokenizer.pad_token_id, stop_id=stop_id,
                                   max_new_tokens=max_new_tokens, temperature=temperature,
                                   seed=derive_seed(seed, "eval", start))
        texts += decode_responses(tokenizer, sampled.responses)
    return texts


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list, k: int = 4, max_new_tokens: int = 64,
                       temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 32,
                       bf16: bool = False, progress: bool = True) -> list[list[str]]:
    """K sampled completions for each prompt, as text without special tokens.

    Rows are the prompts repeated K times, generated `batch_size` rows at a time with left
    padding; one seed for the whole call (the global RNG state is restored afterwards).
    `bf16` runs the forward passes under bf16 autocast: worth it only on CPUs with AMX (or
    on GPUs); on an AVX2-only CPU bf16 matmuls are several times slower than fp32
    (measured: benchmarks/matmul_peak.py), so it is off by default."""
    rows = [prompt for prompt in prompts for _ in range(k)]
    encoded = [chat_prompt_ids(tokenizer, prompt) for prompt in rows]
    texts: list[str] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    batches = range(0, len(rows), batch_size)
    if progress:
        batches = tqdm(batches, desc="sampling", unit="batch")
    try:
        for start in batches:
            input_ids, attention_mask = pad_sequences(encoded[start:start + batch_size], tokenizer.pad_token_id,
                                                      padding_side="left")
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with autocast:
                output = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, do_sample=True, temperature=temperature,
                    top_p=top_p, top_k=0, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = output[:, input_ids.shape[1]:]
            texts += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        torch.random.set_rng_state(generator_state)
    return [[text.strip() for text in texts[i * k:(i + 1) * k]] for i in range(len(prompts))]


def builtin_prompts() -> list[str]:
    """The project's own instruction set (rlhf/data/prompts.txt, written for this project)."""
    text = files("rlhf").joinpath("data/prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
