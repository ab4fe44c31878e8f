"""PPO trainer on a tiny model: a planted reward rises with bounded KL, sampling and
log-probabilities use the same temperature, the score sits on the last real token, the
LoRA reference is the base model, and a gold judge is logged and watched by the monitor."""

import dataclasses

import pytest
import torch
from torch import nn
from trl.trainer.utils import disable_dropout_in_model

from ppo.config import PPOConfigError, validate_inputs
from ppo.core import token_logprobs
from ppo.train import main
from ppo.trainer import PPOTrainer
from rlhf.config import run_main
from rlhf.generation import SampledResponses, chat_prompt_ids, pad_prompts_and_responses
from rlhf.models import load_model
from ppo_test_utils import planted_policy, tiny_config


@pytest.mark.slow
def test_planted_reward_rises_with_bounded_kl(tmp_path, prompts_file):
    policy, reward = planted_policy()
    config = tiny_config(tmp_path, prompts_file, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                         num_mini_batches=1, total_episodes=15 * 16, response_length=8, kl_coef=0.05,
                         sample_table_every=5)
    summary = PPOTrainer(config, reward_fn=reward, policy=policy).train()
    history = summary["history"]
    scores = [h["objective/scores"] for h in history]
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert 0.35 < first < 0.6  # about half the vocabulary is rewarded at the start
    assert last > first + 0.12, scores
    kls = [h["objective/kl"] for h in history]
    assert abs(kls[0]) < 1e-5  # the first rollout is sampled from the reference itself
    assert max(kls) < 15.0, kls  # bounded: under 2 nats per token over 8 tokens
    assert all(h["policy/approxkl_avg"] < 0.5 for h in history)
    # metrics.jsonl holds one line per iteration with every logged key
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 15
    for key in ("reward/raw", "kl/coef", "objective/entropy", "policy/clipfrac_avg", "loss/value_avg",
                "value/explained_variance", "response/length", "response/stop_rate"):
        assert key in history[-1]
    assert [h["episode"] for h in history] == [16 * step for step in range(1, 16)]
    # TRL's rlhf_reward: the score plus the (negative) KL part of the reward, per sequence
    for h in history:
        assert abs(h["objective/rlhf_reward"] - (h["objective/scores"] + h["objective/non_score_reward"])) < 1e-5
    assert (tmp_path / "run" / "policy" / "config.json").exists()


@pytest.mark.slow
def test_temperature_is_the_same_for_sampling_and_logprobs(tmp_path, prompts_file):
    policy, reward = planted_policy()
    trainer = PPOTrainer(tiny_config(tmp_path, prompts_file, temperature=0.5), reward_fn=reward, policy=policy)
    prompts = [chat_prompt_ids(trainer.tokenizer, p) for p in ["Say hi.", "Name a planet, please."]]
    sampled = trainer.sample(prompts, seed=3, keep_scores=True)
    responses, scores = sampled.responses, sampled.step_scores
    stats = trainer.response_statistics(prompts, responses)
    for i, response in enumerate(responses):
        # the scores the sampler drew from are logits / T; their log-softmax at the sampled token
        # must equal the stored log-probs (left padding and KV cache included).
        from_generate = torch.stack([torch.log_softmax(scores[t][i].float(), -1)[tok]
                                     for t, tok in enumerate(response)])
        torch.testing.assert_close(stats.logprobs[i], from_generate, atol=1e-4, rtol=0)
    # and they are really tempered: T = 1 log-probs differ
    input_ids, mask, _, width = pad_prompts_and_responses(prompts, responses, trainer.tokenizer.pad_token_id)
    with torch.no_grad():
        logits, _, _ = trainer.unwrapped(input_ids, mask)
    untempered = token_logprobs(logits[:, width - 1:-1], input_ids[:, width:], 1.0)
    tempered = token_logprobs(logits[:, width - 1:-1], input_ids[:, width:], 0.5)
    n = len(responses[0])
    torch.testing.assert_close(stats.logprobs[0], tempered[0, :n], atol=1e-5, rtol=0)
    assert (stats.logprobs[0] - untempered[0, :n]).abs().max() > 0.1


