"""Model loading: the embedded model (conversion, atomicity, cache hit), tiny models, errors."""

import os

import pytest
import torch

from rlhf import models
from rlhf.models import EMBEDDED_MODEL, ModelNotFoundError, embedded_checkpoint, load_model, load_tokenizer


@pytest.mark.slow
def test_embedded_conversion_then_cache_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    path = embedded_checkpoint()
    assert path == tmp_path / EMBEDDED_MODEL
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(path))
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []

    # Second use: no conversion, the checkpoint loads as a plain HF model.
    monkeypatch.setattr(models, "_convert_gguf", lambda *a: pytest.fail("converted twice"))
    model = load_model(EMBEDDED_MODEL)
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == tokenizer.eos_token
    # The de-quantised model answers a factual question (greedy decoding is deterministic).
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, inputs["input_ids"].shape[1]:])

    reward_model = load_model(EMBEDDED_MODEL, kind="seq_cls", seed=3)
    assert reward_model.config.num_labels == 1 and reward_model.config.pad_token_id == tokenizer.pad_token_id
    again = load_model(EMBEDDED_MODEL, kind="seq_cls", seed=3)
    assert torch.equal(reward_model.score.weight, again.score.weight)  # the new head is seeded


def test_killed_conversion_leaves_no_checkpoint(tmp_path, monkeypatch):
    # A tiny model stands in for the de-quantised one; the kill comes while writing.
    tiny = (load_model("tiny-random-llama"), load_tokenizer("tiny-random-llama"))
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_load_gguf", lambda path: tiny)

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    from transformers import PreTrainedModel

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        embedded_checkpoint()
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_tiny_models_are_seeded_and_small():
    first = load_model("tiny-random-llama", seed=1)
    again = load_model("tiny-random-llama", seed=1)
    other = load_model("tiny-random-llama", seed=2)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first.model.embed_tokens.weight, other.model.embed_tokens.weight)
    assert first.config.hidden_size == 16 and first.config.vocab_size == 49152
    reward = load_model("tiny-random-llama", kind="seq_cls")
    tokenizer = load_tokenizer("tiny-random-llama")
    batch = tokenizer(["hello there", "hi"], return_tensors="pt", padding=True)
    assert reward(**batch).logits.shape == (2, 1)
    assert load_model("tiny-random-llama-wide").config.hidden_size == 64


def test_missing_models_fail_clearly(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found.*local path"):
        load_model(tmp_path / "no-such-model")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE=1"):
        load_tokenizer("some-org/some-model-that-is-not-cached")
    with pytest.raises(ValueError, match="kind must be"):
        load_model("tiny-random-llama", kind="vision")
