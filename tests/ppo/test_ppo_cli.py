"""End to end with a real (tiny) reward model: `python -m ppo.train --config smoke.yaml`
with a critic initialised from the reward model; a reward model with ANOTHER tokenizer
scores decoded text through its own tokenizer; a saved policy generates for evaluation."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ppo.config import PPOConfig
from ppo.train import main
from ppo.trainer import PPOTrainer
from rlhf.generation import generate_completions, pad_prompts_and_responses

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    from reward_model.train import main as train_rm

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("rm") / "rm"
    assert train_rm(["--config", str(ROOT / "configs/reward_model/smoke.yaml"), "--output_dir", str(out),
                     "--train_data", str(ROOT / "tests/fixtures/ranked_small.jsonl"), "--disable_tqdm", "true",
                     "--report_to", "none"]) == 0
    return out


@pytest.mark.slow
def test_cli_smoke_run_with_reward_model_critic(tmp_path, reward_model_dir, prompts_file):
    out = tmp_path / "ppo"
    code = main(["--config", str(ROOT / "configs/ppo/smoke.yaml"), "--reward_models", str(reward_model_dir),
                 "--output_dir", str(out), "--prompts", str(prompts_file), "--disable_tqdm", "true",
                 "--report_to", "tensorboard"])
    assert code == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(m["loss/value_avg"])) for m in lines)
    assert (out / "checkpoints" / "step_2" / "trainer_state.json").exists()
    assert (out / "checkpoints" / "step_2" / "model.safetensors").exists()
    assert (out / "policy" / "model.safetensors").exists() and not list(out.rglob("pytorch_model*"))
    # --report_to tensorboard: every metric of every iteration, as in metrics.jsonl
    events = EventAccumulator(str(next((out / "runs").rglob("events.out.tfevents.*")).parent),
                              size_guidance={"scalars": 0})
    events.Reload()
    for key in ("objective/scores", "objective/kl", "loss/policy_avg", "episode", "lr", "time/step"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2, 3]
        # tensorboard stores float32
        assert [e.value for e in logged] == [torch.tensor(m[key], dtype=torch.float32).item() for m in lines], key
    assert {tag for tag in events.Tags()["scalars"]} == set(lines[0]) - {"step"}
    assert (out / "checkpoints" / "step_3" / "trainer_state.json").exists()
    texts = generate_completions(out / "policy", ["Say hi.", "Name a planet."], max_new_tokens=5)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


@pytest.mark.slow
def test_report_to_trackio_logs_every_metric(tmp_path, reward_model_dir, prompts_file):
    """--report_to trackio: trackio's local database holds metrics.jsonl's values, step by step
    (a subprocess: trackio reads TRACKIO_DIR when imported)."""
    out = tmp_path / "ppo"
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "ppo.train", "--config", str(ROOT / "configs/ppo/smoke.yaml"),
                             "--reward_models", str(reward_model_dir), "--output_dir", str(out), "--prompts",
                             str(prompts_file), "--disable_tqdm", "true", "--report_to", "trackio",
                             "--run_name", "smoke-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    with sqlite3.connect(tmp_path / "trackio" / "smoke-run.db") as db:
        logged = [(step, json.loads(metrics)) for step, metrics in db.execute("select step, metrics from metrics order by id")]
    assert [step for step, _ in logged] == [1, 2, 3]
    for (_, metrics), line in zip(logged, lines):
        assert metrics == {key: value for key, value in line.items() if key != "step"}


@pytest.mark.slow
@pytest.mark.parametrize("reward_format", ["text", "chat"])
def test_reward_model_with_another_tokenizer_scores_decoded_text(tmp_path, reward_model_dir, prompts_file,
                                                                  reward_format):
    from reward_model.modeling import RewardModel

    other = tmp_path / "rm_other_tokenizer"
    shutil.copytree(reward_model_dir, other)
    tokenizer = RewardModel.load(reward_model_dir).tokenizer
    tokenizer.add_tokens(["<policy_never_emits_this>"])  # a different vocabulary than the policy's
    tokenizer.save_pretrained(other)
    config = PPOConfig(sft_model_path="tiny-random-llama", reward_models=[f"{other}=2.0"], value_init="policy_head",
                       prompts=str(prompts_file), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                       num_ppo_epochs=1, total_episodes=4, response_length=5, output_dir=str(tmp_path / "ppo"),
                       disable_tqdm=True, sample_table_every=0, score_clip=None, reward_format=reward_format)
    trainer = PPOTrainer(config)
    batch = trainer.rollout(step=0)
    prompts, completions = batch.prompts, batch.completions
    if reward_format == "chat":  # user/assistant turns through the reward model's chat template
        prompts = [[{"role": "user", "content": p}] for p in prompts]
        completions = [[{"role": "assistant", "content": c}] for c in completions]
    # the trainer's score equals 2 x the reward model's own normalised score of the decoded text
    expected, _ = RewardModel.load(other).score(prompts, completions)
    torch.testing.assert_close(batch.scores, 2.0 * expected, atol=1e-5, rtol=0)
    raw = RewardModel.load(other).member_scores(prompts, completions, normalize=False)[0]
    torch.testing.assert_close(batch.raw_scores, 2.0 * raw, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_critic_initialised_from_the_reward_model(tmp_path, reward_model_dir, prompts_file):
    """value_init=reward_model: V(s_t) at rollout 0 is the reward model's raw score of the
    prompt plus the first t response tokens (the RM read at every position)."""
    from reward_model.modeling import RewardModel, sequence_scores

    config = PPOConfig(sft_model_path="tiny-random-llama", reward_model_path=str(reward_model_dir),
                       value_init="reward_model", prompts=str(prompts_file), per_device_train_batch_size=4,
                       num_ppo_epochs=1, total_episodes=4, response_length=4,
                       output_dir=str(tmp_path / "ppo"), disable_tqdm=True, sample_table_every=0)
    trainer = PPOTrainer(config)
    batch = trainer.rollout(step=0)
    member = RewardModel.load(reward_model_dir).members[0]
    for t in range(3):
        prefixes = [r[:t] + [0] for r in batch.responses]  # state s_t = prompt + t tokens (+1 ignored)
        input_ids, mask, _, width = pad_prompts_and_responses(batch.prompt_ids, prefixes,
                                                              trainer.tokenizer.pad_token_id)
        with torch.no_grad():
            expected = sequence_scores(member, input_ids[:, :width + t], mask[:, :width + t])
        torch.testing.assert_close(batch.values[:, t], expected, atol=1e-5, rtol=0)
