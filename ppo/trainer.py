"""A readable PPO-ptx trainer for language models on ``accelerate``.

One iteration (``PPOTrainer.step``) is the loop of sec. 15.2.7 / eq. 15.7-15.12:

1. **Rollout.** ``rollout_batch_size`` prompts (split over processes) are sampled in
   chunks of ``generation_batch_size`` with left padding. Sampling uses logits / temperature
   with no top-k/top-p; the stored log-probs are recomputed from the same logits /
   temperature, so sampling and the PPO ratio see one distribution. Each response is
   cut after its first stop token (``response_mask`` covers it; ``has_stop`` says
   whether it came). Log-probs of the policy and of the reference (the same network
   with LoRA adapters disabled, or a frozen copy) and the critic's values are computed
   in micro-batches.
2. **Scoring.** Responses are decoded to text and scored by the reward models through
   their OWN tokenizers (so a reward model may use another tokenizer than the policy),
   each normalised with its saved ``reward_stats.json``; the weighted sum is the score.
3. **Advantages.** ``token_rewards`` puts -beta * KL on every token and the score on the
   last real token (eq. 15.8); ``compute_gae`` gives advantages and returns; advantages
   are whitened over the whole rollout (all processes).
4. **Update.** ``ppo_epochs`` passes over shuffled mini-batches; each micro-batch adds
   policy_loss + vf_coef * value_loss + ptx_coef * NLL(pretraining micro-batch)
   (eq. 15.12) to the gradient; one optimizer step per mini-batch.
5. **KL controller** update with the mean per-sequence KL (k1 summed over tokens, nats
   per response: Ziegler's units).

Determinism: every random draw of iteration ``t`` (prompt order, sampling, shuffling,
pretraining order) is seeded from ``(seed, t, ...)``, and data positions are pure
functions of ``t``, so a run resumed from a checkpoint follows the same trajectory as
an uninterrupted one (tested).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ppo import core
from ppo.config import PPOConfig, PPOConfigError, stop_token_id, validate_inputs

RewardFn = Callable[[list[str], list[str], list[list[int]]], Sequence[float]]
INVALID_LOGPROB = 1.0  # same constant in policy and reference log-probs at padding, so KL there is 0


def derive_seed(*parts) -> int:
    """A reproducible 63-bit seed from any tuple of ints/strings."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


def generator(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from the first real token (left padding does not shift them)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)


