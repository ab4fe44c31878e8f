"""PPOConfig parsing and input validation: every bad input fails with the field named,
before any model weights are loaded; the accelerate profiles are valid accelerate configs."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

import ppo.config as ppo_config
from ppo.config import BatchSizes, PPOConfig, PPOConfigError, batch_sizes, num_total_batches, parse_config
from rlhf.config import ConfigError
from ppo.trainer import PPOTrainer
from ppo_test_utils import tiny_config

ROOT = Path(__file__).resolve().parents[2]




def expect(field: str, config_or_thunk):
    with pytest.raises(PPOConfigError, match=f"^{field}:"):
        if callable(config_or_thunk):
            config_or_thunk()
        else:
            PPOTrainer(config_or_thunk, reward_fn=lambda p, c, r: [0.0] * len(p))


def test_yaml_and_cli_overrides():
    config = parse_config(["--config", str(ROOT / "configs/ppo/smoke.yaml"), "--learning_rate", "5e-4",
                           "--reward_models", "a/rm=0.5", "b/rm"])
    assert config.learning_rate == 5e-4 and config.total_episodes == 24  # override wins, YAML kept
    assert config.reward_models == [{"path": "a/rm", "weight": 0.5}, {"path": "b/rm", "weight": 1.0}]
    from_yaml = parse_config(["--config", str(ROOT / "configs/ppo/smoke.yaml")])
    assert from_yaml.reward_models == [{"path": "runs/reward_model/smoke", "weight": 1.0}]
    quick = parse_config(["--config", str(ROOT / "configs/ppo/quickstart.yaml")])
    assert quick.sft_model_path == "smollm2-135m-instruct" and quick.ptx_coef > 0
    assert quick.local_rollout_forward_batch_size == 32
    assert batch_sizes(quick) == BatchSizes(world_size=1, per_device_train_batch_size=8, micro_batch_size=8,
                                            local_mini_batch_size=16, mini_batch_size=16, local_batch_size=32,
                                            batch_size=32, local_rollout_forward_batch_size=32)
    assert num_total_batches(quick, num_prompts=233) == 8  # 256 episodes in rollouts of 32


OLD_SMOKE = """policy_model: tiny-random-llama
reward_models: [runs/reward_model/smoke]
num_steps: 3
rollout_batch_size: 8
mini_batch_size: 4
micro_batch_size: 2
generation_batch_size: 4
ppo_epochs: 2
max_new_tokens: 8
init_kl_coef: 0.07
clip_range: 0.3
clip_range_value: null
missing_stop_penalty: -1.0
lr_schedule: constant
save_every: 2
log_every: 5
progress_bar: false
"""


def test_old_names_are_aliases_with_a_warning(tmp_path, capsys, monkeypatch):
    """The previous release's names still work (YAML and command line), converted exactly
    into TRL's units, each with a one-line warning naming the new name."""
    old = tmp_path / "old.yaml"
    old.write_text(OLD_SMOKE)
    config = parse_config(["--config", str(old), "--resume_from", "latest", "--clip_range", "0.25"])
    warnings = capsys.readouterr().err.splitlines()
    assert "warning: command line: '--resume_from' is deprecated, use '--resume_from_checkpoint' instead; the old " \
           "name goes in the next release" in warnings
    assert f"warning: {old}: 'num_steps' is deprecated, use 'total_episodes' (in other units; the value is " \
           "converted) instead; the old name goes in the next release" in warnings
    assert len(warnings) == 18  # 16 old keys + 2 old flags, one line each
    new = PPOConfig(sft_model_path="tiny-random-llama", reward_models=["runs/reward_model/smoke"], total_episodes=24,
                    per_device_train_batch_size=2, gradient_accumulation_steps=2, num_mini_batches=2,
                    local_rollout_forward_batch_size=4, num_ppo_epochs=2, response_length=8, kl_coef=0.07,
                    cliprange=0.25, cliprange_value=None, missing_eos_penalty=-1.0, lr_scheduler_type="constant",
                    save_steps=2, logging_steps=5, disable_tqdm=True, resume_from_checkpoint="latest")
    assert config.to_dict() == new.to_dict()
    # an old batch size that does not divide: the error names where it was given
    with pytest.raises(ConfigError) as error:
        parse_config(["--config", str(old), "--mini_batch_size", "3"])
    assert str(error.value) == "--mini_batch_size: 3 must be a positive multiple of processes x micro_batch_size = 1 x 2"
    with pytest.raises(ConfigError) as error:
        parse_config(["--config", str(old), "--micro_batch_size", "3"])
    assert str(error.value) == f"{old}: mini_batch_size: 4 must be a positive multiple of processes x micro_batch_size " \
                               "= 1 x 3"
    # 2 processes (WORLD_SIZE=2): the same global sizes are half the per-device accumulation
    monkeypatch.setattr(ppo_config, "launch_world_size", lambda: 2)
    two = parse_config(["--config", str(old)])
    assert (two.per_device_train_batch_size, two.gradient_accumulation_steps, two.num_mini_batches) == (2, 1, 2)
    assert batch_sizes(two, world_size=2).batch_size == 8 and two.total_episodes == 24
    # an old name and its new name together: refused
    both = tmp_path / "both.yaml"
    both.write_text("ppo_epochs: 2\nnum_ppo_epochs: 3\n")
    with pytest.raises(ConfigError, match="ppo_epochs: give only 'num_ppo_epochs'"):
        parse_config(["--config", str(both)])
    # reward_model_path, TRL's single-model spelling
    assert parse_config(["--reward_model_path", "a/rm"]).reward_models == [{"path": "a/rm", "weight": 1.0}]


