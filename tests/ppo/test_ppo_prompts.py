"""`ppo --prompts`: text and conversational prompts (TRL's prompt-only formats) from
files, saved `datasets` folders and hub ids in the local cache; a conversation is
templated as it is, text prompts exactly as before."""

import io
import json

import datasets
import huggingface_hub
import pytest
import torch
from rich.console import Console

from ppo.config import PPOConfigError, load_prompts
from ppo.trainer import PPOTrainer, sample_table
from ppo_test_utils import SHORT_PROMPTS, planted_policy, tiny_config
from rlhf.generation import chat_prompt_ids
from rlhf.models import load_tokenizer


def user(text):
    return [{"role": "user", "content": text}]


CONVERSATIONS = [
    user("Say hi."),
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"}],
]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_conversational_prompts_from_jsonl_are_templated_as_they_are(tmp_path):
    path = write_rows(tmp_path / "prompts.jsonl", [{"prompt": p} for p in CONVERSATIONS] + [{"prompt": "Greet me."}])
    prompts = load_prompts(str(path))
    assert prompts == CONVERSATIONS + ["Greet me."]
    tokenizer = load_tokenizer("tiny-random-llama", padding_side="left")
    # a text prompt is one user turn, exactly as before; a conversation keeps every turn
    assert chat_prompt_ids(tokenizer, "Say hi.") == chat_prompt_ids(tokenizer, user("Say hi.")) == \
        tokenizer.apply_chat_template(user("Say hi."), add_generation_prompt=True, tokenize=True,
                                      return_dict=True)["input_ids"]
    assert chat_prompt_ids(tokenizer, CONVERSATIONS[2]) == tokenizer.apply_chat_template(
        CONVERSATIONS[2], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert len(chat_prompt_ids(tokenizer, CONVERSATIONS[2])) > len(chat_prompt_ids(tokenizer, "Bye?"))


def test_text_prompt_files_are_read_as_before(tmp_path):
    (tmp_path / "prompts.txt").write_text("Say hi.\n\n  Name a colour.  \n")
    assert load_prompts(str(tmp_path / "prompts.txt")) == ["Say hi.", "Name a colour."]


def test_prompts_from_saved_datasets_and_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    rows = [{"prompt": user(f"Question {i}?")} for i in range(5)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:3]),
                          "test": datasets.Dataset.from_list(rows[3:])}).save_to_disk(str(tmp_path / "saved"))
    assert load_prompts(str(tmp_path / "saved")) == [user(f"Question {i}?") for i in range(3)]  # the train split
    repo = tmp_path / "hub-cache" / "datasets--someone--prompts"  # as `hf download --repo-type dataset` leaves it
    (repo / "snapshots" / ("0" * 40) / "data").mkdir(parents=True)
    write_rows(repo / "snapshots" / ("0" * 40) / "data" / "train.jsonl", [{"prompt": "Say hi."}, rows[4]])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    assert load_prompts("someone/prompts") == ["Say hi.", user("Question 4?")]
    with pytest.raises(PPOConfigError, match="^prompts: someone/missing: not a file or folder, and the dataset is "
                                             r"not in the local cache \(datasets or hub\); the run is offline"):
        load_prompts("someone/missing")
    datasets.Dataset.from_list([{"text": "Say hi."}]).save_to_disk(str(tmp_path / "no_prompt"))
    with pytest.raises(PPOConfigError, match=r"^prompts: \S+no_prompt \(row 1\): expected a 'prompt' column"):
        load_prompts(str(tmp_path / "no_prompt"))


@pytest.mark.parametrize("prompt", [[], [{"role": "user"}], [{"content": "Hi"}], "  ", 3])
def test_bad_prompts_name_the_line(tmp_path, prompt):
    path = write_rows(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}, {"prompt": prompt}])
    with pytest.raises(PPOConfigError, match=f"^prompts: {path}:2: 'prompt' must be a non-empty string or a list of"):
        load_prompts(str(path))


def test_ppo_trains_on_conversational_prompts_and_prints_them(tmp_path):
    rows = [{"prompt": CONVERSATIONS[i % 3] if i % 2 else p} for i, p in enumerate(SHORT_PROMPTS)]
    path = write_rows(tmp_path / "prompts.jsonl", rows)
    policy, reward = planted_policy()
    seen = []

    def recording_reward(prompts, completions, responses):
        seen.extend(prompts)
        return reward(prompts, completions, responses)

    trainer = PPOTrainer(tiny_config(tmp_path, path), reward_fn=recording_reward, policy=policy)
    assert trainer.prompt_ids == [chat_prompt_ids(trainer.tokenizer, row["prompt"]) for row in rows]
    rollout = trainer.rollout(step=0)
    assert all(p in [row["prompt"] for row in rows] for p in rollout.prompts) and seen == rollout.prompts
    assert any(isinstance(p, list) for p in rollout.prompts)
    console = Console(file=io.StringIO(), width=200)
    console.print(sample_table(rollout, step=0, rows=len(rollout.prompts)))
    printed = console.file.getvalue()
    for prompt in rollout.prompts:  # a conversation shows the turn the policy answers
        assert (prompt if isinstance(prompt, str) else prompt[-1]["content"]) in printed


class RecordingRewardModel:
    """Stands in for a loaded reward model: records what it is asked to score."""

    def __init__(self):
        self.prompts, self.completions = [], []

    def score(self, prompts, completions):
        self.prompts += prompts
        self.completions += completions
        return torch.zeros(len(prompts)), torch.zeros(len(prompts))


@pytest.mark.parametrize("reward_format", ["chat", "text"])
def test_reward_models_see_a_conversation_with_every_turn(tmp_path, reward_format):
    path = write_rows(tmp_path / "prompts.jsonl", [{"prompt": CONVERSATIONS[i % 3]} for i in range(8)])
    policy, reward = planted_policy()
    trainer = PPOTrainer(tiny_config(tmp_path, path, reward_format=reward_format), reward_fn=reward, policy=policy)
    recorder = RecordingRewardModel()
    trainer.reward_fn, trainer.reward_models = None, [(recorder, 1.0)]
    rollout = trainer.rollout(step=0)
    assert recorder.prompts == rollout.prompts  # the message lists themselves: format_item templates them as chat
    expected = [[{"role": "assistant", "content": c}] for c in rollout.completions] if reward_format == "chat" \
        else rollout.completions
    assert recorder.completions == expected
