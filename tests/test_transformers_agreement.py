"""Every kind of saved artefact loads with plain transformers and scores/generates as in the toolkit.

The loading side uses only `AutoModelForSequenceClassification` / `AutoModelForCausalLM` and
`AutoTokenizer` with their own defaults: plain text is prompt + completion + EOS (as TRL
formats it), chat data goes through the saved chat template, batches are padded by the
tokenizer and pooled by the model (last token that is not the pad token). Scores must equal
the toolkit's (`RewardModel.member_scores`, raw) to 1e-5; a PPO policy's greedy generations
must be the same tokens with logits within 1e-5.
"""

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from ppo.config import PPOConfigError, validate_inputs
from ppo.trainer import PPOTrainer
from ppo_test_utils import SHORT_PROMPTS, planted_policy, tiny_config
from reward_model.evaluate import main as evaluate_main
from reward_model.modeling import RewardModel
from reward_model.train import RewardModelConfig, train
from rlhf.config import run_main
from rlhf.models import embedded_checkpoint

RANKED = "tests/fixtures/ranked_small.jsonl"

TEXT_ROWS = [{"prompt": f"Item {i}:", "chosen": f" apple {'apple ' * (i % 3)}sun", "rejected": f" rock {i} dog"}
             for i in range(12)]
CHAT_ROWS = [{"chosen": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}],
              "rejected": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["rejected"]}]}
             for r in TEXT_ROWS]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_reward_model(tmp_path, rows, model="tiny-random-llama", **fields):
    data = write_rows(tmp_path / "data.jsonl", rows)
    fields = dict(num_train_epochs=1, per_device_train_batch_size=4, learning_rate=1e-2, use_cpu=True,
                  save_strategy="no", report_to="none", disable_tqdm=True, seed=0) | fields
    config = RewardModelConfig(output_dir=str(tmp_path / "rm"), model_name_or_path=model, train_data=str(data),
                               **fields)
    train(config)
    return tmp_path / "rm"


def plain_texts(tokenizer, rows) -> list[str]:
    """TRL's plain-text formatting: prompt + completion, EOS appended."""
    return [r["prompt"] + r[key] + tokenizer.eos_token for r in rows for key in ("chosen", "rejected")]


def chat_texts(tokenizer, rows) -> list[str]:
    return [tokenizer.apply_chat_template(r[key], tokenize=False) for r in rows for key in ("chosen", "rejected")]


