"""precision auto | bf16 | fp32 (rlhf.precision): the decision, the numerics check, the
config fields of PPO and the reward model, and that an explicit precision never probes.
No timing is asserted: the probe's speeds are replaced by synthetic ones where it matters."""

import pytest
import torch

import rlhf.precision
from ppo.config import PPOConfig
from ppo.trainer import PPOTrainer, mean_token_logprob
from reward_model.train import RewardModelConfig, random_pairs_loss
from rlhf.config import ConfigError, parse_config
from rlhf.losses import bradley_terry_loss
from rlhf.models import load_model
from rlhf.precision import (
    PrecisionChoice,
    check_numerics,
    choose_precision,
    matmul_probe,
    requested_precision,
    resolve_precision,
)
from rlhf.precision import measured_speeds as cached_probe  # bound before conftest patches the module's name
from tests.ppo.ppo_test_utils import SHORT_PROMPTS, tiny_config

# The measurement on an AVX-512 BF16 CPU (148 vs 58 GFLOP/s) and an AVX2-only one.
FAST_BF16 = {"fp32": 58.0, "bf16": 148.0}
SLOW_BF16 = {"fp32": 60.0, "bf16": 40.0}


def test_bf16_when_faster_and_the_loss_agrees():
    choice, reason = choose_precision(FAST_BF16, numerics_ok=True)
    assert choice == "bf16"
    assert reason == "bf16 matmuls run 2.55x fp32's speed here and the loss agrees with fp32"  # 148 / 58 = 2.552


def test_fp32_when_bf16_is_slower_whatever_the_numerics():
    for numerics_ok in (True, False, None):
        choice, reason = choose_precision(SLOW_BF16, numerics_ok)
        assert choice == "fp32"
        assert reason == "bf16 matmuls run 0.67x fp32's speed here, below the 1.1x that pays"  # 40 / 60


def test_fp32_when_bf16_is_faster_but_the_loss_is_off():
    choice, reason = choose_precision(FAST_BF16, numerics_ok=False)
    assert choice == "fp32"
    assert reason == "bf16 matmuls run 2.55x faster, but the loss under bf16 is off by more than the tolerance"


def test_the_speedup_threshold_and_a_device_without_bf16():
    assert choose_precision({"fp32": 100.0, "bf16": 105.0}, True)[0] == "fp32"  # 1.05x < 1.1x
    assert choose_precision({"fp32": 100.0, "bf16": 115.0}, True)[0] == "bf16"  # 1.15x
    assert choose_precision({"fp32": 100.0, "bf16": 115.0}, True, min_speedup=1.2)[0] == "fp32"
    assert choose_precision({"fp32": 100.0, "bf16": 0.0}, None) == ("fp32", "bf16 autocast does not run on this device")
    # Before the model is loaded (numerics None) the choice rests on speed alone.
    assert choose_precision(FAST_BF16, None) == ("bf16", "bf16 matmuls run 2.55x fp32's speed here")


def test_numerics_check_catches_a_loss_bf16_cannot_hold():
    # 1.001 - 1: bf16 (8 bits of mantissa, spacing 2^-7 at 1) rounds the product to 1, so the
    # difference vanishes: relative error exactly 1.
    x, one = torch.tensor([[1.001]]), torch.tensor([[1.0]])
    check = check_numerics(lambda: (x @ one).sum() - 1.0)
    assert check.fp32 == pytest.approx(float(torch.tensor(1.001)) - 1.0, rel=1e-6)  # 0.0010000467
    assert check.bf16 == 0.0
    assert check.relative_error == 1.0 and not check.ok


def test_numerics_check_passes_a_loss_within_rounding():
    # 1/3 through a bf16 matmul: rounded to 0.333984375 (nearest bf16), 0.195 % off < 1 %.
    third, one = torch.tensor([[1 / 3]]), torch.tensor([[1.0]])
    check = check_numerics(lambda: (third @ one).sum())
    assert check.bf16 == 0.333984375
    assert check.relative_error == pytest.approx((0.333984375 - float(torch.tensor(1 / 3))) / float(torch.tensor(1 / 3)))
    assert check.relative_error == pytest.approx(0.001953, abs=1e-6) and check.ok
    assert not check_numerics(lambda: (third @ one).sum(), rtol=0.001).ok


