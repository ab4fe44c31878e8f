"""A readable PPO-ptx trainer for language models on ``accelerate``.

One iteration (``PPOTrainer.step``) is the loop of the textbook's sec. 15.2.7, eq. 15.7-15.12
(ch. 15); the objective is Ouyang et al. 2022, eq. 2. The math is in ``ppo.core``, sampling
and padding in ``rlhf.generation``; this file moves data between them and the models.

1. **Rollout** (``rollout`` -> a ``Rollout``). ``batch_size`` prompts (``ppo.config.batch_sizes``,
   split over processes) are sampled in chunks of ``local_rollout_forward_batch_size`` with
   ``rlhf.generation.sample_responses``: left padding, logits / temperature with no
   top-k/top-p, each response cut after its first stop token. The stored log-probs are
   recomputed from the same logits / temperature, so sampling and the PPO ratio see one
   distribution. Log-probs of the policy and of the reference (the same network with LoRA
   adapters disabled, or a frozen copy) and the critic's values are computed in
   micro-batches (``response_statistics``).
2. **Scoring.** Responses are decoded to text and scored by the reward models through
   their OWN tokenizers (so a reward model may use another tokenizer than the policy),
   each normalised with its saved ``reward_stats.json``; the weighted sum is the score.
3. **Advantages** (``advantage_estimator``). ``core.token_rewards`` puts -beta * KL on every
   token (unless ``kl_in`` is "loss") and the score on the last real token (eq. 15.8). gae:
   ``core.compute_gae`` gives advantages and returns, advantages are whitened over the whole
   rollout (all processes). The critic-free estimators build no value model: grpo, dr_grpo
   and rloo compare each response's summed reward with the other ``num_generations - 1``
   responses to its prompt (sampled in the same generate call); reinforce_pp normalises the
   returns over the rollout.
4. **Update.** ``num_ppo_epochs`` passes over ``num_mini_batches`` shuffled mini-batches; each micro-batch adds
   policy_loss (+ beta * k3 per token when ``kl_in`` is "loss", aggregated with it by
   ``loss_aggregation``) + vf_coef * value_loss (gae) + ptx_coef * NLL(pretraining micro-batch)
   (eq. 15.12) to the gradient; one optimizer step per mini-batch
   (``gradient_accumulation_steps`` micro-batches).
5. **KL controller** update with the mean per-sequence KL (k1 summed over tokens, nats
   per response: Ziegler's units).
6. **Monitors** (``ppo.monitors``): the iteration's metrics (with ``objective/gold`` from an
   optional gold judge) are checked for signs of reward hacking; each check warns once.

Determinism: every random draw of iteration ``t`` (prompt order, sampling, shuffling,
pretraining order) is seeded from ``(seed, t, ...)``, and data positions are pure
functions of ``t``, so a run resumed from a checkpoint follows the same trajectory as
an uninterrupted one (tested).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, set_seed
from peft import LoraConfig, get_peft_model
from rich.console import Console
from rich.table import Table
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, Trainer, get_scheduler
from trl.trainer.utils import disable_dropout_in_model

from ppo import core
from ppo.config import (
    GROUP_ESTIMATORS,
    PPOConfig,
    PPOConfigError,
    every,
    needs_critic,
    resolved_kl_estimator,
    resolved_kl_in,
    resolved_loss_aggregation,
    resolved_settings,
    resume_target,
    stop_token_id,
    validate_inputs,
)
from ppo.monitors import RewardHackingMonitor
from reward_model.modeling import RewardModel
from rlhf.generation import (
    SampledResponses,
    check_prompt_groups,
    decode_responses,
    derive_seed,
    generate_completions,
    grouped_prompt_cache,
    pad_prompts_and_responses,
    position_ids_from_mask,
    prompt_messages,
    prompt_text,
    right_pad,
    sample_responses,
)
from rlhf.models import load_model
from rlhf.outputs import cut_log, start_output_folder, write_text
from rlhf.precision import PrecisionChoice, random_token_ids, resolve_precision

RewardFn = Callable[[list[str], list[str], list[list[int]]], Sequence[float]]
GoldFn = Callable[[list, list[str]], Sequence[float]]
INVALID_LOGPROB = 1.0  # same constant in policy and reference log-probs at padding, so KL there is 0


def generator(*parts) -> torch.Generator:
    """A torch.Generator seeded with ``derive_seed(*parts)``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def mean_token_logprob(policy: nn.Module, temperature: float) -> torch.Tensor:
    """Mean log pi(token | prefix) over a few random token sequences, at the sampling
    temperature: precision auto's numerics check (``rlhf.precision``). Its bf16 - fp32
    difference is the mean per-token log-ratio that bf16 alone would add to the PPO ratio
    (Schulman et al. 2017, eq. 7) and to the KL estimate (eq. 15.7)."""
    device = next(policy.parameters()).device
    ids = random_token_ids(policy.config.vocab_size).to(device)
    logits = policy(input_ids=ids, use_cache=False).logits
    return core.token_logprobs(logits[:, :-1], ids[:, 1:], temperature).mean()


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def shared_prompt_logits(causal_lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         prompt_width: int, group_size: int) -> torch.Tensor:
    """The logits at columns ``prompt_width - 1`` .. end (those that predict the response
    tokens: ``logits_to_keep`` = R + 1) of rows whose prompt repeats in consecutive groups of
    ``group_size`` rows (the G answers to one prompt), with each prompt run once.

    All but the last column of the distinct prompts go through the decoder with a KV cache,
    repeated G times (``rlhf.generation.grouped_prompt_cache``); the last prompt column and
    the responses then go through the whole network on that cache. Gradients flow through
    the cache into the prompts' activations, so this is the full forward's function up to
    float rounding (tests/ppo/test_shared_prompt.py) at k (P - 1) + G k (R + 1) token passes
    instead of G k (P + R) for k prompts of width P and responses of width R.

    The tokens of both parts are embedded in one call and the LM head runs once: where the
    embedding and the head share one weight (SmolLM2, 49,152 x 576), each call adds a dense
    gradient of that size, and the second embedding's would arrive in the middle of the
    backward pass, while the prompts' activations are still held.
    """
    check_prompt_groups(input_ids[:, :prompt_width], group_size)
    prefix = prompt_width - 1
    if prefix == 0:  # one-token prompts: nothing to share
        return causal_lm(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits
    distinct = input_ids[::group_size, :prefix]
    tail = input_ids[:, prefix:]  # the last prompt column and the responses
    embeddings = causal_lm.get_input_embeddings()(torch.cat([distinct.flatten(), tail.flatten()]))
    prefix_embeds, tail_embeds = embeddings.split([distinct.numel(), tail.numel()])
    cache = grouped_prompt_cache(causal_lm, input_ids[:, :prefix], attention_mask[:, :prefix], group_size,
                                 prompt_embeds=prefix_embeds.view(*distinct.shape, -1))
    return causal_lm(inputs_embeds=tail_embeds.view(*tail.shape, -1), attention_mask=attention_mask,
                     position_ids=position_ids_from_mask(attention_mask)[:, prefix:], cache=cache,
                     use_cache=True).logits


class PolicyAndValue(nn.Module):
    """Policy (causal LM, optionally PEFT) + critic, one module so one optimizer and one
    DDP/FSDP wrapper cover both.

    The critic is either a separate ``*ForSequenceClassification`` network (initialised
    from a reward model) read at EVERY position, or a zero-initialised linear head on the
    policy's last hidden state; ``with_value_head=False`` (the critic-free estimators) builds
    neither, and ``forward`` then returns no values. ``forward`` also computes the
    pretraining NLL when given a ptx batch, so every micro-batch is a single wrapped forward
    call (DDP requirement).
    """

    def __init__(self, policy: nn.Module, value_model: nn.Module | None = None, with_value_head: bool = True):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.has_critic = value_model is not None or with_value_head
        if value_model is None and with_value_head:
            hidden = policy.config.get_text_config().hidden_size if hasattr(policy.config, "get_text_config") \
                else policy.config.hidden_size
            self.value_head = nn.Linear(hidden, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        else:
            self.value_head = None

    def forward(self, input_ids, attention_mask, ptx_input_ids=None, with_values: bool = True,
                logits_to_keep: int = 0, prompt_groups: tuple[int, int] | None = None):
        """(logits, values, ptx_nll). ``logits_to_keep`` > 0: logits at the last that many
        positions only (transformers' argument: the hidden states are cut before the LM head,
        whose vocabulary-wide output dominates the activations); values stay full width.
        ``prompt_groups`` = (prompt width P, G), without values: the rows are groups of G
        answers to one prompt and each prompt runs once (``shared_prompt_logits``; the
        logits are those of ``logits_to_keep`` = R + 1)."""
        with_values = with_values and self.has_critic
        if prompt_groups is not None:
            if with_values:
                raise ValueError("prompt_groups: the values are read at every prompt column; expected no values")
            logits = shared_prompt_logits(self.policy, input_ids, attention_mask, *prompt_groups)
            return logits, None, self._ptx_nll(ptx_input_ids)
        position_ids = position_ids_from_mask(attention_mask)
        shared_trunk = with_values and self.value_model is None
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=shared_trunk, use_cache=False, logits_to_keep=logits_to_keep)
        values = None
        if with_values:
            if shared_trunk:
                hidden = out.hidden_states[-1]
                values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
            else:
                hf = self.value_model
                backbone = getattr(hf, hf.base_model_prefix)
                hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).last_hidden_state
                values = hf.score(hidden).squeeze(-1)
            values = values.float()
        return out.logits, values, self._ptx_nll(ptx_input_ids)

    def _ptx_nll(self, ptx_input_ids):
        if ptx_input_ids is None:
            return None
        return core.pretraining_nll(self.policy(input_ids=ptx_input_ids, use_cache=False).logits, ptx_input_ids)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


