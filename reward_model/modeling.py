"""Scoring sequences with a scalar-head LM, and loading a trained reward model.

The reward is read at the last real token, found from the attention mask rather than
from the pad token: transformers' sequence-classification models take the rightmost token
that is not the pad token, which, when pad and EOS are the same token (SmolLM2's
``<|im_end|>``), skips the EOS and scores the token before it. Position ids are computed
from the mask as well, so left- and right-padded batches give the same scores.

Reward models saved by ``reward_model.train`` pad with a token other than EOS
(`rlhf.models.use_distinct_pad`), so transformers' pooling reads the same token as this
module. A reward model from elsewhere (a ``num_labels=1`` classifier without
``reward_stats.json``, e.g. trained with TRL) was trained with transformers' pooling, so it
is scored the same way: trailing tokens equal to its pad token are dropped first (when its
pad token is its EOS, the appended EOS), which for a causal model is exactly what that
pooling reads. Its normalisation statistics, absent, are fitted on data at hand
(`RewardModel.fit_missing_stats`).

Batches come padded (``attention_mask``) or packed without padding (``position_ids`` that
restart at 0 for every sequence, no mask: transformers then builds the block-diagonal
causal mask itself) with ``score_positions`` saying where each sequence ends.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from reward_model.collate import format_item, pack_sequences
from rlhf.ensemble import ensemble_statistics
from rlhf.generation import last_token_index, pad_sequences, position_ids_from_mask
from rlhf.models import use_distinct_pad
from rlhf.outputs import write_text

STATS_FILE = "reward_stats.json"
ENSEMBLE_FILE = "ensemble.json"


def _hf_model(model):
    """The transformers model under an optional peft wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sequence_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                    position_ids: torch.Tensor | None = None,
                    score_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar score per sequence from a `*ForSequenceClassification` model (num_labels=1).

    Padded batch: ``attention_mask`` given, one sequence per row, scored at its last real
    token. Packed batch (see `reward_model.collate.pack_sequences`): no mask; ``position_ids``
    restart for every sequence and ``score_positions`` (n, 2) holds the (row, column) of
    each sequence's last token, in the original order.

    The model runs through its own (possibly DDP/FSDP/DeepSpeed-wrapped) forward, so sharded
    parameters are gathered and gradients synchronised as the wrapper expects; the score
    head's per-position output is captured with a forward hook and read at our positions
    (the model's own pooling, by pad token, is ignored)."""
    if attention_mask is not None:
        position_ids = position_ids_from_mask(attention_mask)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        score_positions = torch.stack([rows, last_token_index(attention_mask)], dim=1)
    elif position_ids is None or score_positions is None:
        raise ValueError("sequence_scores: give attention_mask (padded batch) or position_ids and score_positions "
                         "(packed batch)")
    head = _hf_model(getattr(model, "module", model)).score
    captured = []
    handle = head.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    finally:
        handle.remove()
    per_position = captured[-1].squeeze(-1)  # (rows, length)
    return per_position[score_positions[:, 0], score_positions[:, 1]].float()


def check_padding_free(model, pad_token_id: int, atol: float = 1e-4) -> None:
    """Raise unless packed scoring equals one-sequence-at-a-time scoring for this model.

    Packing relies on the model honouring restarting ``position_ids`` (transformers'
    packed-sequence masks); an architecture that does not would let sequences attend to
    each other and train on wrong scores without any error, so this is checked once."""
    vocab = model.config.vocab_size
    sequences = [[(7 * i + 3) % vocab for i in range(5)], [(11 * i + 1) % vocab for i in range(3)],
                 [(13 * i + 5) % vocab for i in range(2)]]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        alone = torch.cat([sequence_scores(model, torch.tensor([s], device=device),
                                           torch.ones(1, len(s), dtype=torch.long, device=device)) for s in sequences])
        packed = pack_sequences(sequences, pad_token_id)
        together = sequence_scores(model, packed["input_ids"].to(device), position_ids=packed["position_ids"].to(device),
                                   score_positions=packed["score_positions"].to(device))
    model.train(was_training)
    gap = (alone - together).abs().max().item()
    if gap > atol:
        raise ValueError(f"padding_free: this model ({type(model).__name__}) scores packed sequences differently "
                         f"from single ones (max difference {gap:.2e}); its attention does not support packing, "
                         "set padding_free: false")


@torch.no_grad()
def score_token_lists(model, sequences: list[list[int]], pad_token_id: int, batch_size: int = 16) -> torch.Tensor:
    """Scores of token-id sequences, `batch_size` at a time."""
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = pad_sequences(sequences[start:start + batch_size], pad_token_id)
        scores.append(sequence_scores(model, input_ids.to(device), attention_mask.to(device)))
    return torch.cat(scores)


class NotARewardModelError(ValueError):
    pass


def drop_trailing(tokens: list[int], token_id: int | None) -> list[int]:
    """``tokens`` without trailing ``token_id``s (at least one token kept)."""
    end = len(tokens)
    while end > 1 and tokens[end - 1] == token_id:
        end -= 1
    return tokens[:end]


class RewardModel:
    """A trained reward model (or ensemble) that scores prompt/completion pairs.

    Scores are normalised with the statistics saved at training time (zero mean, unit
    std on the reference set) unless ``normalize=False``. A member without saved statistics
    (a reward model from elsewhere) has ``None`` in ``stats`` until `fit_missing_stats`."""

    def __init__(self, members: list, tokenizer, stats: list[dict | None], path: Path):
        self.members, self.tokenizer, self.stats, self.path = members, tokenizer, stats, path
        # Members from elsewhere (no saved statistics) are read where their own pooling reads.
        self.foreign = [s is None for s in stats]

    # ---- the folder format: written by reward_model.train, read by everyone through these ----

    @staticmethod
    def member_dirs(path: str | Path) -> list[Path]:
        """The member folders of a saved reward model: the ones ``ensemble.json`` lists, or
        the folder itself for a single model. Nothing else parses ``ensemble.json``."""
        path = Path(path)
        if (path / ENSEMBLE_FILE).exists():
            return [path / name for name in json.loads((path / ENSEMBLE_FILE).read_text())["members"]]
        return [path]

    @staticmethod
    def is_model_dir(path: str | Path) -> bool:
        """Whether ``path`` looks like a saved reward model (a checkpoint or an ensemble index)."""
        path = Path(path)
        return (path / "config.json").exists() or (path / ENSEMBLE_FILE).exists()

    @staticmethod
    def read_stats(member_dir: str | Path) -> dict:
        """A member's normalisation statistics ``{"mean", "std", "n", ...}``."""
        return json.loads((Path(member_dir) / STATS_FILE).read_text())

    @staticmethod
    def write_stats(member_dir: str | Path, stats: dict) -> None:
        write_text(Path(member_dir) / STATS_FILE, json.dumps(stats, indent=2))

    @staticmethod
    def write_ensemble_index(path: str | Path, member_dirs: list[Path]) -> None:
        """``ensemble.json`` listing the member folders (relative to ``path``)."""
        write_text(Path(path) / ENSEMBLE_FILE, json.dumps({"members": [Path(m).name for m in member_dirs]}, indent=2))

    @staticmethod
    def check_member(folder: str | Path) -> None:
        """Raise `NotARewardModelError` unless ``folder`` holds a ``*ForSequenceClassification``
        checkpoint with one label (read from config.json only: no weights load)."""
        folder = Path(folder)
        config_file = folder / "config.json"
        if not config_file.exists():
            raise NotARewardModelError(f"{folder} is not a reward model folder: no config.json (expected the output "
                                       "folder of `python -m reward_model.train` or a num_labels=1 "
                                       "AutoModelForSequenceClassification folder)")
        try:
            config = AutoConfig.from_pretrained(folder)  # its num_labels: saved configs leave out the default (2)
        except (OSError, ValueError) as err:
            raise NotARewardModelError(f"{folder} is not a reward model folder: its config.json does not load "
                                       f"({str(err)[:200]})") from None
        architectures = config.architectures or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures) or config.num_labels != 1:
            raise NotARewardModelError(f"{folder} is not a reward model folder: expected a *ForSequenceClassification "
                                       f"architecture with num_labels=1, got {architectures} with "
                                       f"{config.num_labels} label(s)")

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> "RewardModel":
        path = Path(path)
        folders = cls.member_dirs(path)
        members, stats = [], []
        for folder in folders:
            cls.check_member(folder)
            members.append(AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).eval())
            stats.append(cls.read_stats(folder) if (folder / STATS_FILE).exists() else None)
        tokenizer = use_distinct_pad(AutoTokenizer.from_pretrained(folders[0]))
        return cls(members, tokenizer, stats, path)

    def missing_stats(self) -> list[int]:
        """Indices of the members without normalisation statistics (reward models from elsewhere)."""
        return [i for i, s in enumerate(self.stats) if s is None]

    def fit_missing_stats(self, prompts: list, completions: list, reference: str, batch_size: int = 16) -> None:
        """Give every member without statistics the mean and std of its raw scores on these
        prompt/completion pairs (``reference`` says what they are, for the record)."""
        missing = self.missing_stats()
        if not missing:
            return
        raw = self.member_scores(prompts, completions, normalize=False, batch_size=batch_size)
        for i in missing:
            self.stats[i] = {"mean": raw[i].mean().item(), "std": max(raw[i].std().item(), 1e-6),
                             "n": raw.shape[1], "reference": reference}

    @torch.no_grad()
    def member_scores(self, prompts: list, completions: list, normalize: bool = True, batch_size: int = 16,
                      bf16: bool = False) -> torch.Tensor:
        """(members, n) scores of each prompt + completion."""
        sequences = [format_item(self.tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        rows = []
        for index, member in enumerate(self.members):
            member_sequences = sequences
            if self.foreign[index]:
                member_sequences = [drop_trailing(s, member.config.pad_token_id) for s in sequences]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                rows.append(score_token_lists(member, member_sequences, self.tokenizer.pad_token_id, batch_size))
        raw = torch.stack(rows)
        return self.normalize(raw) if normalize else raw

    def normalize(self, member_scores: torch.Tensor) -> torch.Tensor:
        """(members, n) raw scores -> each member's scores with its saved mean and std."""
        if self.missing_stats():
            raise ValueError(f"{self.path}: members {self.missing_stats()} have no {STATS_FILE}; fit them first "
                             "(RewardModel.fit_missing_stats)")
        means = torch.tensor([s["mean"] for s in self.stats], dtype=member_scores.dtype, device=member_scores.device)
        stds = torch.tensor([s["std"] for s in self.stats], dtype=member_scores.dtype, device=member_scores.device)
        return (member_scores - means[:, None]) / stds[:, None]

    def score(self, prompts: list, completions: list, normalize: bool = True, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std over ensemble members (std is 0 for a single model)."""
        return ensemble_statistics(self.member_scores(prompts, completions, normalize, **kwargs))