def test_training_arguments_the_trainer_does_not_read_are_refused():
    for field, kwargs in [("fp16", dict(fp16=True)),
                          ("gradient_checkpointing_kwargs", dict(gradient_checkpointing_kwargs={"use_reentrant": True})),
                          ("eval_strategy", dict(eval_strategy="steps")),
                          ("label_smoothing_factor", dict(label_smoothing_factor=0.1))]:
        expect(field, lambda: PPOConfig(**kwargs))
    # gradient checkpointing is honoured, under TRL's name and under transformers 5.x's (which mirror each other)
    assert PPOConfig(gradient_checkpointing=True).gradient_checkpointing is True
    assert PPOConfig(activation_checkpointing=True).gradient_checkpointing is True
    # values TrainingArguments derives itself (pin memory off on a CPU, ...) pass dataclasses.replace
    config = parse_config(["--config", str(ROOT / "configs/ppo/smoke.yaml"), "--adam_beta2", "0.99"])
    assert dataclasses.replace(config, report_to="none").adam_beta2 == 0.99


def test_every_field_has_a_help_text():
    own = [f for f in dataclasses.fields(PPOConfig) if f.name in PPOConfig.__annotations__]  # declared here
    assert len(own) > 40 and all(f.metadata.get("help") for f in own), [f.name for f in own if not f.metadata.get("help")]


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_step: 3\n")
    with pytest.raises(ConfigError) as error:
        parse_config(["--config", str(bad)])
    assert str(error.value) == f"{bad}: unknown key 'num_step'; expected fields of PPOConfig (see docs/config/)"
    with pytest.raises(ConfigError) as error:
        parse_config(["--config", str(ROOT / "configs/ppo/smoke.yaml"), "--num_step", "3"])
    assert str(error.value) == "--num_step: unknown flag; expected a field of PPOConfig (see docs/config/)"


def test_bad_values_name_the_file_or_flag_and_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: -1e-5\n")
    with pytest.raises(ConfigError) as error:
        parse_config(["--config", str(bad)])
    assert str(error.value) == f"{bad}: learning_rate: expected > 0, got -1e-05"
    with pytest.raises(ConfigError) as error:
        parse_config(["--config", str(ROOT / "configs/ppo/smoke.yaml"), "--learning_rate", "-1e-5"])
    assert str(error.value) == "--learning_rate: expected > 0, got -1e-05"
    with pytest.raises(ConfigError) as error:
        parse_config(["--total_episodes", "three"])
    assert str(error.value) == "--total_episodes: expected an integer, got 'three'"
    assert issubclass(PPOConfigError, ConfigError)


def test_values_wrong_on_their_own():
    for field, kwargs in [
        ("per_device_train_batch_size", dict(per_device_train_batch_size=0)),
        ("gradient_accumulation_steps", dict(gradient_accumulation_steps=0)),
        ("num_mini_batches", dict(num_mini_batches=0)),
        ("kl_estimator", dict(kl_estimator="k4")),
        ("value_init", dict(value_init="zeros")),
        ("value_init", dict(value_init="reward_model", reward_models=[])),
        ("pretrain_data", dict(ptx_coef=0.5, pretrain_data=None)),
        ("temperature", dict(temperature=0.0)),
        ("target_kl", dict(target_kl=-1.0)),
        ("reward_models", dict(reward_models=[{"weight": 2.0}])),
        ("total_episodes", dict(total_episodes=0)),
        ("local_rollout_forward_batch_size", dict(local_rollout_forward_batch_size=0)),
        ("reward_model_path", dict(reward_model_path="a", reward_models=["b"])),
    ]:
        expect(field, lambda: PPOConfig(**kwargs))