def test_auto_probes_then_checks_the_loss(monkeypatch):
    monkeypatch.setattr(rlhf.precision, "measured_speeds", lambda device: FAST_BF16)
    x, one = torch.tensor([[1.001]]), torch.tensor([[1.0]])
    good = resolve_precision("auto", "cpu", loss_fn=lambda: (x @ one).sum())  # 1.001 -> 1.0: 0.1 % off
    assert good.precision == "bf16" and good.numerics.ok
    bad = resolve_precision("auto", "cpu", loss_fn=lambda: (x @ one).sum() - 1.0)
    assert bad.precision == "fp32" and bad.numerics.relative_error == 1.0
    assert bad.record() == {"precision": "fp32", "precision_requested": "auto", "precision_fp32_gflops": 58.0,
                            "precision_bf16_gflops": 148.0, "precision_loss_fp32": bad.numerics.fp32,
                            "precision_loss_bf16": 0.0}
    assert bad.note().startswith("note: precision auto -> fp32: bf16 matmuls run 2.55x faster, but the loss")
    assert "(matmul fp32 58.0, bf16 148.0 GFLOP/s; loss fp32 0.001, bf16 0)" in bad.note()


def test_auto_skips_the_numerics_check_when_bf16_is_slower(monkeypatch):
    monkeypatch.setattr(rlhf.precision, "measured_speeds", lambda device: SLOW_BF16)

    def loss_never_evaluated():
        raise AssertionError("the numerics check ran although fp32 was already chosen")

    choice = resolve_precision("auto", "cpu", loss_fn=loss_never_evaluated)
    assert (choice.precision, choice.numerics) == ("fp32", None)


@pytest.mark.parametrize("requested", ["bf16", "fp32"])
def test_an_explicit_precision_never_probes(monkeypatch, requested):
    def no_probe(*args, **kwargs):
        raise AssertionError("probed although the precision was given")

    monkeypatch.setattr(rlhf.precision, "measured_speeds", no_probe)
    monkeypatch.setattr(rlhf.precision, "matmul_probe", no_probe)
    assert resolve_precision(requested, "cpu", loss_fn=no_probe) == PrecisionChoice(requested, requested,
                                                                                   "set in the config")


def test_the_probe_runs_once_per_process_and_device(monkeypatch):
    calls = []
    monkeypatch.setattr(rlhf.precision, "matmul_probe", lambda device: calls.append(device) or FAST_BF16)
    cached_probe.cache_clear()
    assert cached_probe("cpu") == FAST_BF16 and cached_probe("cpu") == FAST_BF16
    assert calls == ["cpu"]
    cached_probe.cache_clear()


def test_the_probe_measures_both_precisions():
    # One tiny shape: the numbers are machine-dependent, only their presence is checked.
    speeds = matmul_probe("cpu", shapes=((8, 16, 16),), budget=0.0)
    assert set(speeds) == {"fp32", "bf16"} and speeds["fp32"] > 0 and speeds["bf16"] >= 0


# --- the config fields ------------------------------------------------------------------


def test_requested_precision_and_the_old_bf16_flag():
    assert requested_precision("auto", bf16=False) == "auto"  # bf16: false is the flag's default: no opinion
    assert requested_precision("auto", bf16=True) == "bf16"
    assert requested_precision("bf16", bf16=False) == "bf16"
    assert requested_precision("fp32", bf16=False) == "fp32"
    with pytest.raises(ConfigError, match=r"^precision: 'bf16: true' asks for bf16 but 'precision: fp32'"):
        requested_precision("fp32", bf16=True)
    with pytest.raises(ConfigError, match=r"^precision: expected one of \('auto', 'bf16', 'fp32'\), got 'half'"):
        requested_precision("half", bf16=False)


