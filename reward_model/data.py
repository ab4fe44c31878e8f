"""From comparisons to token batches, InstructGPT-style.

One training example is one comparison: its K items are tokenised as K sequences
(prompt + item) and collated into one padded batch, so a K = 4 ranking costs 4 forward
sequences, never 12 expanded pairs. The collator also returns the judgement as tensors
(`ranks`, `mask`, `label`, `margin`, `weight`) in a (batch, K_max) layout.

Formatting follows TRL: conversational data (lists of messages) goes through the chat
template; plain text is prompt + completion with EOS appended when missing. A text prompt
with conversational items, or the reverse, is wrapped as a user/assistant turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlhf.preferences import Comparison


def _as_messages(value: Any, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def format_item(tokenizer, prompt: Any, item: Any) -> list[int]:
    """Token ids of prompt + item (see the module docstring for the rules)."""
    conversational = isinstance(item, list) or isinstance(prompt, list)
    if conversational:
        messages = (_as_messages(prompt, "user") if prompt is not None else []) + _as_messages(item, "assistant")
        return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    text = (prompt or "") + item
    if not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return list(tokenizer(text)["input_ids"])


def judgement_ranks(comparison: Comparison) -> list[int]:
    """Ranks for the loss: 0 best, ties equal, -1 unranked (partial rankings, best-of-K)."""
    return [-1 if r is None else r for r in comparison.to_ranks()]


def tokenize_comparisons(comparisons: list[Comparison], tokenizer, max_length: int | None = None,
                         too_long: Literal["error", "drop"] = "error") -> tuple[list[dict], dict]:
    """Tokenise trainable comparisons. Returns the examples and counts of what was left out
    (not-comparable answers are never trained on; over-long ones only with ``too_long="drop"``)."""
    examples, left_out = [], {"not_comparable": 0, "too_long": 0}
    for index, comparison in enumerate(comparisons):
        if not comparison.trainable:
            left_out["not_comparable"] += 1
            continue
        sequences = [format_item(tokenizer, comparison.prompt, item) for item in comparison.items]
        longest = max(len(s) for s in sequences)
        if max_length is not None and longest > max_length:
            if too_long == "error":
                raise ValueError(f"comparison {comparison.id or index} has a sequence of {longest} tokens, over "
                                 f"max_length={max_length}; raise max_length or set too_long: drop")
            left_out["too_long"] += 1
            continue
        examples.append({
            "input_ids": sequences,
            "ranks": judgement_ranks(comparison),
            "is_pair": comparison.kind == "pair",
            "label": comparison.label if comparison.kind == "pair" else float("nan"),
            "margin": comparison.margin if comparison.margin is not None else 0.0,
            "weight": comparison.weight,
            "choice": _best_index(comparison),
        })
    return examples, left_out


def _best_index(comparison: Comparison) -> int:
    """The single best item, for the best-of-K loss (-1 when the top is tied)."""
    ranks = comparison.to_ranks()
    best = [i for i, r in enumerate(ranks) if r == 0]
    return best[0] if len(best) == 1 else -1


def pad_sequences(sequences: list[list[int]], pad_token_id: int, padding_side: str = "right",
                  pad_to_multiple_of: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token-id lists padded to one length."""
    length = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        span = slice(0, len(ids)) if padding_side == "right" else slice(length - len(ids), length)
        input_ids[row, span] = torch.tensor(ids)
        attention_mask[row, span] = 1
    return input_ids, attention_mask


@dataclass
class ComparisonCollator:
    """Pads all items of all comparisons in a batch into one (sum K, L) tensor."""

    pad_token_id: int
    padding_side: Literal["right", "left"] = "right"
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [ids for example in examples for ids in example["input_ids"]]
        input_ids, attention_mask = pad_sequences(sequences, self.pad_token_id, self.padding_side,
                                                  self.pad_to_multiple_of)
        k_max = max(len(example["input_ids"]) for example in examples)
        item_mask = torch.zeros((len(examples), k_max), dtype=torch.bool)
        ranks = torch.full((len(examples), k_max), -1, dtype=torch.long)
        for row, example in enumerate(examples):
            k = len(example["input_ids"])
            item_mask[row, :k] = True
            ranks[row, :k] = torch.tensor(example["ranks"])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "item_mask": item_mask,
            "ranks": ranks,
            "is_pair": torch.tensor([example["is_pair"] for example in examples]),
            "label": torch.tensor([example["label"] for example in examples], dtype=torch.float32),
            "margin": torch.tensor([example["margin"] for example in examples], dtype=torch.float32),
            "weight": torch.tensor([example["weight"] for example in examples], dtype=torch.float32),
            "choice": torch.tensor([example["choice"] for example in examples], dtype=torch.long),
        }
