"""benchmarks/grpo_throughput.py gives our trainer and TRL's the same batch: B = prompts x G
completions per generation, the same micro-batch, one optimizer step per generation, the
same number of iterations, KL coefficient, clip range, temperature and response length."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.grpo_throughput import ours_config, parse_args, rule_reward, trl_config
from ppo.config import batch_sizes, num_total_batches, resolved_kl_in


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
@pytest.mark.parametrize("argv, batch", [([], 32), (["--prompts", "3", "--num-generations", "2", "--micro", "2",
                                                     "--steps", "2", "--response-length", "16"], 6)])
def test_same_settings_on_both_sides(tmp_path: Path, estimator, argv, batch):
    args = parse_args(argv)
    ours, trl = ours_config(args, tmp_path, estimator), trl_config(args, tmp_path, estimator)
    sizes = batch_sizes(ours)
    assert sizes.batch_size == trl.generation_batch_size == batch
    assert ours.num_generations == trl.num_generations == args.num_generations
    assert sizes.per_device_train_batch_size == trl.per_device_train_batch_size == args.micro
    # one generate() call of the whole batch on our side, as TRL's transformers path does
    assert sizes.local_rollout_forward_batch_size == batch
    # one optimizer step per generation: ours one mini-batch x one epoch; TRL accumulates a whole generation batch
    assert ours.num_mini_batches * ours.num_ppo_epochs == 1
    assert trl.gradient_accumulation_steps == trl.steps_per_generation == batch // args.micro
    assert trl.num_iterations == 1
    # prompts x G per iteration over as many iterations (--steps timed + 1 warm-up)
    assert num_total_batches(ours, num_prompts=args.prompts * (args.steps + 1)) == trl.max_steps == args.steps + 1
    assert ours.kl_coef == trl.beta == {"grpo": 0.04, "rloo": 0.05}[estimator]
    assert resolved_kl_in(ours) == {"grpo": "loss", "rloo": "reward"}[estimator]
    assert ours.cliprange == trl.epsilon == 0.2
    assert ours.temperature == trl.temperature == 0.7
    assert ours.response_length == trl.max_completion_length == args.response_length
    assert ours.learning_rate == trl.learning_rate


def test_micro_batch_must_divide_the_generation_batch():
    with pytest.raises(SystemExit):
        parse_args(["--prompts", "3", "--num-generations", "2", "--micro", "4"])


def test_rule_reward():
    assert rule_reward("") == 0.0
    assert rule_reward("one two  three\nfour") == 4 / 20
    assert rule_reward(" ".join(["w"] * 25)) == 1.0