class PretrainBlocks:
    """Pretraining text, tokenised, concatenated (EOS between paragraphs) and cut into
    equal blocks; read as an endless stream that reshuffles every pass.

    ``position`` counts blocks consumed by ALL processes; block ``g`` of the stream is
    ``perm(seed, g // n)[g % n]``, so the stream is a function of the position only.
    """

    def __init__(self, text: str, tokenizer, block_length: int, seed: int):
        ids: list[int] = []
        for paragraph in text.split("\n\n"):
            if paragraph.strip():
                ids += tokenizer(paragraph.strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        n = len(ids) // block_length
        if n == 0:
            raise PPOConfigError(f"pretrain_data: {len(ids)} tokens, fewer than one block of ptx_max_length="
                                 f"{block_length}")
        self.blocks = torch.tensor(ids[:n * block_length]).view(n, block_length)
        self.seed = seed
        self.position = 0

    def batch(self, size: int, process_index: int, num_processes: int) -> torch.Tensor:
        """This process's share of the next ``size * num_processes`` blocks; advances."""
        start = self.position + process_index * size
        n = len(self.blocks)
        rows = []
        for g in range(start, start + size):
            order = torch.randperm(n, generator=generator(self.seed, "ptx", g // n))
            rows.append(self.blocks[order[g % n]])
        self.position += size * num_processes
        return torch.stack(rows)


@dataclass
class TrainerState:
    """What accelerate's save_state does not know about: iteration, KL coefficient, data
    positions, the reward-hacking monitor (so a resumed run does not warn twice)."""

    step: int = 0
    kl_state: dict | None = None
    ptx_position: int = 0
    prompt_position: int = 0
    monitor_state: dict | None = None

    def state_dict(self) -> dict:
        return {"step": self.step, "kl_state": self.kl_state, "ptx_position": self.ptx_position,
                "prompt_position": self.prompt_position, "monitor_state": self.monitor_state}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.kl_state = state["step"], state["kl_state"]
        self.ptx_position, self.prompt_position = state["ptx_position"], state["prompt_position"]
        self.monitor_state = state.get("monitor_state")  # absent in checkpoints from before the monitors


# ---------------------------------------------------------------------------
# Reward models (scored on decoded text, through their own tokenizers)
# ---------------------------------------------------------------------------


class TextRewardModel:
    """A reward model folder (or ensemble), frozen on a given device, that scores decoded text.

    ``score`` returns (normalised, raw), each averaged over members; a member's score is
    normalised with its saved mean/std (`reward_model.modeling.RewardModel`). A reward model
    from elsewhere (no ``reward_stats.json``) is normalised with the mean/std of its scores
    on a reference sample, which `fit_stats_on_policy` draws from the initial policy."""

    def __init__(self, path: str, device, dtype=torch.float32):
        self.path = path
        self.model = RewardModel.load(path, dtype=dtype)
        self.model.members = [member.to(device).requires_grad_(False) for member in self.model.members]

    @staticmethod
    def inputs(prompts: list[str], completions: list[str], reward_format: str) -> tuple[list, list]:
        """What the reward model reads for ``reward_format`` "text" (prompt + completion) or "chat"."""
        if reward_format == "chat":
            return [prompt_messages(p) for p in prompts], [[{"role": "assistant", "content": c}] for c in completions]
        return prompts, completions

    @torch.no_grad()
    def fit_stats_on_policy(self, policy, tokenizer, prompts: list[str], prompt_ids: list[list[int]],
                            config: PPOConfig, sizes, stop_id: int, verbose: bool = True) -> None:
        """Fit missing statistics on one response of the initial policy to each of the first
        ``batch_size`` prompts of a rollout (the run's sampling settings, a seed of its own, the
        global RNG left as it was). The same on every process and on a resumed run (the
        trainer calls it before any checkpoint loads), so all of them normalise alike."""
        missing = self.model.missing_stats()
        if not missing:
            return
        n = min(len(prompts), sizes.batch_size)
        chunk = sizes.local_rollout_forward_batch_size
        completions = []
        with torch.random.fork_rng(devices=[]):
            for start in range(0, n, chunk):
                sampled = sample_responses(policy, prompt_ids[start:min(start + chunk, n)],
                                           pad_token_id=tokenizer.pad_token_id, stop_id=stop_id,
                                           max_new_tokens=config.response_length, temperature=config.temperature,
                                           seed=derive_seed(config.seed, "reward_stats", start))
                completions += decode_responses(tokenizer, sampled.responses)
        rm_prompts, rm_completions = self.inputs(prompts[:n], completions, config.reward_format)
        self.model.fit_missing_stats(rm_prompts, rm_completions, f"{n} responses of the initial policy",
                                     batch_size=config.per_device_train_batch_size)
        if verbose:
            stats = self.model.stats[missing[0]]
            print(f"note: reward model {self.path} has no reward_stats.json (not saved by reward_model.train): "
                  f"normalising with mean {stats['mean']:.4g} and std {stats['std']:.4g} of its scores on {n} "
                  "responses of the initial policy", file=sys.stderr)

    @torch.no_grad()
    def score(self, prompts: list, completions: list) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.model.member_scores(prompts, completions, normalize=False, batch_size=max(len(prompts), 1))
        return self.model.normalize(raw).mean(0).cpu(), raw.mean(0).cpu()


# ---------------------------------------------------------------------------
# What a rollout holds
# ---------------------------------------------------------------------------


@dataclass
class ResponseStatistics:
    """Per-token outputs of the models on given responses: one 1-D tensor (n_i,) per response."""

    logprobs: list[torch.Tensor]  # log pi(token) of the policy under logits / temperature
    ref_logprobs: list[torch.Tensor]  # log pi_SFT(token) of the reference, same temperature
    values: list[torch.Tensor]  # the critic's V(s_t), s_t = prompt + the tokens before token t
    entropy: list[torch.Tensor]  # entropy (nats) of the policy's tempered next-token distribution at s_t

    def __add__(self, other: ResponseStatistics) -> ResponseStatistics:
        return ResponseStatistics(self.logprobs + other.logprobs, self.ref_logprobs + other.ref_logprobs,
                                  self.values + other.values, self.entropy + other.entropy)


@dataclass
class Rollout:
    """One iteration's experience on this process: b episodes, responses right-padded to R tokens."""

    prompts: list[str]  # b prompt texts
    prompt_ids: list[list[int]]  # b chat-templated prompts, as token ids
    responses: list[list[int]]  # b sampled responses, token ids up to and including the stop token
    completions: list[str]  # b responses decoded to text (no special tokens), as the reward models read them
    has_stop: torch.Tensor  # (b,) bool: the response ended with the stop token
    response_mask: torch.Tensor  # (b, R) bool: a real response token (not padding)
    logprobs: torch.Tensor  # (b, R) log pi_old(token) under logits / T; INVALID_LOGPROB at padding
    ref_logprobs: torch.Tensor  # (b, R) log pi_SFT(token), same temperature; INVALID_LOGPROB at padding
    values: torch.Tensor  # (b, R) the critic's V(s_t) at rollout time; 0 at padding and without a critic
    entropy: torch.Tensor  # (b, R) policy entropy per position (nats); 0 at padding
    scores: torch.Tensor  # (b,) weighted sum of normalised reward-model scores (+ reward_fn)
    final_scores: torch.Tensor  # (b,) scores after score_clip and missing_eos_penalty: what the reward holds
    raw_scores: torch.Tensor  # (b,) the same weighted sum of raw (unnormalised) scores
    kl_per_sequence: torch.Tensor  # (b,) k1 KL summed over each response (nats per response)
    rewards: torch.Tensor  # (b, R) per-token rewards of eq. 15.8: -beta * KL, + the score on the last real token
    non_score_rewards: torch.Tensor  # (b, R) the -beta * KL part of rewards
    advantages: torch.Tensor  # (b, R) advantages of advantage_estimator (PPOTrainer._advantages); 0 at padding
    returns: torch.Tensor  # (b, R) value targets: GAE advantages (before whitening) + values; 0 without a critic
    timings: dict[str, float]  # seconds spent in generation, forward passes and scoring


def rollout_metrics(rollout: Rollout, num_generations: int = 1, has_critic: bool = True) -> dict[str, torch.Tensor]:
    """This process's rollout statistics for metrics.jsonl (the caller averages them over processes).

    With groups (``num_generations`` >= 2) also TRL GRPO's ``reward_std`` (std of the scores over
    the rollout) and ``frac_reward_zero_std`` (share of groups whose scores are all equal: their
    group-relative advantages are 0, they teach nothing)."""
    mask = rollout.response_mask
    lengths = mask.sum(1).float()
    metrics = {
        "objective/scores": rollout.scores.mean(), "reward/raw": rollout.raw_scores.mean(),
        "objective/rlhf_reward": rollout.rewards.sum(1).mean(),
        "objective/non_score_reward": rollout.non_score_rewards.sum(1).mean(),
        "objective/kl": rollout.kl_per_sequence.mean(),
        "kl/per_token": rollout.kl_per_sequence.sum() / lengths.sum(),
        "objective/entropy": core.masked_mean(rollout.entropy, mask),
        "response/length": lengths.mean(), "response/stop_rate": rollout.has_stop.float().mean(),
    }
    if has_critic:
        explained = core.explained_variance(rollout.values, rollout.returns, mask)
        metrics["value/explained_variance"] = torch.nan_to_num(explained, nan=0.0)
    if num_generations >= 2:
        group_std = rollout.final_scores.view(-1, num_generations).std(1)
        metrics["reward_std"] = rollout.final_scores.std()
        metrics["frac_reward_zero_std"] = torch.isclose(group_std, torch.zeros_like(group_std)).float().mean()
    return metrics


def tracker_init_kwargs(config: PPOConfig) -> dict:
    """Per-tracker start-up options from TrainingArguments' fields: the run name, trackio's Space."""
    kwargs = {}
    if "wandb" in config.report_to and config.run_name:
        kwargs["wandb"] = {"name": config.run_name}
    if "trackio" in config.report_to:
        kwargs["trackio"] = {"space_id": config.trackio_space_id} if config.trackio_space_id else {}
    return kwargs


def sample_table(rollout: Rollout, step: int, rows: int = 4) -> Table:
    """The first ``rows`` episodes of a rollout: prompt, completion, score, KL, stop."""
    table = Table(title=f"samples at step {step}", show_lines=True)
    for column in ("prompt", "completion", "score", "KL", "stop"):
        table.add_column(column)
    for i in range(min(rows, len(rollout.prompts))):
        table.add_row(prompt_text(rollout.prompts[i])[:80], rollout.completions[i][:200], f"{rollout.scores[i]:.3f}",
                      f"{rollout.kl_per_sequence[i]:.3f}", "yes" if rollout.has_stop[i] else "no")
    return table


# ---------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------


class PPOTrainer:
    """PPO-ptx on ``accelerate``. ``PPOTrainer(config).train()`` returns a summary dict.

    Args:
        config: a ``PPOConfig``.
        reward_fn: optional ``f(prompts, completions, response_token_ids) -> scores``
            used instead of (or, with reward models, added to) the reward models, for
            rule-based rewards and tests. Its scores count as already normalised.
        policy: optional already-built causal LM to start from (instead of loading
            ``config.sft_model_path``); the tokenizer still comes from ``sft_model_path``.
        accelerator: optional ``accelerate.Accelerator`` (one is made from the config).
        gold_fn: optional ``f(prompts, completions) -> scores`` of a gold judge, evaluated
            on each rollout's own pairs; its mean is logged as ``objective/gold`` and
            watched by the reward-hacking monitor (``ppo.monitors``). Not used for training.
    """

    def __init__(self, config: PPOConfig, reward_fn: RewardFn | None = None, policy: nn.Module | None = None,
                 accelerator=None, gold_fn: GoldFn | None = None):
        if not config.reward_models and reward_fn is None:
            raise PPOConfigError("reward_models: at least one reward model (or a reward_fn in Python) is needed")
        self.config = config
        # The Accelerator is made once the precision is known (after the policy loads, for
        # precision auto's numerics check); until then PartialState knows the processes.
        processes = accelerator.state if accelerator is not None else PartialState(cpu=config.use_cpu)
        # Everything that can be wrong with the inputs is checked before loading weights.
        inputs = validate_inputs(config, world_size=processes.num_processes)
        self.sizes, self.num_iterations = inputs["batch_sizes"], inputs["num_total_batches"]
        # The inputs are good: replace an earlier run now if asked (once every process has checked the folder).
        self.output_dir = Path(config.output_dir)
        processes.wait_for_everyone()
        if processes.is_main_process:
            start_output_folder(self.output_dir, config.overwrite)
        self.tokenizer, self.prompts, self.prompt_ids = inputs["tokenizer"], inputs["prompts"], inputs["prompt_ids"]
        self.stop_id = stop_token_id(self.tokenizer, config.stop_token)
        self.ptx = (PretrainBlocks(inputs["pretrain_text"], self.tokenizer, config.ptx_max_length, config.seed)
                    if config.ptx_coef > 0 else None)
        self.reward_fn = reward_fn
        self.gold_fn = gold_fn
        self.monitor = RewardHackingMonitor(target_kl=config.target_kl)
        set_seed(config.seed)

        policy = policy if policy is not None else load_model(config.sft_model_path, seed=config.seed,
                                                                  pad_token_id=self.tokenizer.pad_token_id)
        policy.to(processes.device)
        disable_dropout_in_model(policy)
        policy.config.use_cache = False
        if accelerator is not None:
            mixed = accelerator.mixed_precision
            self.precision = PrecisionChoice("bf16" if mixed == "bf16" else "fp32", config.precision,
                                             f"the accelerator passed in has mixed_precision {mixed!r}")
        else:
            self.precision = resolve_precision(config.precision, processes.device.type,
                                               loss_fn=functools.partial(mean_token_logprob, policy,
                                                                         config.temperature))
        if accelerator is None:
            # accelerate keeps one process-wide state: a trainer made earlier in this process
            # (another variant of a pipeline run) may have fixed another mixed precision in it.
            AcceleratorState._reset_state()
        if processes.is_main_process:
            if config.precision == "auto":  # measured: say what and why
                print(self.precision.note(), file=sys.stderr)
            write_text(self.output_dir / "precision.json", json.dumps(self.precision.record(), indent=2) + "\n")
        self.accelerator = accelerator or Accelerator(
            mixed_precision="bf16" if self.precision.precision == "bf16" else "no",
            cpu=config.use_cpu,  # true when no CUDA device exists (PPOConfig)
            log_with=config.report_to or None,
            # trackers that write files (tensorboard) write under output_dir/runs/<run_name>
            project_config=ProjectConfiguration(project_dir=config.output_dir,
                                                logging_dir=str(Path(config.output_dir) / "runs")),
        )
        acc = self.accelerator
        self.ref_policy = None
        if config.use_lora:
            policy = get_peft_model(policy, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                       lora_dropout=0.0, target_modules="all-linear",
                                                       task_type="CAUSAL_LM"))
        else:
            self.ref_policy = copy.deepcopy(policy).eval().requires_grad_(False).to(acc.device)
        value_model = None
        self.has_critic = needs_critic(config)
        if acc.is_main_process and (not self.has_critic or config.num_generations > 1 or config.kl_in
                                    or config.loss_aggregation):  # settings other than plain PPO's: say which
            print("note: " + ", ".join(f"{key} {value}" for key, value in resolved_settings(config).items()
                                       if key != "critic") + ("" if self.has_critic else "; no value model"),
                  file=sys.stderr)
        # TRL GRPO's shortcut (num_iterations 1): with one optimizer step per rollout the policy
        # that sampled is the one the update differentiates, so the update's own forward gives
        # the old log-probs (ratio 1) and the rollout skips the policy's forward. Only where
        # nothing before the update reads them: no critic (its values come from that forward)
        # and the KL in the loss, not in the reward.
        self.logprobs_from_update = (not self.has_critic and resolved_kl_in(config) == "loss"
                                     and config.num_ppo_epochs == 1 and config.num_mini_batches == 1)
        # G answers per prompt: each prompt runs once in the sampler's prompt forward and, for a
        # micro-batch of whole groups, in the reference's forward and in the policy's when it has
        # no critic (shared_prompt_logits). Not with gradient checkpointing, which turns
        # transformers' KV cache off.
        self.share_prompts = config.num_generations > 1 and not config.gradient_checkpointing
        if acc.is_main_process and config.value_init == "reward_model" and not self.has_critic:
            print(f"note: value_init reward_model ignored: {config.advantage_estimator} has no critic", file=sys.stderr)
        if config.value_init == "reward_model" and self.has_critic:
            folder = RewardModel.member_dirs(config.reward_models[0]["path"])[0]  # an ensemble's critic copies its first member
            value_model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
            disable_dropout_in_model(value_model)
        if config.gradient_checkpointing:  # keep only each layer's input, recompute the rest in the backward
            for network in (policy, value_model):  # the frozen reference copy runs without gradients
                if network is not None:  # renamed in transformers 5.x (the old name warns); the same first argument
                    enable = (getattr(network, "activation_checkpointing_enable", None)
                              or network.gradient_checkpointing_enable)
                    enable({"use_reentrant": False})  # non-reentrant: frozen LoRA embeddings need no grad hook
        model = PolicyAndValue(policy, value_model, with_value_head=self.has_critic)
        self.reward_models = [(TextRewardModel(e["path"], acc.device), e["weight"]) for e in config.reward_models]
        for rm, _ in self.reward_models:  # reward models from elsewhere: statistics from the initial policy
            rm.fit_stats_on_policy(policy.to(acc.device), self.tokenizer, self.prompts, self.prompt_ids, config,
                                   self.sizes, self.stop_id, verbose=acc.is_main_process)

        # TrainingArguments' optim (default adamw_torch_fused: 4x the for-loop AdamW's speed on a
        # CPU) with its learning rate, betas and epsilon, as transformers' Trainer builds it.
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(config)
        optimizer = optimizer_cls([{"params": [p for p in model.parameters() if p.requires_grad],
                                    "weight_decay": config.weight_decay}], **optimizer_kwargs)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        # One scheduler step per PPO iteration; not passed to prepare() (which would step it
        # once per optimizer step and process), but checkpointed with the run.
        # transformers' schedulers (lr_scheduler_type, warmup_steps), counted in PPO iterations.
        self.scheduler = get_scheduler(config.lr_scheduler_type, self.optimizer.optimizer,
                                       num_warmup_steps=config.get_warmup_steps(self.num_iterations),
                                       num_training_steps=self.num_iterations,
                                       scheduler_specific_kwargs=config.lr_scheduler_kwargs or None)
        self.kl_ctl = (core.AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
                       if config.target_kl is not None else core.FixedKLController(config.kl_coef))
        self.state = TrainerState()
        acc.register_for_checkpointing(self.scheduler)  # the TrainerState goes to trainer_state.json
        if resume_target(config):
            self.load_checkpoint(resume_target(config))

    # -- properties ----------------------------------------------------------------

    @property
    def unwrapped(self) -> PolicyAndValue:
        return self.accelerator.unwrap_model(self.model)

    @property
    def local_rollout_size(self) -> int:
        return self.sizes.local_batch_size

    # -- rollout ---------------------------------------------------------------------

    @property
    def generation_chunk(self) -> int:
        """Prompts per generate() call on this process."""
        return self.sizes.local_rollout_forward_batch_size

    def _step_prompts(self, step: int) -> list[int]:
        """Indices (into self.prompts) of this process's episodes for iteration ``step``: its
        share of the ``batch_size / num_generations`` distinct prompts of the iteration, each
        repeated ``num_generations`` times in a row (one group). Distinct prompt g of the
        global stream is ``perm(seed, g // n)[g % n]``, so it depends on (seed, iteration,
        position) only, whatever the process count; the stream reshuffles on every pass."""
        n, group = len(self.prompts), self.config.num_generations
        size = self.local_rollout_size // group
        start = step * (self.sizes.batch_size // group) + self.accelerator.process_index * size
        indices = []
        for g in range(start, start + size):
            order = torch.randperm(n, generator=generator(self.config.seed, "prompts", g // n))
            indices += [int(order[g % n])] * group
        return indices

    def sample(self, prompt_ids: list[list[int]], seed: int, max_new_tokens: int | None = None,
               keep_scores: bool = False, group_size: int = 1) -> SampledResponses:
        """One response per prompt from the current policy: ``rlhf.generation.sample_responses``
        with this run's temperature, stop token, response length and mixed precision
        (``group_size``: consecutive groups of equal prompts, each run once)."""
        with self.accelerator.autocast():
            return sample_responses(self.unwrapped.policy, prompt_ids, pad_token_id=self.tokenizer.pad_token_id,
                                    stop_id=self.stop_id, max_new_tokens=max_new_tokens or self.config.response_length,
                                    temperature=self.config.temperature, seed=seed, keep_scores=keep_scores,
                                    group_size=group_size)

    def _can_share_prompts(self, rows) -> bool:
        """Whether prompts are shared and the rollout rows ``rows`` are whole groups in order (the
        G answers to a prompt are consecutive rows from a multiple of G), so that each prompt
        can run once."""
        group = self.config.num_generations
        return (self.share_prompts and len(rows) % group == 0
                and all(rows[i] == rows[i - i % group] + i % group and rows[i - i % group] % group == 0
                        for i in range(len(rows))))

    @torch.no_grad()
    def response_statistics(self, prompt_ids: list[list[int]], responses: list[list[int]],
                            with_policy: bool = True, whole_groups: bool = False) -> ResponseStatistics:
        """Policy and reference log-probs, values and entropy of given responses, in one forward pass.
        ``with_policy=False``: the reference's alone (the policy's entries are 0). ``whole_groups``:
        the rows are groups of num_generations answers to one prompt (each prompt runs once)."""
        temperature, device = self.config.temperature, self.accelerator.device
        input_ids, attention_mask, _, width_p = pad_prompts_and_responses(prompt_ids, responses,
                                                                           self.tokenizer.pad_token_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        tokens = input_ids[:, width_p:]
        # logits at column P + j - 1 predict response token j: only columns P - 1 .. end go through the LM head
        keep = tokens.shape[1] + 1
        groups = (width_p, self.config.num_generations) if whole_groups else None
        with self.accelerator.autocast():
            ref_logits = self._reference_logits(input_ids, attention_mask, logits_to_keep=keep, prompt_groups=groups)
            if with_policy:
                logits, critic_values, _ = self.unwrapped(input_ids, attention_mask, with_values=self.has_critic,
                                                          logits_to_keep=keep,
                                                          prompt_groups=None if self.has_critic else groups)
        ref_logprobs = core.token_logprobs(ref_logits[:, :-1], tokens, temperature)
        logprobs = entropy = values = torch.zeros_like(ref_logprobs)
        if with_policy:
            logprobs, entropy = core.token_logprobs_and_entropy(logits[:, :-1], tokens, temperature)
            # no critic: values 0, so the Rollout keeps one shape for every estimator
            if critic_values is not None:
                values = critic_values[:, width_p - 1:-1]
        lengths = [len(r) for r in responses]
        return ResponseStatistics(*([x[i, :n].cpu() for i, n in enumerate(lengths)]
                                    for x in (logprobs, ref_logprobs, values, entropy)))

    def _reference_logits(self, input_ids, attention_mask, logits_to_keep: int = 0, prompt_groups=None):
        """Logits of pi_SFT (at the last ``logits_to_keep`` positions; 0: all): the same network
        with LoRA adapters disabled, or the frozen copy. ``prompt_groups`` as in
        ``PolicyAndValue.forward``."""
        network = self.ref_policy if self.ref_policy is not None else self.unwrapped.policy
        adapters_off = self.unwrapped.policy.disable_adapter() if self.ref_policy is None else contextlib.nullcontext()
        with adapters_off:
            if prompt_groups is not None:
                return shared_prompt_logits(network, input_ids, attention_mask, *prompt_groups)
            return network(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                           position_ids=position_ids_from_mask(attention_mask), logits_to_keep=logits_to_keep).logits

    @torch.no_grad()
    def _score(self, prompts: list[str], completions: list[str], responses: list[list[int]]):
        """(score, raw score) per response: weighted sum over reward models (+ reward_fn)."""
        n = len(prompts)
        score, raw = torch.zeros(n), torch.zeros(n)
        if self.reward_fn is not None:
            planted = torch.as_tensor(list(self.reward_fn(prompts, completions, responses)), dtype=torch.float32)
            score, raw = score + planted, raw + planted
        if self.reward_models:
            rm_prompts, rm_completions = TextRewardModel.inputs(prompts, completions, self.config.reward_format)
            for rm, weight in self.reward_models:
                for start in range(0, n, self.config.per_device_train_batch_size):
                    end = start + self.config.per_device_train_batch_size
                    normed, raw_part = rm.score(rm_prompts[start:end], rm_completions[start:end])
                    score[start:end] += weight * normed
                    raw[start:end] += weight * raw_part
        return score, raw

    def rollout(self, step: int) -> Rollout:
        """Generate, score and compute advantages for iteration ``step`` (this process's share)."""
        cfg, acc = self.config, self.accelerator
        timings = {}
        t0 = time.perf_counter()
        indices = self._step_prompts(step)
        prompt_ids = [self.prompt_ids[i] for i in indices]
        responses, has_stop = [], []
        chunk_size = self.generation_chunk
        chunks_per_process = self.local_rollout_size // chunk_size
        for c in range(chunks_per_process):
            global_chunk = acc.process_index * chunks_per_process + c  # seeds do not depend on the process count
            sampled = self.sample(prompt_ids[c * chunk_size:(c + 1) * chunk_size],
                                  seed=derive_seed(cfg.seed, "sample", step, global_chunk),
                                  group_size=cfg.num_generations if self.share_prompts else 1)
            responses += sampled.responses
            has_stop += sampled.has_stop
        timings["time/generation"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        stats = ResponseStatistics([], [], [], [])
        micro = cfg.per_device_train_batch_size
        for start in range(0, len(responses), micro):
            end = start + micro
            stats += self.response_statistics(prompt_ids[start:end], responses[start:end],
                                              with_policy=not self.logprobs_from_update,
                                              whole_groups=self._can_share_prompts(range(start, min(end, len(responses)))))
        timings["time/forward"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        prompts = [self.prompts[i] for i in indices]
        completions = decode_responses(self.tokenizer, responses)
        scores, raw_scores = self._score(prompts, completions, responses)
        timings["time/scoring"] = time.perf_counter() - t0

        # Per-token rewards (eq. 15.8), GAE and whitening on the padded (b, R) batch.
        mask = right_pad([torch.ones(len(r), dtype=torch.bool) for r in responses], False)
        logprobs = right_pad(stats.logprobs, INVALID_LOGPROB)
        ref_logprobs = right_pad(stats.ref_logprobs, INVALID_LOGPROB)
        values = right_pad(stats.values)
        has_stop = torch.tensor(has_stop)
        if self.logprobs_from_update:  # logprobs filled in by update(); the reward holds no KL (kl_in "loss")
            kl = torch.zeros_like(logprobs)
        else:
            kl = core.kl_penalty(logprobs, ref_logprobs, resolved_kl_estimator(cfg), clamp=cfg.kl_clamp)
        # kl_in "loss" (GRPO): the KL is a loss term (_micro_loss), the reward holds the score alone.
        kl_coef_in_reward = self.kl_ctl.value if resolved_kl_in(cfg) == "reward" else 0.0
        rewards, non_score_rewards = core.token_rewards(
            scores, kl, mask, kl_coef_in_reward, score_clip=cfg.score_clip,
            missing_stop_penalty=cfg.missing_eos_penalty, has_stop=has_stop)
        pooled = self._sum_across_processes if acc.num_processes > 1 else None  # whiten over the whole rollout
        if cfg.whiten_rewards:  # gae only (PPOConfig)
            rewards = core.whiten(rewards, mask, shift_mean=False, sum_across_processes=pooled)
        advantages, returns = self._advantages(rewards, values, mask, pooled)

        return Rollout(
            prompts=prompts, prompt_ids=prompt_ids, responses=responses, completions=completions,
            has_stop=has_stop, response_mask=mask, logprobs=logprobs, ref_logprobs=ref_logprobs, values=values,
            entropy=right_pad(stats.entropy), scores=scores, raw_scores=raw_scores,
            final_scores=core.final_scores(scores, cfg.score_clip, cfg.missing_eos_penalty, has_stop),
            kl_per_sequence=core.sequence_kl(logprobs, ref_logprobs, mask), rewards=rewards,
            non_score_rewards=non_score_rewards, advantages=advantages, returns=returns, timings=timings)

    def _advantages(self, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, pooled) -> tuple:
        """(advantages, returns), both (b, R) and 0 at padding, for ``advantage_estimator``.

        gae: GAE on the per-token rewards, advantages whitened over the whole rollout.
        reinforce_pp: returns of the per-token rewards normalised over the whole rollout.
        grpo, dr_grpo, rloo: one advantage per response from its sequence reward (its
        score, minus kl_coef x its summed KL when kl_in is "reward", as TRL's RLOO does),
        relative to the other responses to its prompt, broadcast to its tokens; not whitened.
        Without a critic the returns are 0 (nothing regresses on them)."""
        cfg = self.config
        if cfg.advantage_estimator == "gae":
            advantages, returns = core.compute_gae(rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)
            return core.whiten(advantages, mask, sum_across_processes=pooled), returns
        if cfg.advantage_estimator == "reinforce_pp":
            advantages = core.reinforce_pp_advantages(rewards, mask, cfg.gamma, sum_across_processes=pooled)
            return advantages, torch.zeros_like(rewards)
        sequence_rewards = rewards.sum(1)  # score + (-kl_coef x KL summed over the response)
        if cfg.advantage_estimator == "rloo":
            per_response = core.rloo_advantages(sequence_rewards, cfg.num_generations)
        else:
            per_response = core.group_relative_advantages(sequence_rewards, cfg.num_generations,
                                                          scale=cfg.advantage_estimator == "grpo")
        advantages = torch.where(mask, per_response.unsqueeze(1), torch.zeros_like(rewards))
        return advantages, torch.zeros_like(rewards)

    def _sum_across_processes(self, x: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(x.to(self.accelerator.device), reduction="sum").cpu()

    # -- update ----------------------------------------------------------------------

    def update(self, rollout: Rollout, step: int) -> dict:
        """num_ppo_epochs x num_mini_batches shuffled mini-batches; one optimizer step per mini-batch.
        With ``logprobs_from_update`` it also fills in the rollout's policy log-probs, entropy and
        KL from its forward passes (the rollout skipped them)."""
        cfg, acc, device = self.config, self.accelerator, self.accelerator.device
        local_mini, micro = self.sizes.local_mini_batch_size, cfg.per_device_train_batch_size
        micro_per_mini = cfg.gradient_accumulation_steps
        n = len(rollout.responses)
        totals: dict[str, float] = {}
        count = 0
        self.model.train()
        group = cfg.num_generations
        for epoch in range(cfg.num_ppo_epochs):
            # whole groups shuffled, so a micro-batch of them runs each prompt once (G = 1: rows shuffled)
            groups = torch.randperm(n // group, generator=generator(cfg.seed, "shuffle", step, epoch))
            order = (groups[:, None] * group + torch.arange(group)).flatten().tolist()
            for mini_start in range(0, n, local_mini):
                mini = order[mini_start:mini_start + local_mini]
                for k in range(micro_per_mini):
                    idx = mini[k * micro:(k + 1) * micro]
                    ptx_ids = (self.ptx.batch(cfg.ptx_batch_size, acc.process_index, acc.num_processes).to(device)
                               if self.ptx is not None else None)
                    sync = contextlib.nullcontext() if k == micro_per_mini - 1 else acc.no_sync(self.model)
                    with sync:
                        loss, stats = self._micro_loss(rollout, idx, ptx_ids)
                        acc.backward(loss / micro_per_mini)
                    for key, value in stats.items():
                        totals[key] = totals.get(key, 0.0) + float(value)
                    count += 1
                grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(grad_norm) * micro_per_mini
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()
        if self.logprobs_from_update:
            rollout.kl_per_sequence = core.sequence_kl(rollout.logprobs, rollout.ref_logprobs, rollout.response_mask)
        return {key: value / count for key, value in totals.items()}

    def _micro_loss(self, rollout: Rollout, idx: list[int], ptx_ids):
        """The loss of eq. 15.12 on the episodes ``idx`` of the rollout (+ a pretraining micro-batch)."""
        cfg, device = self.config, self.accelerator.device
        prompts = [rollout.prompt_ids[i] for i in idx]
        responses = [rollout.responses[i] for i in idx]
        input_ids, attention_mask, response_mask, width_p = pad_prompts_and_responses(prompts, responses,
                                                                                       self.tokenizer.pad_token_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        width_r = response_mask.shape[1]

        def rows(x: torch.Tensor) -> torch.Tensor:  # the rollout's (b, R) tensor cut to these rows and width
            return x[idx, :width_r].to(device)

        mask = response_mask.to(device)
        groups = (width_p, cfg.num_generations) if self._can_share_prompts(idx) and not self.has_critic else None
        with self.accelerator.autocast():  # logits at columns P - 1 .. end only (response_statistics)
            logits, values, ptx_nll = self.model(input_ids, attention_mask, ptx_input_ids=ptx_ids,
                                                 with_values=self.has_critic, logits_to_keep=width_r + 1,
                                                 prompt_groups=groups)
        old_logprobs = rows(rollout.logprobs)
        if self.logprobs_from_update:  # this forward stands in for the rollout's (see __init__)
            logprobs, entropy = core.token_logprobs_and_entropy(logits[:, :-1], input_ids[:, width_p:],
                                                                cfg.temperature)
            old_logprobs = logprobs.detach()
            rollout.logprobs[idx, :width_r] = torch.where(mask.bool(), old_logprobs, INVALID_LOGPROB).cpu()
            rollout.entropy[idx, :width_r] = torch.where(mask.bool(), entropy, 0.0).cpu()
        else:
            logprobs = core.token_logprobs(logits[:, :-1], input_ids[:, width_p:], cfg.temperature)
        kl_loss = None
        if resolved_kl_in(cfg) == "loss":
            # GRPO's beta x KL per token (Shao et al. 2024, eq. 3) against the rollout's reference
            # log-probs; the log-ratio is 0 at padding, so no inf there reaches the gradient.
            ref_logprobs = torch.where(mask.bool(), rows(rollout.ref_logprobs), logprobs.detach())
            token_kl = core.kl_penalty(logprobs, ref_logprobs, resolved_kl_estimator(cfg), clamp=cfg.kl_clamp)
            kl_loss = self.kl_ctl.value * token_kl
        pg_loss, pg_stats = core.policy_loss(logprobs, old_logprobs, rows(rollout.advantages), mask,
                                             cfg.cliprange, aggregation=resolved_loss_aggregation(cfg),
                                             normalizer=cfg.response_length, extra_token_loss=kl_loss)
        loss = pg_loss
        stats = {"loss/policy_avg": pg_loss.detach(), "policy/clipfrac_avg": pg_stats["clip_fraction"],
                 "policy/approxkl_avg": pg_stats["approx_kl"], "val/ratio": pg_stats["ratio_mean"]}
        if self.has_critic:
            vf_loss, vf_stats = core.value_loss(values[:, width_p - 1:-1], rows(rollout.values), rows(rollout.returns),
                                                mask, cfg.cliprange_value)
            loss = loss + cfg.vf_coef * vf_loss
            stats |= {"loss/value_avg": vf_loss.detach(), "val/clipfrac_avg": vf_stats["value_clip_fraction"]}
        if kl_loss is not None:  # TRL GRPO's "kl": the mean per-token estimate in the loss term
            stats["kl"] = core.masked_mean(token_kl.detach(), mask)
        if ptx_nll is not None:
            loss = loss + cfg.ptx_coef * ptx_nll
            stats["loss/ptx_nll"] = ptx_nll.detach()
        stats["loss/total"] = loss.detach()
        return loss, stats

    # -- one iteration, metrics ------------------------------------------------------

    def step(self) -> dict:
        """One PPO iteration: rollout, update, KL-controller update. Returns its metrics."""
        cfg, acc = self.config, self.accelerator
        step = self.state.step
        t0 = time.perf_counter()
        rollout = self.rollout(step)
        t1 = time.perf_counter()
        kl_coef_used = self.kl_ctl.value
        lr_used = self.scheduler.get_last_lr()[0]
        train_stats = self.update(rollout, step)
        t2 = time.perf_counter()

        local = (rollout_metrics(rollout, cfg.num_generations, self.has_critic)
                 | {k: torch.tensor(v) for k, v in train_stats.items()})
        if self.gold_fn is not None:
            local["objective/gold"] = torch.tensor(list(self.gold_fn(rollout.prompts, rollout.completions)),
                                                   dtype=torch.float32).mean()
        keys = sorted(local)
        values = torch.stack([torch.as_tensor(local[k], dtype=torch.float32) for k in keys]).to(acc.device)
        values = acc.reduce(values, reduction="mean").cpu().tolist()
        metrics = dict(zip(keys, values))
        # Ziegler's controller: mean per-sequence KL (nats/response), n = episodes this iteration.
        self.kl_ctl.update(metrics["objective/kl"], self.sizes.batch_size)
        self.state.step = step + 1
        self.state.kl_state = self.kl_ctl.state_dict()
        self.state.prompt_position = self.state.step * self.sizes.batch_size // cfg.num_generations  # distinct prompts
        self.state.ptx_position = self.ptx.position if self.ptx is not None else 0
        metrics |= {"step": step + 1, "episode": (step + 1) * self.sizes.batch_size, "kl/coef": kl_coef_used,
                    "kl/next_coef": self.kl_ctl.value, "lr": lr_used, "time/rollout": t1 - t0, "time/update": t2 - t1,
                    "time/step": t2 - t0, "samples_per_second": self.sizes.batch_size / (t2 - t0)}
        metrics |= rollout.timings
        # Every process sees the same averaged metrics, so the monitor's state is the same on all.
        for warning in self.monitor.update(metrics):
            if acc.is_main_process:
                tqdm.write(warning.message, file=sys.stderr)  # above the progress bar
        metrics |= self.monitor.flags()
        self.state.monitor_state = self.monitor.state_dict()
        self.last_rollout = rollout
        return metrics

    def log(self, metrics: dict) -> None:
        """One line of metrics.jsonl (main process); every ``logging_steps`` iterations also
        the report_to trackers (accelerate's), at step = the iteration."""
        acc = self.accelerator
        if acc.is_main_process:
            with open(self.output_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(metrics) + "\n")
        if self.config.report_to and metrics["step"] % every(self.config.logging_steps, self.num_iterations) == 0:
            acc.log({key: value for key, value in metrics.items() if key != "step"}, step=metrics["step"])

    # -- checkpoints -------------------------------------------------------------------

    def save_checkpoint(self, folder: str | Path | None = None) -> Path:
        """accelerate save_state (model weights as safetensors, optimizer, RNG) + scheduler and TrainerState."""
        folder = Path(folder or self.output_dir / "checkpoints" / f"step_{self.state.step}")
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(folder), safe_serialization=True)
        if self.accelerator.is_main_process:
            (folder / "trainer_state.json").write_text(json.dumps(self.state.state_dict(), indent=2))
        return folder

    def load_checkpoint(self, folder: str | Path) -> None:
        if str(folder) == "latest":
            found = sorted((self.output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
            if not found:
                raise PPOConfigError(f"resume_from_checkpoint: no checkpoint under {self.output_dir / 'checkpoints'}")
            folder = found[-1]
        self.accelerator.load_state(str(folder))
        self.state.load_state_dict(json.loads((Path(folder) / "trainer_state.json").read_text()))
        if self.state.kl_state is not None:
            self.kl_ctl.load_state_dict(self.state.kl_state)
        if self.state.monitor_state is not None:
            self.monitor.load_state_dict(self.state.monitor_state)
        if self.ptx is not None:
            self.ptx.position = self.state.ptx_position
        if self.accelerator.is_main_process:  # the steps after the checkpoint run again: log each once
            cut_log(self.output_dir / "metrics.jsonl", self.state.step)

    def save_policy(self, folder: str | Path | None = None) -> Path:
        """The trained policy (LoRA merged into a copy) + tokenizer, loadable by load_model."""
        folder = Path(folder or self.output_dir / "policy")
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            policy = copy.deepcopy(self.unwrapped.policy)
            if self.config.use_lora:
                policy = policy.merge_and_unload()
            policy.save_pretrained(folder, safe_serialization=True)
            self.tokenizer.save_pretrained(folder)
        return folder

    # -- the loop ----------------------------------------------------------------------

    def train(self, max_steps: int | None = None) -> dict:
        """Run until ``num_iterations`` PPO iterations (``total_episodes`` / ``batch_size``, or
        ``max_steps`` more, to simulate an interruption); checkpoint every ``save_steps``;
        save the policy at the end."""
        cfg, acc = self.config, self.accelerator
        total = self.num_iterations
        if cfg.report_to:
            acc.init_trackers(cfg.run_name or "ppo",
                              config={k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
                              | resolved_settings(cfg) | self.precision.record(),
                              init_kwargs=tracker_init_kwargs(cfg))
        log_every, save_every = every(cfg.logging_steps, total), every(cfg.save_steps, total)
        end = total if max_steps is None else min(total, self.state.step + max_steps)
        bar = tqdm(total=total, initial=self.state.step, desc="ppo", unit="it",
                   disable=cfg.disable_tqdm or not acc.is_local_main_process)
        history = []
        start_time = time.perf_counter()
        while self.state.step < end:
            metrics = self.step()
            history.append(metrics)
            self.log(metrics)
            step = self.state.step
            bar.update(1)
            bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.2f}")
            if acc.is_main_process and step % log_every == 0:
                bar.write(f"step {step}: score {metrics['objective/scores']:.4f} KL/seq {metrics['objective/kl']:.3f} "
                          f"beta {metrics['kl/coef']:.4f} len {metrics['response/length']:.1f}")
            if acc.is_main_process and cfg.sample_table_every and step % cfg.sample_table_every == 0:
                Console().print(sample_table(self.last_rollout, step))
            if save_every and step % save_every == 0:
                self.save_checkpoint()
        bar.close()
        finished = self.state.step >= total
        checkpoint = self.save_checkpoint() if (finished and history) else None
        policy_dir = self.save_policy() if finished else None
        if cfg.report_to:
            acc.end_training()
        return {
            "steps": self.state.step, "history": history, "final": history[-1] if history else {},
            "first": history[0] if history else {}, "kl_coef": self.kl_ctl.value,
            "output_dir": str(self.output_dir), "policy_dir": str(policy_dir) if policy_dir else None,
            "checkpoint": str(checkpoint) if checkpoint else None, "seconds": time.perf_counter() - start_time,
            "precision": self.precision.record(),
            "warnings": [{"iteration": w.iteration, "check": w.check, "seen": w.seen, "message": w.message}
                         for w in self.monitor.warnings],
        }

    def generate(self, prompts: list[str], max_new_tokens: int | None = None, seed: int = 0) -> list[str]:
        """Completions of the current policy for evaluation: ``rlhf.generation.generate_completions``
        with this run's sampling, in chunks of ``local_rollout_forward_batch_size``."""
        policy = self.unwrapped.policy
        was_training = policy.training
        with self.accelerator.autocast():
            texts = generate_completions(policy, prompts, self.tokenizer,
                                         max_new_tokens=max_new_tokens or self.config.response_length,
                                         temperature=self.config.temperature, stop_token=self.config.stop_token,
                                         seed=seed, batch_size=self.generation_chunk)
        policy.train(was_training)
        return texts