@pytest.mark.slow
def test_bad_inputs_fail_before_any_model_is_loaded(tmp_path, prompts_file, forbid_model_loading):
    # a prompt longer than the context minus response_length (tiny models: 1024 positions)
    long_prompts = tmp_path / "long.txt"
    long_prompts.write_text("Say hi.\n" + "word " * 1100 + "\n")
    expect("prompts", tiny_config(tmp_path, long_prompts))
    expect("prompts", tiny_config(tmp_path, prompts_file, response_length=1000))  # 24 tokens left < 33-token prompt
    expect("response_length", tiny_config(tmp_path, prompts_file, response_length=1024))
    # prompts files
    expect("prompts", tiny_config(tmp_path, tmp_path / "missing.jsonl"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "no prompt key"}\n')
    expect("prompts", tiny_config(tmp_path, broken))
    # pretraining data: missing, empty, too short for one block
    expect("pretrain_data", tiny_config(tmp_path, prompts_file, ptx_coef=0.1, pretrain_data=str(tmp_path / "nope.txt")))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    expect("pretrain_data", tiny_config(tmp_path, prompts_file, ptx_coef=0.1, pretrain_data=str(empty)))
    short = tmp_path / "short.txt"
    short.write_text("a few words")
    expect("pretrain_data", tiny_config(tmp_path, prompts_file, ptx_coef=0.1, pretrain_data=str(short),
                                        ptx_max_length=64))
    # generation chunks must tile the per-process rollout (tiny_config: 8 prompts per iteration)
    expect("local_rollout_forward_batch_size", tiny_config(tmp_path, prompts_file, local_rollout_forward_batch_size=3))
    # stop token that is several tokens
    expect("stop_token", tiny_config(tmp_path, prompts_file, stop_token="THE END, really"))
    # a reward-model path that is not a reward model
    expect("reward_models", tiny_config(tmp_path, prompts_file, reward_models=[str(tmp_path)]))
    # no reward at all
    with pytest.raises(PPOConfigError, match="^reward_models:"):
        PPOTrainer(tiny_config(tmp_path, prompts_file))
    expect("resume_from_checkpoint", tiny_config(tmp_path, prompts_file,
                                                 resume_from_checkpoint=str(tmp_path / "no_checkpoint")))


@pytest.mark.slow
def test_critic_from_a_reward_model_with_another_tokenizer_is_refused(tmp_path, prompts_file, forbid_model_loading):
    from rlhf.models import load_tokenizer

    rm = tmp_path / "rm"
    rm.mkdir()
    config = {"model_type": "llama", "architectures": ["LlamaForSequenceClassification"], "num_labels": 1}
    (rm / "config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer("tiny-random-llama")
    tokenizer.add_tokens(["<extra_token_for_test>"])
    tokenizer.save_pretrained(rm)
    expect("value_init", tiny_config(tmp_path, prompts_file, reward_models=[str(rm)], value_init="reward_model"))


PROFILES = ["cpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp"]


@pytest.mark.parametrize("profile", PROFILES)
def test_accelerate_profiles_are_valid_accelerate_configs(profile):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    path = ROOT / "configs/accelerate" / f"{profile}.yaml"
    raw = yaml.safe_load(path.read_text())
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown top-level keys, converts enums
    assert "#" in path.read_text()  # documented
    assert config.mixed_precision in ("no", "fp16", "bf16")
    assert config.num_machines == 1 and config.num_processes >= 1
    expected = {"cpu": DistributedType.NO, "multi_gpu": DistributedType.MULTI_GPU,
                "deepspeed_zero2": DistributedType.DEEPSPEED, "deepspeed_zero3": DistributedType.DEEPSPEED,
                "fsdp": DistributedType.FSDP}[profile]
    assert config.distributed_type == expected
    if profile.startswith("deepspeed"):
        assert raw["deepspeed_config"]["zero_stage"] == int(profile[-1])
        # the trainer accumulates micro-batches itself; DeepSpeed must not accumulate again
        assert raw["deepspeed_config"]["gradient_accumulation_steps"] == 1
    if profile == "fsdp":
        assert raw["fsdp_config"]["fsdp_version"] == 2
    if profile == "cpu":
        assert config.use_cpu and config.num_processes == 1
