"""Scoring sequences with a scalar-head LM, and loading a trained reward model.

The reward is read at the last real token, found from the attention mask rather than
from the pad token: transformers' sequence-classification models take the rightmost token
that is not the pad token, which, when pad and EOS are the same token (SmolLM2's
``<|im_end|>``), skips the EOS and scores the token before it. Position ids are computed
from the mask as well, so left- and right-padded batches give the same scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

STATS_FILE = "reward_stats.json"
ENSEMBLE_FILE = "ensemble.json"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the rightmost position with attention_mask == 1 (left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask).argmax(dim=1)


def _hf_model(model):
    """The transformers model under an optional peft wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sequence_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar score per sequence from a `*ForSequenceClassification` model (num_labels=1).

    A bare (or peft) model runs only its backbone. A model wrapped by DistributedDataParallel
    must run through the wrapper's forward, which sets up the gradient all-reduce; its last
    hidden state (after the final norm) then comes from ``output_hidden_states``."""
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    hf = _hf_model(getattr(model, "module", model))
    if hasattr(model, "module"):
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
    else:
        hidden = getattr(hf, hf.base_model_prefix)(**inputs).last_hidden_state
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
    return hf.score(pooled).squeeze(-1).float()


@torch.no_grad()
def score_token_lists(model, sequences: list[list[int]], pad_token_id: int, batch_size: int = 16) -> torch.Tensor:
    """Scores of token-id sequences, `batch_size` at a time."""
    from reward_model.data import pad_sequences

    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = pad_sequences(sequences[start:start + batch_size], pad_token_id)
        scores.append(sequence_scores(model, input_ids.to(device), attention_mask.to(device)))
    return torch.cat(scores)


class NotARewardModelError(ValueError):
    pass


class RewardModel:
    """A trained reward model (or ensemble) that scores prompt/completion pairs.

    Scores are normalised with the statistics saved at training time (zero mean, unit
    std on the reference set) unless ``normalize=False``."""

    def __init__(self, members: list, tokenizer, stats: list[dict], path: Path):
        self.members, self.tokenizer, self.stats, self.path = members, tokenizer, stats, path

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> "RewardModel":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if (path / ENSEMBLE_FILE).exists():
            folders = [path / name for name in json.loads((path / ENSEMBLE_FILE).read_text())["members"]]
        else:
            folders = [path]
        members, stats = [], []
        for folder in folders:
            config_file = folder / "config.json"
            if not config_file.exists():
                raise NotARewardModelError(f"{folder} is not a reward model: no config.json (expected the output "
                                           "folder of `python -m reward_model.train`)")
            config = json.loads(config_file.read_text())
            if not any(a.endswith("ForSequenceClassification") for a in config.get("architectures", [])) \
                    or config.get("num_labels", len(config.get("id2label", {0: 0}))) != 1:
                raise NotARewardModelError(f"{folder} is not a reward model: expected a *ForSequenceClassification "
                                           f"architecture with num_labels=1, got {config.get('architectures')}")
            if not (folder / STATS_FILE).exists():
                raise NotARewardModelError(f"{folder} has no {STATS_FILE}: train it with `reward_model.train`, "
                                           "which saves the normalisation statistics")
            members.append(AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).eval())
            stats.append(json.loads((folder / STATS_FILE).read_text()))
        tokenizer = AutoTokenizer.from_pretrained(folders[0])
        return cls(members, tokenizer, stats, path)

    @torch.no_grad()
    def member_scores(self, prompts: list, completions: list, normalize: bool = True, batch_size: int = 16,
                      bf16: bool = False) -> torch.Tensor:
        """(members, n) scores of each prompt + completion."""
        from reward_model.data import format_item

        sequences = [format_item(self.tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        rows = []
        for member, stats in zip(self.members, self.stats):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                scores = score_token_lists(member, sequences, self.tokenizer.pad_token_id, batch_size)
            if normalize:
                scores = (scores - stats["mean"]) / stats["std"]
            rows.append(scores)
        return torch.stack(rows)

    def score(self, prompts: list, completions: list, normalize: bool = True, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std over ensemble members (std is 0 for a single model)."""
        from rlhf.ensemble import ensemble_statistics

        return ensemble_statistics(self.member_scores(prompts, completions, normalize, **kwargs))
