"""Model loading: the embedded model (conversion, atomicity, cache hit), tiny models, errors."""

import os

import pytest
import torch

from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from rlhf import models
from rlhf.models import (
    EMBEDDED_MODEL,
    PUBLISHED_NAME,
    ModelNotFoundError,
    embedded_checkpoint,
    load_model,
    load_tokenizer,
    resolve,
    use_distinct_pad,
)


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
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"  # pad is not EOS
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.pad_token_id == 0
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


def save_padded_with_eos(folder):
    """A causal-LM checkpoint padded with EOS, as the embedded model was converted before."""
    model, tokenizer = load_model("tiny-random-llama"), load_tokenizer("tiny-random-llama")
    tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_distinct_pad_token_is_an_existing_special_token():
    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    tokenizer.pad_token = tokenizer.eos_token
    size = len(tokenizer)
    use_distinct_pad(tokenizer)
    assert (tokenizer.pad_token, tokenizer.pad_token_id, len(tokenizer)) == ("<|endoftext|>", 0, size)
    assert 0 not in tokenizer("a text that says <|im_end|> and more")["input_ids"][:-1]
    # a distinct pad token is kept; with no candidate the pad stays EOS (TRL's choice)
    tokenizer.pad_token = "<repo_name>"
    assert use_distinct_pad(tokenizer).pad_token == "<repo_name>"
    tokenizer.pad_token, tokenizer.unk_token = tokenizer.eos_token, tokenizer.eos_token
    assert use_distinct_pad(tokenizer).pad_token == tokenizer.eos_token


def test_earlier_conversion_is_repadded_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    target = save_padded_with_eos(tmp_path / EMBEDDED_MODEL)
    weights = (target / "model.safetensors").read_bytes()
    monkeypatch.setattr(models, "_convert_gguf", lambda *a: pytest.fail("converted again"))
    assert embedded_checkpoint() == target
    assert AutoConfig.from_pretrained(target).pad_token_id == 0
    assert GenerationConfig.from_pretrained(target).pad_token_id == 0
    assert AutoTokenizer.from_pretrained(target).pad_token == "<|endoftext|>"
    assert (target / "model.safetensors").read_bytes() == weights
    assert [p.name for p in tmp_path.iterdir() if ".repad-" in p.name] == []  # no temporary folder left


def test_loaded_models_pad_with_the_tokenizers_distinct_pad(tmp_path):
    folder = save_padded_with_eos(tmp_path / "policy")
    for kind in ("causal_lm", "seq_cls"):
        model = load_model(folder, kind=kind)
        assert model.config.pad_token_id == model.model.embed_tokens.padding_idx == 0
    assert load_model(folder).generation_config.pad_token_id == 0
    assert load_tokenizer(folder).pad_token_id == 0
    tiny = load_model("tiny-random-llama")
    assert tiny.config.pad_token_id == tiny.generation_config.pad_token_id == 0 != tiny.config.eos_token_id


def test_a_given_pad_token_id_spares_the_second_tokenizer_load(tmp_path, monkeypatch):
    folder = save_padded_with_eos(tmp_path / "policy")
    calls = []
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: calls.append(a) or load_tokenizer(*a, **k))
    assert load_model(folder).config.pad_token_id == 0
    assert len(calls) == 1  # the config pads with EOS: the tokenizer says which token pads
    assert load_model(folder, pad_token_id=0).config.pad_token_id == 0
    assert len(calls) == 1  # given by the caller: not loaded again
    tiny = load_model("tiny-random-llama", pad_token_id=0)  # tiny models take it too
    assert tiny.config.pad_token_id == tiny.generation_config.pad_token_id == 0


def test_published_name_resolves_to_the_embedded_copy():
    assert resolve(PUBLISHED_NAME) == resolve(EMBEDDED_MODEL) == str(embedded_checkpoint())
    assert resolve("some-org/other-model") == "some-org/other-model"