def test_score_on_last_real_token_when_responses_stop_early(tmp_path, prompts_file, monkeypatch):
    policy, _ = planted_policy()
    config = tiny_config(tmp_path, prompts_file, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                         num_mini_batches=1,
                         response_length=6, missing_eos_penalty=-1.0, score_clip=None)
    trainer = PPOTrainer(config, reward_fn=lambda p, c, r: [0.5 + i for i in range(len(r))], policy=policy)
    stop = trainer.stop_id
    planted = [[11, 12, stop], [13, stop], [14, 15, 16, 17, 18, 19], [20, 21, 22, 23, stop]]

    def fake_sample(prompt_ids, seed, max_new_tokens=None, keep_scores=False, group_size=1):
        return SampledResponses([list(r) for r in planted], [r[-1] == stop for r in planted])

    monkeypatch.setattr(trainer, "sample", fake_sample)
    rollout = trainer.rollout(step=0)
    lengths = [3, 2, 6, 5]
    assert rollout.response_mask.sum(1).tolist() == lengths
    assert rollout.has_stop.tolist() == [True, True, False, True]
    score_part = rollout.rewards - rollout.non_score_rewards
    expected_scores = [0.5, 1.5, -1.0, 3.5]  # row 2 never stopped: missing_eos_penalty replaces its score
    for row, (length, score) in enumerate(zip(lengths, expected_scores)):
        assert abs(score_part[row, length - 1].item() - score) < 1e-6  # on the stop token itself
        others = torch.cat([score_part[row, :length - 1], score_part[row, length:]])
        assert others.abs().max().item() < 1e-6  # nowhere else, in particular not on the first pad
    assert rollout.rewards[~rollout.response_mask].abs().max() == 0
    assert "<|im_end|>" not in " ".join(rollout.completions)  # the stop token is not in the scored text


