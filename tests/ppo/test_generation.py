"""Sampling and padding (rlhf.generation) as PPO uses them: padding against plain loops and
the tokenizer's own padding, the last real token, and seeded sampling against one hand-made
``generate`` call per batch."""

import json

import pytest
import torch
from scipy.stats import chisquare
from transformers import GenerationConfig, LogitsProcessorList

from ppo.config import validate_inputs
from ppo_test_utils import tiny_config
from reward_model.modeling import RewardModel
from rlhf.generation import (
    InverseCDFSampling,
    chat_prompt_ids,
    derive_seed,
    generate_completions,
    last_token_index,
    pad_prompts_and_responses,
    pad_sequences,
    position_ids_from_mask,
    right_pad,
    sample_responses,
    stop_token_id,
    truncate_at_stop,
)
from rlhf.models import load_model, load_tokenizer

PROMPTS = ["Say hi.", "Name a planet, please, and say why.", "Count to three.", "Greet me.", "Pick a fruit."]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random-llama", padding_side="left")


def test_pad_sequences_equals_the_tokenizers_padding(tokenizer):
    ids = [chat_prompt_ids(tokenizer, p) for p in PROMPTS]
    assert len({len(i) for i in ids}) > 1  # really different lengths
    for side in ("left", "right"):
        for multiple in (None, 8):
            input_ids, attention_mask = pad_sequences(ids, tokenizer.pad_token_id, padding_side=side,
                                                      pad_to_multiple_of=multiple)
            tokenizer.padding_side = side
            expected = tokenizer.pad({"input_ids": ids}, pad_to_multiple_of=multiple, return_tensors="pt")
            assert torch.equal(input_ids, expected["input_ids"]), (side, multiple)
            assert torch.equal(attention_mask, expected["attention_mask"]), (side, multiple)
    tokenizer.padding_side = "left"
    assert pad_sequences([[1, 2, 3]], 0, pad_to_multiple_of=8)[0].shape == (1, 8)
    with pytest.raises(ValueError, match="padding_side"):
        pad_sequences([[1]], 0, padding_side="middle")


def test_pad_prompts_and_responses_vs_loop():
    pad = 9
    prompts, responses = [[1, 2, 3], [4]], [[5], [6, 7, 8]]
    input_ids, attention_mask, response_mask, width = pad_prompts_and_responses(prompts, responses, pad)
    assert width == 3
    assert input_ids.tolist() == [[1, 2, 3, 5, 9, 9], [9, 9, 4, 6, 7, 8]]
    assert attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert response_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    # response token j of row i sits at column width + j
    for i, response in enumerate(responses):
        assert [input_ids[i, width + j].item() for j in range(len(response))] == response
    assert right_pad([torch.tensor([1.0]), torch.tensor([2.0, 3.0])], -1.0).tolist() == [[1.0, -1.0], [2.0, 3.0]]