class PolicyAndValue(nn.Module):
    """Policy (causal LM, optionally PEFT) + critic, one module so one optimizer and one
    DDP/FSDP wrapper cover both.

    The critic is either a separate ``*ForSequenceClassification`` network (initialised
    from a reward model) read at EVERY position, or a zero-initialised linear head on the
    policy's last hidden state. ``forward`` also computes the pretraining NLL when given a
    ptx batch, so every micro-batch is a single wrapped forward call (DDP requirement).
    """

    def __init__(self, policy: nn.Module, value_model: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        if value_model is None:
            hidden = policy.config.get_text_config().hidden_size if hasattr(policy.config, "get_text_config") \
                else policy.config.hidden_size
            self.value_head = nn.Linear(hidden, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        else:
            self.value_head = None

    def forward(self, input_ids, attention_mask, ptx_input_ids=None, with_values: bool = True):
        position_ids = position_ids_from_mask(attention_mask)
        shared_trunk = with_values and self.value_model is None
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=shared_trunk, use_cache=False)
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
        ptx_nll = None
        if ptx_input_ids is not None:
            ptx_logits = self.policy(input_ids=ptx_input_ids, use_cache=False).logits[:, :-1].float()
            ptx_nll = nn.functional.cross_entropy(ptx_logits.reshape(-1, ptx_logits.shape[-1]),
                                                  ptx_input_ids[:, 1:].reshape(-1))
        return out.logits, values, ptx_nll


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def response_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) at ``tokens``; ``logits`` aligned with ``tokens``."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def collate(prompts: list[list[int]], responses: list[list[int]], pad_id: int):
    """Left-padded prompts + right-padded responses in one tensor.

    Returns input_ids, attention_mask, response_mask (b, R) and P, the padded prompt
    width: response token j of a row sits at column P + j and is predicted by the
    logits at column P + j - 1.
    """
    width_p = max(len(p) for p in prompts)
    width_r = max(len(r) for r in responses)
    b = len(prompts)
    input_ids = torch.full((b, width_p + width_r), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    response_mask = torch.zeros((b, width_r), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        input_ids[i, width_p - len(p):width_p] = torch.tensor(p)
        attention_mask[i, width_p - len(p):width_p + len(r)] = 1
        input_ids[i, width_p:width_p + len(r)] = torch.tensor(r)
        response_mask[i, :len(r)] = 1
    return input_ids, attention_mask, response_mask, width_p


def truncate_at_stop(tokens: list[int], stop_id: int) -> tuple[list[int], bool]:
    """Tokens up to and including the first stop token, and whether it was there."""
    if stop_id in tokens:
        return tokens[:tokens.index(stop_id) + 1], True
    return tokens, False


def pad_rows(rows: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)


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
    """What accelerate's save_state does not know about: iteration, KL coefficient, data positions."""

    step: int = 0
    kl_state: dict | None = None
    ptx_position: int = 0
    prompt_position: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "kl_state": self.kl_state, "ptx_position": self.ptx_position,
                "prompt_position": self.prompt_position}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.kl_state = state["step"], state["kl_state"]
        self.ptx_position, self.prompt_position = state["ptx_position"], state["prompt_position"]


# ---------------------------------------------------------------------------
# Reward models (scored on decoded text, through their own tokenizers)
# ---------------------------------------------------------------------------


class TextRewardModel:
    """A reward model folder (or ensemble), frozen on a given device, that scores decoded text.

    ``score`` returns (normalised, raw), each averaged over members; a member's score is
    normalised with its saved mean/std (`reward_model.modeling.RewardModel`)."""

    def __init__(self, path: str, device, dtype=torch.float32):
        from reward_model.modeling import RewardModel

        self.model = RewardModel.load(path, dtype=dtype)
        self.model.members = [member.to(device).requires_grad_(False) for member in self.model.members]

    @torch.no_grad()
    def score(self, prompts: list, completions: list) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.model.member_scores(prompts, completions, normalize=False, batch_size=max(len(prompts), 1))
        return self.model.normalize(raw).mean(0).cpu(), raw.mean(0).cpu()


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
            ``config.policy_model``); the tokenizer still comes from ``policy_model``.
        accelerator: optional ``accelerate.Accelerator`` (one is made from the config).
    """

    def __init__(self, config: PPOConfig, reward_fn: RewardFn | None = None, policy: nn.Module | None = None,
                 accelerator=None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        if not config.reward_models and reward_fn is None:
            raise PPOConfigError("reward_models: at least one reward model (or a reward_fn in Python) is needed")
        self.config = config
        self.accelerator = accelerator or Accelerator(
            mixed_precision="bf16" if config.bf16 else "no",
            cpu=config.use_cpu or not torch.cuda.is_available(),
            log_with=None if config.report_to == "none" else config.report_to,
            project_dir=config.output_dir,
        )
        acc = self.accelerator
        # Everything that can be wrong with the inputs is checked before loading weights.
        inputs = validate_inputs(config, world_size=acc.num_processes)
        self.tokenizer, self.prompts, self.prompt_ids = inputs["tokenizer"], inputs["prompts"], inputs["prompt_ids"]
        self.stop_id = stop_token_id(self.tokenizer, config.stop_token)
        self.ptx = (PretrainBlocks(inputs["pretrain_text"], self.tokenizer, config.ptx_max_length, config.seed)
                    if config.ptx_coef > 0 else None)
        self.reward_fn = reward_fn
        set_seed(config.seed)

        from rlhf.models import load_model

        policy = policy if policy is not None else load_model(config.policy_model, seed=config.seed)
        disable_dropout(policy)
        policy.config.use_cache = False
        self.ref_policy = None
        if config.use_lora:
            from peft import LoraConfig, get_peft_model

            policy = get_peft_model(policy, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                       lora_dropout=0.0, target_modules="all-linear",
                                                       task_type="CAUSAL_LM"))
        else:
            self.ref_policy = copy.deepcopy(policy).eval().requires_grad_(False).to(acc.device)
        value_model = None
        if config.value_init == "reward_model":
            from transformers import AutoModelForSequenceClassification

            folder = Path(config.reward_models[0]["path"])
            if (folder / "ensemble.json").exists():
                folder = folder / json.loads((folder / "ensemble.json").read_text())["members"][0]
            value_model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
            disable_dropout(value_model)
        model = PolicyAndValue(policy, value_model)
        self.reward_models = [(TextRewardModel(e["path"], acc.device), e["weight"]) for e in config.reward_models]

        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        # One scheduler step per PPO iteration; not passed to prepare() (which would step it
        # once per optimizer step and process), but checkpointed with the run.
        total = config.num_steps
        schedule = (lambda it: max(0.0, 1.0 - it / total)) if config.lr_schedule == "linear" else (lambda it: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer, schedule)
        self.kl_ctl = (core.AdaptiveKLController(config.init_kl_coef, config.target_kl, config.kl_horizon)
                       if config.target_kl is not None else core.FixedKLController(config.init_kl_coef))
        self.state = TrainerState()
        acc.register_for_checkpointing(self.scheduler, self.state)
        self.output_dir = Path(config.output_dir)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if config.resume_from:
            self.load_checkpoint(config.resume_from)

    # -- properties ----------------------------------------------------------------

    @property
    def unwrapped(self) -> PolicyAndValue:
        return self.accelerator.unwrap_model(self.model)

    @property
    def local_rollout_size(self) -> int:
        return self.config.rollout_batch_size // self.accelerator.num_processes

    # -- rollout ---------------------------------------------------------------------

    @property
    def generation_chunk(self) -> int:
        """Prompts per generate() call on this process."""
        return self.config.generation_batch_size or self.config.micro_batch_size

    def _step_prompts(self, step: int) -> list[int]:
        """Indices (into self.prompts) of this process's prompts for iteration ``step``;
        the global stream reshuffles the prompt list on every pass."""
        n, size = len(self.prompts), self.local_rollout_size
        start = step * self.config.rollout_batch_size + self.accelerator.process_index * size
        indices = []
        for g in range(start, start + size):
            order = torch.randperm(n, generator=generator(self.config.seed, "prompts", g // n))
            indices.append(int(order[g % n]))
        return indices

    @torch.no_grad()
    def _sample(self, prompt_ids: list[list[int]], seed: int, max_new_tokens: int | None = None,
                return_scores: bool = False):
        """Sample one response per prompt (left padding; T-scaled logits, no top-k/top-p)."""
        from transformers import GenerationConfig

        policy = self.unwrapped.policy
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=self.accelerator.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids],
                                      device=self.accelerator.device)
        generation_config = GenerationConfig(
            do_sample=True, temperature=self.config.temperature, top_k=0, top_p=1.0,
            max_new_tokens=max_new_tokens or self.config.max_new_tokens, eos_token_id=self.stop_id,
            pad_token_id=pad, use_cache=True, output_scores=return_scores, return_dict_in_generate=True,
        )
        torch.manual_seed(seed)
        was_training = policy.training
        policy.eval()
        with self.accelerator.autocast():
            out = policy.generate(input_ids=input_ids, attention_mask=attention_mask,
                                  generation_config=generation_config)
        policy.train(was_training)
        new = out.sequences[:, width:].tolist()
        responses, has_stop = zip(*(truncate_at_stop(row, self.stop_id) for row in new))
        if return_scores:
            return list(responses), list(has_stop), out.scores
        return list(responses), list(has_stop)

    @torch.no_grad()
    def _forward_rollout(self, prompts: list[list[int]], responses: list[list[int]]):
        """Policy/reference log-probs, values and entropy for a chunk, as per-row tensors."""
        cfg, device = self.config, self.accelerator.device
        input_ids, attention_mask, response_mask, width_p = collate(prompts, responses, self.tokenizer.pad_token_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        response_mask = response_mask.to(device)
        tokens = input_ids[:, width_p:]
        with self.accelerator.autocast():
            logits, values, _ = self.unwrapped(input_ids, attention_mask)
            ref_logits = self._reference_logits(input_ids, attention_mask)
        logits = logits[:, width_p - 1:-1].float() / cfg.temperature
        logprobs = response_logprobs(logits, tokens, 1.0)
        ref_logprobs = response_logprobs(ref_logits[:, width_p - 1:-1], tokens, cfg.temperature)
        values = values[:, width_p - 1:-1]
        entropy = core.entropy_from_logits(logits)
        rows = []
        for i, r in enumerate(responses):
            n = len(r)
            rows.append({"logprobs": logprobs[i, :n].cpu(), "ref_logprobs": ref_logprobs[i, :n].cpu(),
                         "values": values[i, :n].cpu(), "entropy": entropy[i, :n].cpu()})
        return rows

    def _reference_logits(self, input_ids, attention_mask):
        """Logits of pi_SFT: the same network with LoRA adapters disabled, or the frozen copy."""
        position_ids = position_ids_from_mask(attention_mask)
        if self.ref_policy is not None:
            return self.ref_policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   use_cache=False).logits
        policy = self.unwrapped.policy
        with policy.disable_adapter():
            return policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).logits

    def reference_logprobs(self, prompts: list[list[int]], responses: list[list[int]]) -> list[torch.Tensor]:
        """Reference log-probs (under logits / temperature) of given responses, per row."""
        return [row["ref_logprobs"] for row in self._forward_rollout(prompts, responses)]

    @torch.no_grad()
    def _score(self, prompts: list[str], completions: list[str], responses: list[list[int]]):
        """(score, raw score) per response: weighted sum over reward models (+ reward_fn)."""
        n = len(prompts)
        score, raw = torch.zeros(n), torch.zeros(n)
        if self.reward_fn is not None:
            planted = torch.as_tensor(list(self.reward_fn(prompts, completions, responses)), dtype=torch.float32)
            score, raw = score + planted, raw + planted
        if self.reward_models:
            if self.config.reward_format == "chat":
                rm_prompts = [[{"role": "user", "content": p}] for p in prompts]
                rm_completions = [[{"role": "assistant", "content": c}] for c in completions]
            else:
                rm_prompts, rm_completions = prompts, completions
            for rm, weight in self.reward_models:
                for start in range(0, n, self.config.micro_batch_size):
                    end = start + self.config.micro_batch_size
                    normed, raw_part = rm.score(rm_prompts[start:end], rm_completions[start:end])
                    score[start:end] += weight * normed
                    raw[start:end] += weight * raw_part
        return score, raw

    def rollout(self, step: int) -> dict:
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
            chunk = prompt_ids[c * chunk_size:(c + 1) * chunk_size]
            global_chunk = acc.process_index * chunks_per_process + c
            r, s = self._sample(chunk, seed=derive_seed(cfg.seed, "sample", step, global_chunk))
            responses += r
            has_stop += s
        timings["time/generation"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows = []
        for start in range(0, len(responses), cfg.micro_batch_size):
            end = start + cfg.micro_batch_size
            rows += self._forward_rollout(prompt_ids[start:end], responses[start:end])
        timings["time/forward"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        prompt_texts = [self.prompts[i] for i in indices]
        completions = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        completions = [c.strip() for c in completions]
        scores, raw_scores = self._score(prompt_texts, completions, responses)
        timings["time/scoring"] = time.perf_counter() - t0

        # Per-token rewards (eq. 15.8), GAE and whitening on the padded (b, R) batch.
        mask = pad_rows([torch.ones(len(r), dtype=torch.bool) for r in responses], False)
        logprobs = pad_rows([row["logprobs"] for row in rows], INVALID_LOGPROB)
        ref_logprobs = pad_rows([row["ref_logprobs"] for row in rows], INVALID_LOGPROB)
        values = pad_rows([row["values"] for row in rows])
        has_stop_t = torch.tensor(has_stop)
        kl = core.kl_penalty(logprobs, ref_logprobs, cfg.kl_estimator, clamp=cfg.kl_clamp)
        rewards, non_score = core.token_rewards(scores, kl, mask, self.kl_ctl.value, score_clip=cfg.score_clip,
                                                missing_stop_penalty=cfg.missing_stop_penalty, has_stop=has_stop_t)
        if cfg.whiten_rewards:
            rewards = self._whiten(rewards, mask, shift_mean=False)
        advantages, returns = core.compute_gae(rewards, values, mask, gamma=cfg.gamma, lam=cfg.lam)
        advantages = self._whiten(advantages, mask)
        k1_per_sequence = torch.where(mask, logprobs - ref_logprobs, 0.0).sum(1)

        return {
            "prompt_ids": prompt_ids, "responses": responses, "has_stop": has_stop_t, "mask": mask,
            "logprobs": logprobs, "ref_logprobs": ref_logprobs, "values": values, "rewards": rewards,
            "non_score_rewards": non_score, "advantages": advantages, "returns": returns, "scores": scores,
            "raw_scores": raw_scores, "kl_per_sequence": k1_per_sequence,
            "entropy": pad_rows([row["entropy"] for row in rows]), "prompts": prompt_texts,
            "completions": completions, "timings": timings,
        }

    def _whiten(self, x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
        """core.whiten on one process; the same statistics pooled over all processes otherwise."""
        if self.accelerator.num_processes == 1:
            return core.whiten(x, mask, shift_mean=shift_mean)
        valid = mask.bool()
        sums = torch.stack([torch.where(valid, x, 0.0).sum(), torch.where(valid, x * x, 0.0).sum(),
                            valid.sum().to(x.dtype)]).to(self.accelerator.device)
        s, s2, n = self.accelerator.reduce(sums, reduction="sum").cpu()
        mean = s / n
        var = (s2 / n - mean**2) * n / (n - 1)
        out = (x - mean) * torch.rsqrt(var + 1e-8)
        if not shift_mean:
            out = out + mean
        return torch.where(valid, out, 0.0)

    # -- update ----------------------------------------------------------------------

    def update(self, batch: dict, step: int) -> dict:
        """ppo_epochs x shuffled mini-batches; one optimizer step per mini-batch."""
        cfg, acc, device = self.config, self.accelerator, self.accelerator.device
        local_mini = cfg.mini_batch_size // acc.num_processes
        micro_per_mini = local_mini // cfg.micro_batch_size
        n = len(batch["responses"])
        totals: dict[str, float] = {}
        count = 0
        self.model.train()
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=generator(cfg.seed, "shuffle", step, epoch)).tolist()
            for mini_start in range(0, n, local_mini):
                mini = order[mini_start:mini_start + local_mini]
                for k in range(micro_per_mini):
                    idx = mini[k * cfg.micro_batch_size:(k + 1) * cfg.micro_batch_size]
                    ptx_ids = (self.ptx.batch(cfg.ptx_batch_size, acc.process_index, acc.num_processes).to(device)
                               if self.ptx is not None else None)
                    sync = contextlib.nullcontext() if k == micro_per_mini - 1 else acc.no_sync(self.model)
                    with sync:
                        loss, stats = self._micro_loss(batch, idx, ptx_ids)
                        acc.backward(loss / micro_per_mini)
                    for key, value in stats.items():
                        totals[key] = totals.get(key, 0.0) + float(value)
                    count += 1
                grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(grad_norm) * micro_per_mini
                self.optimizer.step()
                self.optimizer.zero_grad()
        self.scheduler.step()
        return {key: value / count for key, value in totals.items()}

    def _micro_loss(self, batch: dict, idx: list[int], ptx_ids):
        cfg, device = self.config, self.accelerator.device
        prompts = [batch["prompt_ids"][i] for i in idx]
        responses = [batch["responses"][i] for i in idx]
        input_ids, attention_mask, response_mask, width_p = collate(prompts, responses, self.tokenizer.pad_token_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        width_r = response_mask.shape[1]
        take = lambda name: batch[name][idx, :width_r].to(device)  # noqa: E731
        mask = response_mask.to(device)
        with self.accelerator.autocast():
            logits, values, ptx_nll = self.model(input_ids, attention_mask, ptx_input_ids=ptx_ids)
        logprobs = response_logprobs(logits[:, width_p - 1:-1], input_ids[:, width_p:], cfg.temperature)
        values = values[:, width_p - 1:-1]
        pg_loss, pg_stats = core.policy_loss(logprobs, take("logprobs"), take("advantages"), mask, cfg.clip_range)
        vf_loss, vf_stats = core.value_loss(values, take("values"), take("returns"), mask, cfg.clip_range_value)
        loss = pg_loss + cfg.vf_coef * vf_loss
        stats = {"loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(),
                 "policy/clip_fraction": pg_stats["clip_fraction"], "policy/approx_kl": pg_stats["approx_kl"],
                 "policy/ratio_mean": pg_stats["ratio_mean"], "value/clip_fraction": vf_stats["value_clip_fraction"]}
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
        batch = self.rollout(step)
        t1 = time.perf_counter()
        kl_coef_used = self.kl_ctl.value
        lr_used = self.scheduler.get_last_lr()[0]
        train_stats = self.update(batch, step)
        t2 = time.perf_counter()

        mask = batch["mask"]
        lengths = mask.sum(1).float()
        ev = core.explained_variance(batch["values"], batch["returns"], mask)
        local = {
            "reward/score": batch["scores"].mean(), "reward/raw": batch["raw_scores"].mean(),
            "reward/total": batch["rewards"].sum(1).mean(), "reward/non_score": batch["non_score_rewards"].sum(1).mean(),
            "kl/per_sequence": batch["kl_per_sequence"].mean(),
            "kl/per_token": batch["kl_per_sequence"].sum() / lengths.sum(),
            "policy/entropy": core.masked_mean(batch["entropy"], mask),
            "value/explained_variance": torch.nan_to_num(ev, nan=0.0),
            "response/length": lengths.mean(), "response/stop_rate": batch["has_stop"].float().mean(),
        }
        local |= {k: torch.tensor(v) for k, v in train_stats.items()}
        keys = sorted(local)
        values = torch.stack([torch.as_tensor(local[k], dtype=torch.float32) for k in keys]).to(acc.device)
        values = acc.reduce(values, reduction="mean").cpu().tolist()
        metrics = dict(zip(keys, values))
        # Ziegler's controller: mean per-sequence KL (nats/response), n = episodes this iteration.
        self.kl_ctl.update(metrics["kl/per_sequence"], cfg.rollout_batch_size)
        self.state.step = step + 1
        self.state.kl_state = self.kl_ctl.state_dict()
        self.state.prompt_position = self.state.step * cfg.rollout_batch_size
        self.state.ptx_position = self.ptx.position if self.ptx is not None else 0
        metrics |= {"step": step + 1, "kl/coef": kl_coef_used, "kl/next_coef": self.kl_ctl.value,
                    "lr": lr_used, "time/rollout": t1 - t0, "time/update": t2 - t1,
                    "time/step": t2 - t0, "samples_per_second": cfg.rollout_batch_size / (t2 - t0)}
        metrics |= {k: v for k, v in batch["timings"].items()}
        self._last_batch = batch
        return metrics

    def _log(self, metrics: dict) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            with open(self.output_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(metrics) + "\n")
        acc.log(metrics, step=metrics["step"])

    def _sample_table(self, batch: dict, step: int, rows: int = 4) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"samples at step {step}", show_lines=True)
        for column in ("prompt", "completion", "score", "KL", "stop"):
            table.add_column(column)
        for i in range(min(rows, len(batch["prompts"]))):
            table.add_row(batch["prompts"][i][:80], batch["completions"][i][:200], f"{batch['scores'][i]:.3f}",
                          f"{batch['kl_per_sequence'][i]:.3f}", "yes" if batch["has_stop"][i] else "no")
        Console().print(table)

    # -- checkpoints -------------------------------------------------------------------

    def save_checkpoint(self, folder: str | Path | None = None) -> Path:
        """accelerate save_state (model, optimizer, RNG) + scheduler and TrainerState."""
        folder = Path(folder or self.output_dir / "checkpoints" / f"step_{self.state.step}")
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(folder), safe_serialization=False)
        if self.accelerator.is_main_process:
            (folder / "trainer_state.json").write_text(json.dumps(self.state.state_dict(), indent=2))
        return folder

    def load_checkpoint(self, folder: str | Path) -> None:
        if str(folder) == "latest":
            found = sorted((self.output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
            if not found:
                raise PPOConfigError(f"resume_from: no checkpoint under {self.output_dir / 'checkpoints'}")
            folder = found[-1]
        self.accelerator.load_state(str(folder))
        if self.state.kl_state is not None:
            self.kl_ctl.load_state_dict(self.state.kl_state)
        if self.ptx is not None:
            self.ptx.position = self.state.ptx_position

    def save_policy(self, folder: str | Path | None = None) -> Path:
        """The trained policy (LoRA merged into a copy) + tokenizer, loadable by load_model."""
        folder = Path(folder or self.output_dir / "policy")
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            policy = copy.deepcopy(self.unwrapped.policy)
            if self.config.use_lora:
                policy = policy.merge_and_unload()
            policy.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
        return folder

    # -- the loop ----------------------------------------------------------------------

    def train(self, max_steps: int | None = None) -> dict:
        """Run until ``num_steps`` iterations (or ``max_steps`` more, to simulate an
        interruption); checkpoint every ``save_every``; save the policy at the end."""
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        if acc.is_main_process and cfg.report_to != "none":
            acc.init_trackers("ppo", config={k: v for k, v in cfg.to_dict().items()
                                             if isinstance(v, (int, float, str, bool))})
        end = cfg.num_steps if max_steps is None else min(cfg.num_steps, self.state.step + max_steps)
        bar = tqdm(total=cfg.num_steps, initial=self.state.step, desc="ppo", unit="it",
                   disable=not (cfg.progress_bar and acc.is_local_main_process))
        history = []
        start_time = time.perf_counter()
        while self.state.step < end:
            metrics = self.step()
            history.append(metrics)
            self._log(metrics)
            step = self.state.step
            bar.update(1)
            bar.set_postfix(score=f"{metrics['reward/score']:.3f}", kl=f"{metrics['kl/per_sequence']:.2f}")
            if acc.is_main_process and step % cfg.log_every == 0:
                bar.write(f"step {step}: score {metrics['reward/score']:.4f} KL/seq {metrics['kl/per_sequence']:.3f} "
                      f"beta {metrics['kl/coef']:.4f} len {metrics['response/length']:.1f}")
            if acc.is_main_process and cfg.sample_table_every and step % cfg.sample_table_every == 0:
                self._sample_table(self._last_batch, step)
            if cfg.save_every and step % cfg.save_every == 0:
                self.save_checkpoint()
        bar.close()
        finished = self.state.step >= cfg.num_steps
        checkpoint = self.save_checkpoint() if (finished and history) else None
        policy_dir = self.save_policy() if finished else None
        if cfg.report_to != "none":
            acc.end_training()
        return {
            "steps": self.state.step, "history": history, "final": history[-1] if history else {},
            "first": history[0] if history else {}, "kl_coef": self.kl_ctl.value,
            "output_dir": str(self.output_dir), "policy_dir": str(policy_dir) if policy_dir else None,
            "checkpoint": str(checkpoint) if checkpoint else None, "seconds": time.perf_counter() - start_time,
        }

    def generate(self, prompts: list[str], max_new_tokens: int | None = None, seed: int = 0) -> list[str]:
        """Completions of the current policy for evaluation (same sampling as rollouts)."""
        from rlhf.generation import chat_prompt_ids

        ids = [chat_prompt_ids(self.tokenizer, p) for p in prompts]
        out = []
        for start in range(0, len(ids), self.generation_chunk):
            responses, _ = self._sample(ids[start:start + self.generation_chunk],
                                        seed=derive_seed(seed, "eval", start), max_new_tokens=max_new_tokens)
            out += [t.strip() for t in self.tokenizer.batch_decode(responses, skip_special_tokens=True)]
        return out


@torch.no_grad()
def generate_completions(policy: str | Path | nn.Module, prompts: list[str], tokenizer=None,
                         max_new_tokens: int = 64, temperature: float = 0.7, stop_token: str = "eos",
                         seed: int = 0, batch_size: int = 8) -> list[str]:
    """Sample one completion per prompt from a trained policy (a ``policy/`` folder saved by
    the trainer, any model name, or a model object) for evaluation.

    Same sampling as the rollouts: chat template, left padding, logits / temperature, no
    top-k/top-p, cut after the first stop token; seeded per batch."""
    from transformers import GenerationConfig

    from rlhf.generation import chat_prompt_ids
    from rlhf.models import load_model, load_tokenizer

    if isinstance(policy, (str, Path)):
        tokenizer = tokenizer or load_tokenizer(str(policy), padding_side="left")
        policy = load_model(str(policy))
    if tokenizer is None:
        raise ValueError("tokenizer: required when policy is a model object")
    stop_id = stop_token_id(tokenizer, stop_token)
    policy.eval()
    device = next(policy.parameters()).device
    pad = tokenizer.pad_token_id
    texts = []
    for start in range(0, len(prompts), batch_size):
        ids = [chat_prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(len(i) for i in ids)
        input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device)
        attention_mask = (torch.arange(width, device=device)[None] >= torch.tensor(
            [width - len(i) for i in ids], device=device)[:, None]).long()
        torch.manual_seed(derive_seed(seed, "eval", start))
        out = policy.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=GenerationConfig(
            do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
            eos_token_id=stop_id, pad_token_id=pad))
        for row in out[:, width:].tolist():
            tokens, _ = truncate_at_stop(row, stop_id)
            texts.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    return texts

