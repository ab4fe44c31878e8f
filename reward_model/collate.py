"""From comparisons to token batches, InstructGPT-style.

One training example is one comparison: its K items are tokenised as K sequences
(prompt + item) and collated into one padded batch, so a K = 4 ranking costs 4 forward
sequences, never 12 expanded pairs. The collator also returns the judgement as tensors
(`ranks`, `mask`, `label`, `margin`, `weight`) in a (batch, K_max) layout.

Formatting follows TRL: conversational data (lists of messages) goes through the chat
template; plain text is prompt + completion with EOS appended when missing. A text prompt
with conversational items, or the reverse, is wrapped as a user/assistant turn.

With ``padding_free=True`` the collator packs the sequences into rows no longer than the
longest one instead of padding each to that length (see `pack_sequences`): fewer tokens
go through the model and the scores are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlhf.generation import pad_sequences
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
            "index": index,  # position in ``comparisons``: which comparison a score belongs to
        })
    return examples, left_out


def _best_index(comparison: Comparison) -> int:
    """The single best item, for the best-of-K loss (-1 when the top is tied)."""
    ranks = comparison.to_ranks()
    best = [i for i, r in enumerate(ranks) if r == 0]
    return best[0] if len(best) == 1 else -1


def pack_sequences(sequences: list[list[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Padding-free layout: sequences placed first-fit-decreasing into rows as long as the
    longest sequence, so short ones share a row instead of each being padded.

    Returns ``input_ids`` and ``position_ids`` (rows, length), the positions restarting at 0
    for every sequence (transformers reads that as separate sequences and masks attention
    between them; the unused tail of a row is one more such segment), and
    ``score_positions`` (n, 2): row and column of each sequence's last token, in input order.
    (First-fit-decreasing is a few lines and no library offers it for token lists.)"""
    capacity = max(len(ids) for ids in sequences)
    rows: list[list[int]] = []
    used: list[int] = []
    for index in sorted(range(len(sequences)), key=lambda i: -len(sequences[i])):
        length = len(sequences[index])
        row = next((r for r, filled in enumerate(used) if filled + length <= capacity), None)
        if row is None:
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append(index)
        used[row] += length
    input_ids = torch.full((len(rows), capacity), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), capacity), dtype=torch.long)
    score_positions = torch.zeros((len(sequences), 2), dtype=torch.long)
    for row, members in enumerate(rows):
        start = 0
        for index in members:
            length = len(sequences[index])
            input_ids[row, start:start + length] = torch.tensor(sequences[index])
            position_ids[row, start:start + length] = torch.arange(length)
            score_positions[index] = torch.tensor([row, start + length - 1])
            start += length
        position_ids[row, start:] = torch.arange(capacity - start)
    return {"input_ids": input_ids, "position_ids": position_ids, "score_positions": score_positions}


@dataclass
class ComparisonCollator:
    """Pads (or, with ``padding_free``, packs) all items of all comparisons in a batch into
    one tensor of token rows."""

    pad_token_id: int
    padding_side: Literal["right", "left"] = "right"
    pad_to_multiple_of: int | None = None
    padding_free: bool = False

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sequences = [ids for example in examples for ids in example["input_ids"]]
        if self.padding_free:
            tokens = pack_sequences(sequences, self.pad_token_id)
        else:
            input_ids, attention_mask = pad_sequences(sequences, self.pad_token_id, self.padding_side,
                                                      self.pad_to_multiple_of)
            tokens = {"input_ids": input_ids, "attention_mask": attention_mask}
        k_max = max(len(example["input_ids"]) for example in examples)
        item_mask = torch.zeros((len(examples), k_max), dtype=torch.bool)
        ranks = torch.full((len(examples), k_max), -1, dtype=torch.long)
        for row, example in enumerate(examples):
            k = len(example["input_ids"])
            item_mask[row, :k] = True
            ranks[row, :k] = torch.tensor(example["ranks"])
        return {
            **tokens,
            "num_tokens": torch.tensor(sum(len(ids) for ids in sequences)),
            "item_mask": item_mask,
            "ranks": ranks,
            "is_pair": torch.tensor([example["is_pair"] for example in examples]),
            "label": torch.tensor([example["label"] for example in examples], dtype=torch.float32),
            "margin": torch.tensor([example["margin"] for example in examples], dtype=torch.float32),
            "weight": torch.tensor([example["weight"] for example in examples], dtype=torch.float32),
            "choice": torch.tensor([example["choice"] for example in examples], dtype=torch.long),
            **({"index": torch.tensor([example["index"] for example in examples])} if "index" in examples[0] else {}),
        }