@pytest.mark.slow
def test_lora_reference_is_the_base_model_with_adapters_disabled(tmp_path, prompts_file):
    policy, reward = planted_policy()
    base = load_model("tiny-random-llama", seed=0, initializer_range=0.3).eval()
    config = tiny_config(tmp_path, prompts_file, use_lora=True, lora_r=4, lora_alpha=8, total_episodes=16,
                         learning_rate=5e-2)
    trainer = PPOTrainer(config, reward_fn=reward, policy=policy)
    assert trainer.ref_policy is None  # no second copy of the network
    trainer.train()
    prompts = [chat_prompt_ids(trainer.tokenizer, p) for p in ["Say hi.", "Name a colour for me."]]
    responses = [[100, 200, 300], [400, 500]]
    stats = trainer.response_statistics(prompts, responses)
    input_ids, mask, _, width = pad_prompts_and_responses(prompts, responses, trainer.tokenizer.pad_token_id)
    position_ids = (mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        base_logits = base(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits
    expected = token_logprobs(base_logits[:, width - 1:-1], input_ids[:, width:], config.temperature)
    for i, r in enumerate(responses):
        torch.testing.assert_close(stats.ref_logprobs[i], expected[i, :len(r)], atol=1e-5, rtol=0)
        # the trained policy itself moved away from the base model
        assert (stats.logprobs[i] - expected[i, :len(r)]).abs().max() > 1e-3


def test_local_rollout_forward_batch_size_sets_the_generate_chunks(tmp_path, prompts_file, monkeypatch):
    policy, reward = planted_policy()
    trainer = PPOTrainer(tiny_config(tmp_path, prompts_file, local_rollout_forward_batch_size=4), reward_fn=reward, policy=policy)
    calls, sample = [], trainer.sample

    def counting_sample(prompt_ids, seed, **kwargs):
        calls.append((len(prompt_ids), seed))
        return sample(prompt_ids, seed, **kwargs)

    monkeypatch.setattr(trainer, "sample", counting_sample)
    rollout = trainer.rollout(step=0)
    # 8 prompts per iteration: 2 generate calls of 4 (not 4 calls of per_device_train_batch_size 2), each with its own seed
    assert [size for size, _ in calls] == [4, 4] and calls[0][1] != calls[1][1]
    assert rollout.response_mask.shape[0] == 8
    assert len(trainer.generate(["Say hi."] * 5, max_new_tokens=3)) == 5  # a last, shorter chunk is fine


def test_trl_disable_dropout_in_model_zeroes_every_dropout():
    """The trainer turns dropout off in the policy and the critic with TRL's function (before: a loop
    setting p = 0.0 on every nn.Dropout); train-mode outputs then equal eval-mode ones."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.3), nn.Linear(4, 2))).train()
    disable_dropout_in_model(model)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.0, 0.0]
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    train_out = model(x)
    torch.testing.assert_close(train_out, model.eval()(x), rtol=0, atol=0)


def test_gold_fn_scores_each_rollout_and_the_monitor_warns_once(tmp_path, prompts_file, capsys):
    policy, reward = planted_policy()
    calls = []

    def gold(prompts, completions):  # a stand-in judge: characters per completion
        calls.append((list(prompts), list(completions)))
        return [len(c) for c in completions]

    trainer = PPOTrainer(tiny_config(tmp_path, prompts_file), reward_fn=reward, policy=policy, gold_fn=gold)
    trainer.monitor.entropy_floor = 2.0  # entropy < 2 x its first value: true from iteration 1
    first = trainer.step()
    rollout = trainer.last_rollout
    assert calls == [(rollout.prompts, rollout.completions)]  # the rollout's own pairs, once
    assert first["objective/gold"] == pytest.approx(sum(len(c) for c in rollout.completions) / 8)
    assert first["monitor/entropy_collapse"] == 1.0
    assert {k: v for k, v in first.items() if k.startswith("monitor/") and k != "monitor/entropy_collapse"} == {
        "monitor/kl_runaway": 0.0, "monitor/length_drift": 0.0, "monitor/clip_jump": 0.0,
        "monitor/proxy_gold_divergence": 0.0}
    entropy = first["objective/entropy"]
    assert capsys.readouterr().err.strip() == (
        f"warning: possible reward hacking: entropy_collapse: mean token entropy {entropy:.3g} nats at iteration 1, "
        f"below 2.0 x its first-iteration value {entropy:.3g}")
    second = trainer.step()
    assert second["monitor/entropy_collapse"] == 1.0 and "entropy_collapse" not in capsys.readouterr().err
    assert trainer.state.state_dict()["monitor_state"]["warnings"] == [
        {"iteration": 1, "check": "entropy_collapse", "seen": trainer.monitor.warnings[0].seen}]


def test_optim_builds_the_optimizer_as_transformers_trainer_does(tmp_path, prompts_file):
    """TrainingArguments' optim: adamw_torch_fused by default (as TRL's trainers), adamw_torch
    the for-loop AdamW; both take the config's learning rate, betas, epsilon and weight decay
    and give the same weights after an iteration (1e-6)."""
    hyper = dict(learning_rate=3e-3, adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6, weight_decay=0.1)
    weights = {}
    for optim in ("adamw_torch_fused", "adamw_torch"):
        policy, reward = planted_policy()
        config = tiny_config(tmp_path, prompts_file, output_dir=str(tmp_path / optim), total_episodes=8, **hyper)
        if optim != "adamw_torch_fused":  # the default is left unset
            config = dataclasses.replace(config, optim=optim)
        trainer = PPOTrainer(config, reward_fn=reward, policy=policy)
        optimizer = trainer.optimizer.optimizer
        assert type(optimizer) is torch.optim.AdamW
        group = optimizer.param_groups[0]
        assert (group["fused"], group["lr"], group["betas"], group["eps"], group["weight_decay"]) == \
            (True if optim == "adamw_torch_fused" else None, 3e-3, (0.8, 0.95), 1e-6, 0.1)
        trainer.step()
        weights[optim] = [p.detach().clone() for p in trainer.unwrapped.parameters()]
    moved = max((a - b).abs().max().item() for a, b in zip(weights["adamw_torch"], planted_policy()[0].parameters()))
    assert moved > 1e-3  # the iteration changed the weights, so the comparison below means something
    for fused, plain in zip(weights["adamw_torch_fused"], weights["adamw_torch"]):
        torch.testing.assert_close(fused, plain, atol=1e-6, rtol=0)


def test_an_optimizer_that_cannot_be_built_is_refused_before_the_model_loads(tmp_path, prompts_file, capsys,
                                                                             forbid_model_loading):
    with pytest.raises(PPOConfigError, match="^optim: 'adamw_bnb_8bit' cannot be built: You need to install"):
        validate_inputs(tiny_config(tmp_path, prompts_file, optim="adamw_bnb_8bit"))
    argv = ["--prompts", str(prompts_file), "--output_dir", str(tmp_path / "run"), "--reward_model_path", "x",
            "--optim", "adamw_bnb_8bit"]
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: optim: 'adamw_bnb_8bit' cannot be built: You need to install `bitsandbytes`"), err