def test_position_ids_and_last_token_index_left_and_right_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2], [0, 1, 2, 3, 4]]
    expected = [max(t for t in range(5) if row[t]) for row in mask.tolist()]
    assert last_token_index(mask).tolist() == expected == [4, 2, 4]
    with pytest.raises(ValueError, match="at least one"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def test_stop_token_id(tokenizer):
    assert stop_token_id(tokenizer, "eos") == tokenizer.eos_token_id
    newline = tokenizer.encode("\n", add_special_tokens=False)
    assert len(newline) == 1 and stop_token_id(tokenizer, "\n") == newline[0]
    with pytest.raises(ValueError, match="stop_token: 'hello there' is 2 tokens"):
        stop_token_id(tokenizer, "hello there")


def test_truncate_at_stop():
    assert truncate_at_stop([3, 7, 2, 7, 5], 7) == ([3, 7], True)
    assert truncate_at_stop([3, 4], 7) == ([3, 4], False)


def test_derive_seed_is_pinned():
    # every seeded number of the project depends on these values: they must never change
    assert derive_seed(0, "sample", 0, 0) == 1920377213141214
    assert derive_seed(0, "eval", 0) == 567524129758141858


def test_generate_completions_is_one_seeded_generate_call_per_batch(tokenizer):
    """Reference: pad by hand, seed, call generate with the T-scaled inverse-CDF sampler, cut at EOS, decode."""
    torch.set_num_threads(1)
    model = load_model("tiny-random-llama", seed=0, initializer_range=0.3)
    texts = generate_completions(model, PROMPTS, tokenizer, max_new_tokens=6, temperature=0.8, seed=4, batch_size=2)
    expected = []
    for start in range(0, len(PROMPTS), 2):
        ids = [chat_prompt_ids(tokenizer, p) for p in PROMPTS[start:start + 2]]
        width = max(len(i) for i in ids)
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(i)) + i for i in ids])
        attention_mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
        torch.manual_seed(derive_seed(4, "eval", start))
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=GenerationConfig(
            do_sample=False, max_new_tokens=6, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
            logits_processor=LogitsProcessorList([InverseCDFSampling(0.8)]))
        for row in out[:, width:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[:row.index(tokenizer.eos_token_id) + 1]
            expected.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    assert texts == expected
    assert len(set(texts)) == len(texts)  # sampled, not one repeated string


def test_inverse_cdf_sampling_picks_the_token_whose_interval_holds_u(monkeypatch):
    """A plain loop over the cumulative probabilities, against the sampler, for fixed u."""
    scores = torch.log(torch.tensor([[0.1, 0.0, 0.2, 0.7, 0.0]]))  # zero-probability tokens inside and at the end
    probs = [0.1, 0.0, 0.2, 0.7, 0.0]
    # u = 1.0 stands for u x total rounding up to the total: the last token of positive probability
    for u in [0.0, 0.05, 0.0999, 0.1001, 0.25, 0.3001, 0.5, 0.9999, 1.0 - 2 ** -24, 1.0]:
        monkeypatch.setattr(torch, "rand_like", lambda total, u=u: torch.full_like(total, u))
        out = InverseCDFSampling(temperature=1.0)(None, scores)
        cumulative, expected = 0.0, max(token for token, p in enumerate(probs) if p > 0)
        for token, p in enumerate(probs):
            cumulative += p
            if u < cumulative:
                expected = token
                break
        assert out[0].argmax().item() == expected, u
        assert out[0, expected] == 0 and torch.isinf(out[0]).sum() == 4


def test_inverse_cdf_sampling_draws_from_softmax_of_scores_over_temperature():
    """Seeded draws against softmax(logits / T): chi-square on 4,000 draws per row, and each
    token's frequency within 0.025 of its probability (T = 1 fails both)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 6) * 2
    temperature = 0.7
    probs = torch.softmax(logits / temperature, dim=-1)
    sampler = InverseCDFSampling(temperature)
    rows = logits.repeat_interleave(4000, dim=0)
    draws = sampler(None, rows).argmax(dim=-1).view(3, 4000)
    for row in range(3):
        counts = torch.bincount(draws[row], minlength=6).double()
        assert chisquare(counts.numpy(), (probs[row].double() / probs[row].double().sum() * 4000).numpy()).pvalue > 0.01
        torch.testing.assert_close(counts / 4000, probs[row].double(), atol=0.025, rtol=0)


def test_sample_responses_keeps_the_models_mode_and_the_temperature(tokenizer):
    torch.set_num_threads(1)
    model = load_model("tiny-random-llama", seed=0, initializer_range=0.3).train()
    ids = [chat_prompt_ids(tokenizer, p) for p in PROMPTS[:2]]
    sampled = sample_responses(model, ids, pad_token_id=tokenizer.pad_token_id, stop_id=tokenizer.eos_token_id,
                               max_new_tokens=4, temperature=0.5, seed=1, keep_scores=True)
    assert model.training  # given back in train mode
    assert [len(r) for r in sampled.responses] == [4, 4] and sampled.has_stop == [False, False]
    # the scores the sampler drew from are the logits / T of the model on the same prefix
    input_ids, attention_mask = pad_sequences([ids[0] + sampled.responses[0][:2]], tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[0, -1]
    torch.testing.assert_close(sampled.step_scores[2][0], logits / 0.5, atol=1e-4, rtol=0)


def test_reward_model_members_are_read_through_reward_model_modeling(tmp_path, prompts_file):
    folder = tmp_path / "rm"
    for name in ("m0", "m1"):
        (folder / name).mkdir(parents=True)
    (folder / "ensemble.json").write_text(json.dumps({"members": ["m0", "m1"]}))
    assert RewardModel.member_dirs(folder) == [folder / "m0", folder / "m1"]
    assert RewardModel.member_dirs(tmp_path / "single") == [tmp_path / "single"]
    (folder / "m0" / "config.json").write_text("{}")  # m1 is not a model folder
    with pytest.raises(ValueError, match="reward_models: entry 0: .* is not a reward model folder"):
        validate_inputs(tiny_config(tmp_path, prompts_file, reward_models=[str(folder)]))