@torch.no_grad()
def transformers_scores(folder, texts: list[str], padding_side: str = "right") -> torch.Tensor:
    """Scores with nothing but transformers: the saved tokenizer pads, the model pools."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = padding_side
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return model(**batch).logits.squeeze(-1)


def toolkit_scores(folder, rows) -> torch.Tensor:
    """(members, n) raw scores in the toolkit, in the order of `plain_texts`/`chat_texts`."""
    model = RewardModel.load(folder)
    if "prompt" in rows[0]:
        prompts = [r["prompt"] for r in rows for _ in range(2)]
    else:
        prompts = [None for _ in rows for _ in range(2)]
    completions = [r[key] for r in rows for key in ("chosen", "rejected")]
    return model.member_scores(prompts, completions, normalize=False)


def assert_saved_pad_is_not_eos(folder):
    config = json.loads((folder / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert config["pad_token_id"] == tokenizer.pad_token_id == 0 != tokenizer.eos_token_id  # <|endoftext|>


@pytest.mark.parametrize("rows,texts", [(TEXT_ROWS, plain_texts), (CHAT_ROWS, chat_texts)], ids=["text", "chat"])
def test_reward_model_scores_agree_with_transformers(tmp_path, rows, texts):
    folder = train_reward_model(tmp_path, rows)
    assert_saved_pad_is_not_eos(folder)
    ours = toolkit_scores(folder, rows)[0]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for side in ("right", "left"):
        theirs = transformers_scores(folder, texts(tokenizer, rows), padding_side=side)
        assert (theirs - ours).abs().max().item() < 1e-5, side
    assert ours.std().item() > 1e-3  # distinct scores: a wrong pooling position would show


def test_lora_merged_reward_model_scores_agree_with_transformers(tmp_path):
    folder = train_reward_model(tmp_path, TEXT_ROWS, use_lora=True, lora_r=4, lora_alpha=8)
    assert not (folder / "adapter_config.json").exists()  # merged: a plain checkpoint
    assert_saved_pad_is_not_eos(folder)
    ours = toolkit_scores(folder, TEXT_ROWS)[0]
    theirs = transformers_scores(folder, plain_texts(AutoTokenizer.from_pretrained(folder), TEXT_ROWS))
    assert (theirs - ours).abs().max().item() < 1e-5


def test_ensemble_member_scores_agree_with_transformers(tmp_path):
    folder = train_reward_model(tmp_path, TEXT_ROWS, ensemble_size=2)
    ours = toolkit_scores(folder, TEXT_ROWS)
    assert (ours[0] - ours[1]).abs().max().item() > 1e-3  # two different members
    for index in range(2):
        member = folder / f"member_{index}"
        assert_saved_pad_is_not_eos(member)
        theirs = transformers_scores(member, plain_texts(AutoTokenizer.from_pretrained(member), TEXT_ROWS))
        assert (theirs - ours[index]).abs().max().item() < 1e-5


def test_ppo_policy_generates_the_same_under_transformers(tmp_path):
    prompts_file = write_rows(tmp_path / "prompts.jsonl", [{"prompt": p} for p in SHORT_PROMPTS])
    policy, reward = planted_policy()
    trainer = PPOTrainer(tiny_config(tmp_path, prompts_file, total_episodes=8), reward_fn=reward, policy=policy)
    trainer.train()
    folder = tmp_path / "run" / "policy"
    assert_saved_pad_is_not_eos(folder)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = trainer.unwrapped.policy.eval()
    messages = [[{"role": "user", "content": p}] for p in SHORT_PROMPTS[:4]]
    batch = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True, padding=True)
    assert batch["attention_mask"].min() == 0  # prompts of different lengths: padding is exercised
    with torch.no_grad():
        their_tokens = theirs.generate(**batch, max_new_tokens=8, do_sample=False)
        our_tokens = ours.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(their_tokens, our_tokens)
        mask = (their_tokens != tokenizer.pad_token_id).long()
        their_logits = theirs(input_ids=their_tokens, attention_mask=mask).logits
        our_logits = ours(input_ids=their_tokens, attention_mask=mask).logits
    real = mask.bool()
    assert (their_logits[real] - our_logits[real]).abs().max().item() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("rows,texts", [(TEXT_ROWS, plain_texts), (CHAT_ROWS, chat_texts)], ids=["text", "chat"])
def test_smollm2_reward_model_scores_agree_with_transformers(tmp_path, rows, texts):
    """The embedded SmolLM2 (its pad token was its EOS: plain text disagreed by up to 3.44)."""
    folder = train_reward_model(tmp_path, rows, model="smollm2-135m-instruct", backbone_layers=2,
                                learning_rate=1e-4)
    assert_saved_pad_is_not_eos(folder)
    ours = toolkit_scores(folder, rows)[0]
    theirs = transformers_scores(folder, texts(AutoTokenizer.from_pretrained(folder), rows))
    gap = (theirs - ours).abs().max().item()
    print(f"max |transformers - toolkit| score difference: {gap:.2e}")
    assert gap < 1e-5


# -- reward models from elsewhere ------------------------------------------------------------

def foreign_reward_model(folder, num_labels=1, seed=0):
    """A classifier saved with plain transformers, as TRL would leave it for SmolLM2: pad token
    = EOS (<|im_end|>) in tokenizer and config, no reward_stats.json."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint())
    tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=num_labels,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_foreign_reward_model_in_eval_rm_scores_as_transformers_pools(tmp_path, capsys):
    folder = foreign_reward_model(tmp_path / "foreign")
    out = tmp_path / "eval"
    assert run_main(evaluate_main, ["--model_name_or_path", str(folder), "--eval_data", RANKED,
                                    "--output_dir", str(out), "--bootstrap", "0", "--disable_tqdm", "true"]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "no reward_stats.json" in err and "raw scores" in err
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    examples = [json.loads(line) for line in open(RANKED)]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [e["prompt"] + c + tokenizer.eos_token for e in examples for c in e["completions"]]
    theirs = transformers_scores(folder, texts)  # pooled at the token before the EOS (= pad)
    ours = torch.tensor([s for row in rows for s in row["scores"]])
    assert (theirs - ours).abs().max().item() < 1e-5

    # --normalize: statistics fitted on the evaluated completions -> mean 0, std 1 over them
    assert run_main(evaluate_main, ["--model_name_or_path", str(folder), "--eval_data", RANKED,
                                    "--output_dir", str(out), "--overwrite",
                                    "--bootstrap", "0", "--disable_tqdm", "true", "--normalize"]) == 0
    assert f"{len(texts)} evaluated completions" in capsys.readouterr().err
    normalised = torch.tensor([s for line in (out / "scores.jsonl").read_text().splitlines()
                               for s in json.loads(line)["scores"]])
    torch.testing.assert_close(normalised, (theirs - theirs.mean()) / theirs.std(), atol=1e-5, rtol=0)


def test_not_a_one_label_classifier_is_a_clear_error(tmp_path, capsys):
    two_labels = foreign_reward_model(tmp_path / "two", num_labels=2)
    assert run_main(evaluate_main, ["--model_name_or_path", str(two_labels), "--eval_data", RANKED,
                                    "--output_dir", str(tmp_path / "e")]) == 2
    assert "num_labels=1" in capsys.readouterr().err
    prompts_file = write_rows(tmp_path / "prompts.jsonl", [{"prompt": p} for p in SHORT_PROMPTS])
    with pytest.raises(PPOConfigError, match="entry 0: .*num_labels=1"):
        validate_inputs(tiny_config(tmp_path, prompts_file, reward_models=[str(two_labels)]))


def test_foreign_reward_model_in_ppo_is_normalised_on_the_initial_policy(tmp_path, capsys):
    folder = foreign_reward_model(tmp_path / "foreign")
    prompts_file = write_rows(tmp_path / "prompts.jsonl", [{"prompt": p} for p in SHORT_PROMPTS])
    config = tiny_config(tmp_path, prompts_file, reward_models=[str(folder)], total_episodes=8)
    trainer = PPOTrainer(config)
    assert "no reward_stats.json" in capsys.readouterr().err
    stats = trainer.reward_models[0][0].model.stats[0]
    assert stats["n"] == 8 and stats["std"] > 0
    history = trainer.train()["history"]
    # one step ran, its scores normalised with the fitted statistics
    assert len(history) == 1
    assert history[0]["objective/scores"] == pytest.approx((history[0]["reward/raw"] - stats["mean"]) / stats["std"],
                                                       abs=1e-5)