def test_ppo_and_reward_model_configs_resolve_the_request(tmp_path):
    assert PPOConfig(output_dir=str(tmp_path)).precision == "auto"
    assert PPOConfig(output_dir=str(tmp_path), bf16=True).precision == "bf16"
    assert PPOConfig(output_dir=str(tmp_path), precision="fp32").precision == "fp32"
    assert parse_config(RewardModelConfig, ["--output_dir", str(tmp_path)]).precision == "auto"
    rm = parse_config(RewardModelConfig, ["--output_dir", str(tmp_path), "--bf16", "true"])
    assert (rm.precision, rm.bf16) == ("bf16", True)
    rm = parse_config(RewardModelConfig, ["--output_dir", str(tmp_path), "--precision", "bf16"])
    assert (rm.precision, rm.bf16) == ("bf16", True)  # transformers' Trainer reads bf16
    rm = parse_config(RewardModelConfig, ["--output_dir", str(tmp_path)])
    assert rm.bf16 is False  # auto: train() sets it once measured


@pytest.mark.parametrize("config_class", [PPOConfig, RewardModelConfig])
def test_bf16_true_with_precision_fp32_names_both(tmp_path, config_class):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("bf16: true\nprecision: fp32\n")
    with pytest.raises(ConfigError) as err:
        parse_config(config_class, ["--config", str(config_file), "--output_dir", str(tmp_path / "out")])
    assert str(err.value).startswith(f"{config_file}: precision: 'bf16: true' asks for bf16 but 'precision: fp32'")


# --- the stages' numerics checks on the tiny model ------------------------------------------


def test_ppo_numerics_loss_is_the_mean_token_logprob():
    policy = load_model("tiny-random-llama", seed=0).eval()
    ids = rlhf.precision.random_token_ids(policy.config.vocab_size)
    with torch.no_grad():
        logits = policy(input_ids=ids).logits[:, :-1] / 0.7
        expected = sum(torch.log_softmax(logits[r, t].double(), -1)[ids[r, t + 1]].item()
                       for r in range(ids.shape[0]) for t in range(ids.shape[1] - 1)) / (ids.shape[0] * (ids.shape[1] - 1))
        assert mean_token_logprob(policy, 0.7).item() == pytest.approx(expected, rel=1e-5)
    check = check_numerics(lambda: mean_token_logprob(policy, 0.7))
    assert check.fp32 == pytest.approx(expected, rel=1e-5) and check.ok  # tiny model: bf16 within 1 %


def test_reward_model_numerics_loss_is_bradley_terry_of_random_pairs():
    model = load_model("tiny-random-llama", kind="seq_cls", seed=0).eval()
    ids = rlhf.precision.random_token_ids(model.config.vocab_size, rows=4)
    with torch.no_grad():
        scores = model.score(model.model(input_ids=ids).last_hidden_state)[:, -1, 0]  # the head at the last token
        expected = sum(-torch.nn.functional.logsigmoid(scores[2 * i] - scores[2 * i + 1]).item() for i in range(2)) / 2
        assert random_pairs_loss(model).item() == pytest.approx(expected, rel=1e-5)
        assert bradley_terry_loss(scores[0::2], scores[1::2]).item() == pytest.approx(expected, rel=1e-5)


def test_ppo_trainer_with_fp32_never_probes_and_records_its_precision(tmp_path, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("probed although precision fp32 was given")

    monkeypatch.setattr(rlhf.precision, "measured_speeds", no_probe)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(SHORT_PROMPTS) + "\n")
    trainer = PPOTrainer(tiny_config(tmp_path, prompts, precision="fp32"), reward_fn=lambda p, c, r: [0.0] * len(p))
    assert trainer.accelerator.mixed_precision == "no"
    assert (tmp_path / "run" / "precision.json").read_text() == (
        '{\n  "precision": "fp32",\n  "precision_requested": "fp32"\n}\n')


def test_trainers_of_one_process_can_differ_in_precision(tmp_path):
    """accelerate keeps one process-wide state; a pipeline makes several trainers in a row."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(SHORT_PROMPTS) + "\n")
    configs = [tiny_config(tmp_path / name, prompts, precision=name) for name in ("bf16", "fp32")]
    first = PPOTrainer(configs[0], reward_fn=lambda p, c, r: [0.0] * len(p))
    assert first.accelerator.mixed_precision == "bf16"
    second = PPOTrainer(configs[1], reward_fn=lambda p, c, r: [0.0] * len(p))
    assert second.accelerator.mixed_precision == "no"
