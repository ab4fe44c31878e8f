"""PPO-ptx configuration: every hyper-parameter in one dataclass, with its default and why.

``PPOConfig`` extends transformers' ``TrainingArguments``, as TRL's RL configs do, and uses
the names of TRL's PPO trainer (``trl.experimental.ppo.PPOConfig``) wherever TRL has the
concept (``sft_model_path``, ``total_episodes``, ``num_ppo_epochs``, ``response_length``,
``kl_coef``, ``cliprange``, ...). Loaded with TRL's ``TrlParser``: ``--config FILE.yaml``
sets the fields, command-line flags override them, unknown keys are an error::

    python -m ppo.train --config configs/ppo/smoke.yaml --learning_rate 1e-4

The names of the previous release (``policy_model``, ``num_steps``, ``rollout_batch_size``,
...) still work for one release, with a warning (``_renamed_fields``, ``_converted_fields``).

``PPOConfig.__post_init__`` checks values that are wrong on their own (negative sizes,
unknown names); ``validate_inputs`` checks them against the files and model configs
(prompt lengths, pretraining data, tokenizers, batch sizes vs. number of processes)
BEFORE any model weights are loaded, so a bad run fails in seconds with the field named.

Batch sizes, in TRL's units (``batch_sizes`` derives the rest, with TRL's names):

* ``per_device_train_batch_size``: episodes per forward/backward pass on ONE process (a
  micro-batch); also the chunk of the rollout's forward passes and of scoring;
* ``gradient_accumulation_steps``: micro-batches per optimizer step, so a mini-batch is
  ``per_device_train_batch_size * gradient_accumulation_steps * processes`` episodes;
* ``num_mini_batches``: optimizer steps per PPO epoch, so one rollout (one iteration) is
  ``batch_size = per_device_train_batch_size * gradient_accumulation_steps *
  num_mini_batches * processes`` episodes (prompts);
* ``local_rollout_forward_batch_size``: prompts per ``generate`` call on ONE process (null =
  ``per_device_train_batch_size``). Decoding a token costs about the same for 4 rows as for
  16 on a CPU, so a larger chunk samples faster; the sampled trajectory depends on it
  (seeds are per chunk);
* ``total_episodes``: episodes of the whole run; ``ceil(total_episodes / batch_size)``
  iterations (TRL's ``num_total_batches``); null = ``num_train_epochs`` passes over the prompts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments

from ppo.core import ADVANTAGE_ESTIMATORS, KL_ESTIMATORS, LOSS_AGGREGATIONS
from reward_model.modeling import NotARewardModelError, RewardModel
from rlhf import generation
from rlhf.config import ConfigError, check_report_to
from rlhf.config import parse_config as parse_dataclass
from rlhf.generation import builtin_prompts, chat_prompt_ids
from rlhf.models import TINY_MODELS, ModelNotFoundError, load_tokenizer, resolve
from rlhf.precision import requested_precision
from rlhf.preferences import PreferenceDataError, iter_rows, looks_like_hub_id

VALUE_INITS = ("reward_model", "policy_head")
REWARD_FORMATS = ("text", "chat")
OLD_BATCH_FIELDS = ("micro_batch_size", "mini_batch_size", "rollout_batch_size")
KL_PLACES = ("reward", "loss")
# Each estimator's paper default for where the KL penalty goes and how the per-token loss is
# reduced (kl_in / loss_aggregation null): PPO (Ouyang et al. 2022) and REINFORCE++ (Hu 2025)
# and RLOO (Ahmadian et al. 2024) put it in the reward; GRPO (Shao et al. 2024, eq. 3) and
# Dr. GRPO (Liu et al. 2025) add beta * k3 to the loss.
ESTIMATOR_DEFAULTS = {
    "gae": {"kl_in": "reward", "loss_aggregation": "token_mean"},
    "grpo": {"kl_in": "loss", "loss_aggregation": "sequence_mean"},
    "dr_grpo": {"kl_in": "loss", "loss_aggregation": "sequence_sum"},
    "rloo": {"kl_in": "reward", "loss_aggregation": "token_mean"},
    "reinforce_pp": {"kl_in": "reward", "loss_aggregation": "token_mean"},
}
GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo")  # one advantage per response, relative to its group of G

# TrainingArguments fields the PPO trainer reads; any other one set to a non-default value
# is refused (it would be silently ignored).
HONOURED_TRAINING_ARGUMENTS = {
    "output_dir", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "num_train_epochs", "lr_scheduler_type",
    "lr_scheduler_kwargs", "warmup_steps", "logging_steps", "save_steps", "resume_from_checkpoint",
    "report_to", "run_name", "trackio_space_id", "seed", "bf16", "use_cpu", "disable_tqdm",
    "gradient_checkpointing", "activation_checkpointing",  # TRL's name; transformers 5.x's, the other mirrors it
    "optim", "optim_args",  # the optimizer, built by transformers' Trainer.get_optimizer_cls_and_kwargs
}


class PPOConfigError(ConfigError):
    """A bad PPO configuration or input file; the message starts with the field name."""


def _fail(name: str, message: str):
    raise PPOConfigError(name, message)


@functools.cache
def _training_arguments_defaults(use_cpu: bool) -> dict[str, tuple]:
    """Each TrainingArguments field's default as declared, as the command-line parser gives it
    ("no" becomes False) and as ``__post_init__`` leaves it on this machine (pin memory off on
    a CPU, ...: what ``dataclasses.replace`` of a built config passes back). Only called from
    ``PPOConfig.__post_init__`` just before its own TrainingArguments set-up, which resets the
    process state this one sets up."""
    parsed = vars(HfArgumentParser(TrainingArguments).parse_args([]))
    built = TrainingArguments(output_dir="unused", use_cpu=use_cpu)
    defaults = {}
    for f in dataclasses.fields(TrainingArguments):
        if f.init:
            raw = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            defaults[f.name] = (raw, parsed.get(f.name, raw), getattr(built, f.name))
    return defaults


def launch_world_size() -> int:
    """Processes of this launch (accelerate launch / torchrun set WORLD_SIZE), for converting
    the old global batch sizes into per-device ones."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _as_int(values: dict, name: str, where: str) -> int:
    try:
        number = float(values[name])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name}", f"expected an integer, got {values[name]!r}") from None
    if number != int(number):
        raise ConfigError(f"{where}: {name}", f"expected an integer, got {values[name]!r}")
    return int(number)


@dataclass
class PPOConfig(TrainingArguments):
    """PPO-ptx fields in TRL's names; everything else is transformers' `TrainingArguments`."""

    # Old name -> new name: accepted with a deprecation warning for one release (rlhf.config).
    _renamed_fields = {
        "policy_model": "sft_model_path", "ppo_epochs": "num_ppo_epochs", "max_new_tokens": "response_length",
        "init_kl_coef": "kl_coef", "clip_range": "cliprange", "clip_range_value": "cliprange_value",
        "missing_stop_penalty": "missing_eos_penalty", "save_every": "save_steps", "log_every": "logging_steps",
        "resume_from": "resume_from_checkpoint", "lr_schedule": "lr_scheduler_type",
        "generation_batch_size": "local_rollout_forward_batch_size",
    }
    # Old names whose units changed; ``_convert_deprecated`` converts them exactly.
    _converted_fields = {
        "num_steps": "total_episodes", "micro_batch_size": "per_device_train_batch_size",
        "mini_batch_size": "gradient_accumulation_steps", "rollout_batch_size": "num_mini_batches",
        "progress_bar": "disable_tqdm",
    }

    # --- models -------------------------------------------------------------------
    sft_model_path: str = field(default="tiny-random-llama", metadata={"help": "the SFT model pi_SFT that starts the policy and is the KL reference: a toolkit name, a folder or a hub id (TRL's sft_model_path)"})
    reward_model_path: str | None = field(default=None, metadata={"help": "one reward model folder (TRL's spelling); the same as reward_models: [path]. Use reward_models for a weighted sum of several"})
    reward_models: list[str] = field(default_factory=list, metadata={"help": "reward models whose normalised scores are weighted-summed: [{path, weight}] (YAML) or 'path' / 'path=weight' (command line); each is normalised with its reward_stats.json"})
    reward_format: str = field(default="text", metadata={"help": "how a reward model sees a sample: 'text' = prompt + completion (what reward_model.demo trains on), 'chat' = chat template of user/assistant turns"})
    value_init: str = field(default="policy_head", metadata={"help": "'reward_model': critic = copy of the first reward model (TRL/OpenRLHF/DS-Chat); 'policy_head': zero-initialised head on the policy trunk (Ziegler), no second network; gae only (the other estimators have no critic and ignore it with a note)"})
    use_lora: bool = field(default=False, metadata={"help": "LoRA adapters on the policy: the reference is the same network with adapters disabled (no second copy)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank; 16 is the usual small-model default"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scale = alpha / r = 2, the common choice"})
    # --- data ---------------------------------------------------------------------
    prompts: str = field(default="builtin", metadata={"help": "'builtin' (rlhf/data/prompts.txt, 233 instructions) or prompt-only data as TRL takes it: a JSONL/parquet file of {'prompt': text or messages} rows, a text file of one prompt per line, a saved datasets folder or a hub id in the local cache (its train split)"})
    pretrain_data: str | None = field(default=None, metadata={"help": "plain-text file for the ptx term (eq. 15.12); tokenised, concatenated and cut into ptx_max_length blocks"})
    ptx_coef: float = field(default=0.0, metadata={"help": "gamma of eq. 15.12 on the token-mean NLL; 0 = plain PPO (TRL, Ziegler); OpenRLHF used 0.05 with the same normalisation"})
    ptx_batch_size: int = field(default=4, metadata={"help": "pretraining blocks per micro-batch per process: one ptx micro-batch with every PPO micro-batch, from its own cycling loader"})
    ptx_max_length: int = field(default=128, metadata={"help": "tokens per pretraining block (DS-Chat-style packing: no padding, labels = inputs)"})
    # --- schedule and batching ----------------------------------------------------
    total_episodes: int | None = field(default=None, metadata={"help": "episodes (prompts answered) over the whole run: ceil(total_episodes / batch_size) PPO iterations; null = num_train_epochs passes over the prompts (TRL)"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "episodes per forward/backward pass on one process (a micro-batch); also the chunk of the rollout's forward passes and of scoring"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step: a mini-batch is per_device_train_batch_size x gradient_accumulation_steps x processes episodes"})
    num_mini_batches: int = field(default=1, metadata={"help": "optimizer steps per PPO epoch: one rollout is per_device_train_batch_size x gradient_accumulation_steps x num_mini_batches x processes episodes (1 = TRL/Ziegler default)"})
    local_rollout_forward_batch_size: int | None = field(default=None, metadata={"help": "prompts per generate() call on one process; null = per_device_train_batch_size. Bigger is faster per token; must divide the per-process rollout. Unlike TRL, the rollout's other forward passes use per_device_train_batch_size"})
    num_generations: int = field(default=1, metadata={"help": "G responses per prompt, sampled in the same generate() call (consecutive rows = one group); a rollout is still batch_size episodes = batch_size / G prompts. grpo, dr_grpo and rloo need G >= 2; G must divide the per-process rollout and local_rollout_forward_batch_size (TRL's num_generations)"})
    num_ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout (TRL, Ziegler, N+ use 4; DS-Chat 1)"})
    # --- sampling -----------------------------------------------------------------
    response_length: int = field(default=64, metadata={"help": "most tokens per response; responses stop earlier at stop_token (TRL's default is 53)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature, applied to the logits for BOTH sampling and log-probabilities (TRL's 0.7)"})
    stop_token: str = field(default="eos", metadata={"help": "'eos' = the tokenizer's EOS; otherwise a string that must be ONE token of the policy tokenizer"})
    # --- reward and KL (eq. 15.7-15.11) ---------------------------------------------
    kl_coef: float = field(default=0.05, metadata={"help": "beta of eq. 15.8, the starting value with target_kl (TRL PPO and N+ 0.05; Ziegler 0.2 with adaptive control)"})
    target_kl: float | None = field(default=None, metadata={"help": "null = fixed beta; a number = Ziegler's adaptive controller, in nats PER SEQUENCE (sum over tokens), e.g. 6.0"})
    kl_horizon: float = field(default=10000.0, metadata={"help": "adaptive-controller horizon in episodes (Ziegler's 10,000)"})
    kl_estimator: str | None = field(default=None, metadata={"help": "per-token KL estimate: k1 = log-ratio of eq. 15.7 (unbiased, what everyone uses in the reward), k2, or k3 (>= 0, GRPO's loss term); null = k1 when kl_in is reward, k3 when it is loss"})
    kl_in: str | None = field(default=None, metadata={"help": "where the KL penalty goes: 'reward' (-kl_coef * KL per token of eq. 15.8; per response for grpo/dr_grpo/rloo) or 'loss' (kl_coef * k3 per token added to the policy loss, GRPO's eq. 3); null = the estimator's default: reward for gae, rloo, reinforce_pp; loss for grpo, dr_grpo"})
    kl_clamp: float | None = field(default=None, metadata={"help": "clamp of the per-token KL estimate (OpenRLHF/verl use 10); null = none, as in eq. 15.7"})
    score_clip: float | None = field(default=10.0, metadata={"help": "clip the (normalised) score to +-score_clip (OpenRLHF's 10); rarely active on normalised scores; null = none"})
    missing_eos_penalty: float | None = field(default=None, metadata={"help": "score replaced by this constant when a response reaches response_length without the stop token (Ziegler/N+: -1); null = off. TRL subtracts its penalty from the score instead"})
    whiten_rewards: bool = field(default=False, metadata={"help": "scale per-token rewards by their batch std before GAE (Ziegler on; TRL off); gae only"})
    gamma: float = field(default=1.0, metadata={"help": "discount; 1 so the score does not shrink with response length (sec. 15.2.6)"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (TRL, Ziegler, N+, DS-Chat)"})
    # --- advantages and PPO losses -------------------------------------------------
    advantage_estimator: str = field(default="gae", metadata={"help": "gae = PPO with a critic (GAE, eq. 5.7); critic-free, no value model: grpo (group mean/std, Shao et al. 2024), dr_grpo (group mean only, Liu et al. 2025), rloo (leave-one-out mean, Ahmadian et al. 2024), reinforce_pp (batch-normalised returns, Hu 2025)"})
    loss_aggregation: str | None = field(default=None, metadata={"help": "how per-token losses (surrogate and a KL loss term) become one number: token_mean (TRL loss_type bnpo), sequence_mean (grpo), sequence_sum (dr_grpo: token sum / response_length); null = the estimator's default: token_mean for gae, rloo, reinforce_pp; sequence_mean for grpo; sequence_sum for dr_grpo"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip epsilon (everyone's 0.2)"})
    cliprange_value: float | None = field(default=0.2, metadata={"help": "value clip around the rollout values (TRL, Ziegler); null = unclipped value loss"})
    vf_coef: float = field(default=0.1, metadata={"help": "value-loss weight in the shared loss (TRL, Ziegler, N+)"})
    learning_rate: float = field(default=1.0e-5, metadata={"help": "AdamW learning rate (TRL's 3e-6 is for bigger models; 1e-5 suits 135M)"})
    # --- run ----------------------------------------------------------------------
    precision: str = field(default="auto", metadata={"help": "auto = bf16 autocast where a short matmul probe finds it at least 1.1x faster than fp32 on this machine and the policy's token log-probs under bf16 agree with fp32 (within 2 percent of the mean), else fp32 (docs/precision.md); bf16 or fp32 to fix it. bf16: true (TRL's flag) means precision: bf16"})
    seed: int = field(default=0, metadata={"help": "seeds model init (tiny models), prompt order, sampling, shuffling and ptx order"})
    output_dir: str = field(default="runs/ppo", metadata={"help": "metrics.jsonl, checkpoints/step_N (accelerate save_state, safetensors), policy/ (final model)"})
    save_steps: float = field(default=0, metadata={"help": "checkpoint every N PPO iterations (a float < 1: that share of the iterations); 0 = only at the end"})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoints/step_N folder, or 'latest' (or true) for the newest one in output_dir"})
    overwrite: bool = field(default=False, metadata={"help": "replace an earlier run in output_dir (deleted once the inputs are checked); without it an earlier run is refused unless resumed"})
    logging_steps: float = field(default=1, metadata={"help": "print a one-line summary and log to the report_to trackers every N iterations (a float < 1: that share of the iterations); metrics.jsonl gets every iteration"})
    sample_table_every: int = field(default=10, metadata={"help": "rich table of sample prompts/completions every N iterations (0 = never)"})

    def __post_init__(self):
        if self.reward_model_path is not None:
            if self.reward_models:
                _fail("reward_model_path", "give reward_model_path (one model) or reward_models (a weighted sum), "
                                           "not both")
            self.reward_models, self.reward_model_path = [self.reward_model_path], None
        self.reward_models = [self._parse_reward_model(entry) for entry in (self.reward_models or [])]
        positive = ["per_device_train_batch_size", "gradient_accumulation_steps", "num_mini_batches", "num_ppo_epochs",
                    "response_length", "ptx_batch_size", "ptx_max_length", "lora_r"]
        for name in positive:
            if getattr(self, name) < 1:
                _fail(name, f"expected >= 1, got {getattr(self, name)}")
        for name in ("total_episodes", "local_rollout_forward_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                _fail(name, f"expected >= 1 or null, got {getattr(self, name)}")
        if not self.logging_steps > 0:
            _fail("logging_steps", f"expected > 0, got {self.logging_steps}")
        for name in ("save_steps", "sample_table_every", "ptx_coef", "vf_coef", "kl_coef", "weight_decay"):
            if getattr(self, name) < 0:
                _fail(name, f"expected >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            _fail("temperature", f"expected > 0, got {self.temperature}")
        if self.learning_rate <= 0:
            _fail("learning_rate", f"expected > 0, got {self.learning_rate}")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            _fail("gamma" if not 0 < self.gamma <= 1 else "lam", "expected gamma in (0, 1] and lam in [0, 1]")
        if self.cliprange <= 0:
            _fail("cliprange", f"expected > 0, got {self.cliprange}")
        if self.target_kl is not None and self.target_kl <= 0:
            _fail("target_kl", f"expected > 0 or null (fixed KL coefficient), got {self.target_kl}")
        if self.kl_horizon <= 0:
            _fail("kl_horizon", f"expected > 0, got {self.kl_horizon}")
        if self.kl_estimator is not None and self.kl_estimator not in KL_ESTIMATORS:
            _fail("kl_estimator", f"expected one of {KL_ESTIMATORS} or null, got {self.kl_estimator!r}")
        self._check_estimator()
        self.precision = requested_precision(self.precision, self.bf16)
        if self.value_init not in VALUE_INITS:
            _fail("value_init", f"expected one of {VALUE_INITS}, got {self.value_init!r}")
        if self.reward_format not in REWARD_FORMATS:
            _fail("reward_format", f"expected one of {REWARD_FORMATS}, got {self.reward_format!r}")
        if self.value_init == "reward_model" and not self.reward_models and needs_critic(self):
            _fail("value_init", "'reward_model' needs a reward model (reward_model_path or reward_models), "
                                "or use 'policy_head'")
        if self.ptx_coef > 0 and not self.pretrain_data:
            _fail("pretrain_data", "ptx_coef > 0 needs a pretraining text file (or set ptx_coef: 0)")
        # The CPU when no CUDA device exists, decided before TrainingArguments sets up the
        # processes: under torchrun on a CPU machine it needs use_cpu to join them (gloo).
        self.use_cpu = self.use_cpu or not torch.cuda.is_available()
        self._check_training_arguments()
        try:
            super().__post_init__()
        except ValueError as err:  # TrainingArguments' own checks (e.g. an unknown lr_scheduler_type)
            raise ConfigError(str(err)) from None

    def _check_estimator(self) -> None:
        """The estimator switch and its companions; sizes that do not depend on the process count."""
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            _fail("advantage_estimator", f"expected one of {ADVANTAGE_ESTIMATORS}, got {self.advantage_estimator!r}")
        if self.kl_in is not None and self.kl_in not in KL_PLACES:
            _fail("kl_in", f"expected one of {KL_PLACES} or null (the estimator's default), got {self.kl_in!r}")
        if self.loss_aggregation is not None and self.loss_aggregation not in LOSS_AGGREGATIONS:
            _fail("loss_aggregation", f"expected one of {LOSS_AGGREGATIONS} or null (the estimator's default), "
                                      f"got {self.loss_aggregation!r}")
        if self.num_generations < 1:
            _fail("num_generations", f"expected >= 1, got {self.num_generations}")
        if self.advantage_estimator in GROUP_ESTIMATORS and self.num_generations < 2:
            _fail("num_generations", f"{self.advantage_estimator} compares the responses to one prompt: "
                                     f"expected >= 2, got {self.num_generations}")
        # Per-process sizes (independent of the process count): a group never straddles a
        # generate() call or a process.
        local_batch = self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches
        chunk = self.local_rollout_forward_batch_size or self.per_device_train_batch_size
        for name, size in (("per-process rollout per_device_train_batch_size x gradient_accumulation_steps x "
                            "num_mini_batches", local_batch), ("local_rollout_forward_batch_size", chunk)):
            if size % self.num_generations:
                _fail("num_generations", f"{self.num_generations} must divide the {name} = {size}")
        if self.whiten_rewards and self.advantage_estimator != "gae":
            _fail("whiten_rewards", f"whitens the rewards before GAE; expected false with advantage_estimator "
                                    f"{self.advantage_estimator}")

    def _check_training_arguments(self) -> None:
        """A TrainingArguments field this trainer does not read may not be changed: it would
        be silently ignored (fp16, eval_strategy, ...)."""
        changed = [name for name, accepted in _training_arguments_defaults(self.use_cpu).items()
                   if name not in HONOURED_TRAINING_ARGUMENTS and name not in PPOConfig.__annotations__
                   and all(getattr(self, name) != value for value in accepted)]
        if changed:
            name = changed[0]
            _fail(name, f"not used by the PPO trainer; expected the default "
                        f"{_training_arguments_defaults(self.use_cpu)[name][0]!r}, got {getattr(self, name)!r}")

    @staticmethod
    def _parse_reward_model(entry) -> dict:
        if isinstance(entry, dict):
            unknown = set(entry) - {"path", "weight"}
            if "path" not in entry or unknown:
                _fail("reward_models", f"each entry needs 'path' (and optional 'weight'), got {entry}")
            return {"path": str(entry["path"]), "weight": float(entry.get("weight", 1.0))}
        text = str(entry)
        if text.startswith("{"):
            return PPOConfig._parse_reward_model(json.loads(text))
        path, _, weight = text.partition("=")
        try:
            return {"path": path, "weight": float(weight) if weight else 1.0}
        except ValueError:
            _fail("reward_models", f"expected 'path' or 'path=weight', got {text!r}")

    @classmethod
    def _convert_deprecated(cls, values: dict, where: str) -> dict:
        """The previous release's global batch sizes and iteration count in TRL's units, exactly:
        micro_batch_size (per process) = per_device_train_batch_size; mini_batch_size (global)
        = per_device x gradient_accumulation_steps x processes; rollout_batch_size (global) =
        mini_batch_size x num_mini_batches; num_steps x rollout_batch_size = total_episodes."""
        world = launch_world_size()
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}

        def current(name):
            return _as_int(values, name, where) if name in values else defaults[name]

        if any(name in values for name in OLD_BATCH_FIELDS):
            micro = _as_int(values, "micro_batch_size", where) if "micro_batch_size" in values \
                else current("per_device_train_batch_size")
            mini = _as_int(values, "mini_batch_size", where) if "mini_batch_size" in values \
                else current("per_device_train_batch_size") * current("gradient_accumulation_steps") * world
            rollout = _as_int(values, "rollout_batch_size", where) if "rollout_batch_size" in values \
                else mini * current("num_mini_batches")
            if micro < 1 or mini < 1 or mini % (micro * world):
                raise ConfigError(f"{where}: mini_batch_size", f"{mini} must be a positive multiple of processes x "
                                                               f"micro_batch_size = {world} x {micro}")
            if rollout % mini:
                raise ConfigError(f"{where}: rollout_batch_size", f"{rollout} must be a multiple of mini_batch_size "
                                                                  f"{mini}")
            for name in OLD_BATCH_FIELDS:
                values.pop(name, None)
            values.update(per_device_train_batch_size=micro, gradient_accumulation_steps=mini // (micro * world),
                          num_mini_batches=rollout // mini)
        if "num_steps" in values:
            episodes_per_step = (current("per_device_train_batch_size") * current("gradient_accumulation_steps")
                                 * current("num_mini_batches") * world)
            values["total_episodes"] = _as_int(values, "num_steps", where) * episodes_per_step
            del values["num_steps"]
        if "progress_bar" in values:
            shown = values.pop("progress_bar")
            values["disable_tqdm"] = not (shown if isinstance(shown, bool) else str(shown).lower() in ("true", "1", "yes"))
        return values


@dataclass(frozen=True)
class BatchSizes:
    """The derived batch sizes of TRL's PPO trainer, for ``world_size`` processes."""

    world_size: int
    per_device_train_batch_size: int  # episodes per micro-batch on one process
    micro_batch_size: int  # TRL: per_device_train_batch_size x world_size
    local_mini_batch_size: int  # episodes per optimizer step on one process
    mini_batch_size: int  # episodes per optimizer step, all processes
    local_batch_size: int  # episodes per rollout on one process
    batch_size: int  # episodes per rollout (= per PPO iteration), all processes
    local_rollout_forward_batch_size: int  # prompts per generate() call on one process


def batch_sizes(config: PPOConfig, world_size: int = 1) -> BatchSizes:
    per_device = config.per_device_train_batch_size
    local_mini = per_device * config.gradient_accumulation_steps
    local_batch = local_mini * config.num_mini_batches
    return BatchSizes(world_size=world_size, per_device_train_batch_size=per_device,
                      micro_batch_size=per_device * world_size, local_mini_batch_size=local_mini,
                      mini_batch_size=local_mini * world_size, local_batch_size=local_batch,
                      batch_size=local_batch * world_size,
                      local_rollout_forward_batch_size=config.local_rollout_forward_batch_size or per_device)


def total_episodes(config: PPOConfig, num_prompts: int) -> int:
    """``total_episodes``, or ``num_train_epochs`` passes over the prompts when it is null (TRL),
    each prompt answered ``num_generations`` times (as TRL's GRPO trainer counts)."""
    if config.total_episodes is not None:
        return config.total_episodes
    return int(config.num_train_epochs * num_prompts * config.num_generations)


def needs_critic(config: PPOConfig) -> bool:
    """Only GAE reads a value function; the other estimators build no value model or head."""
    return config.advantage_estimator == "gae"


def resolved_kl_in(config: PPOConfig) -> str:
    """``kl_in``, or the estimator's default ("reward" or "loss") when it is null."""
    return config.kl_in or ESTIMATOR_DEFAULTS[config.advantage_estimator]["kl_in"]


def resolved_loss_aggregation(config: PPOConfig) -> str:
    """``loss_aggregation``, or the estimator's default when it is null."""
    return config.loss_aggregation or ESTIMATOR_DEFAULTS[config.advantage_estimator]["loss_aggregation"]


def resolved_kl_estimator(config: PPOConfig) -> str:
    """``kl_estimator``, or k1 for a KL in the reward and k3 for a KL loss term (GRPO) when it is null."""
    return config.kl_estimator or ("k3" if resolved_kl_in(config) == "loss" else "k1")


def resolved_settings(config: PPOConfig) -> dict:
    """The estimator settings the run uses, defaults applied (logged once at the start)."""
    return {"advantage_estimator": config.advantage_estimator, "num_generations": config.num_generations,
            "kl_in": resolved_kl_in(config), "kl_estimator": resolved_kl_estimator(config),
            "loss_aggregation": resolved_loss_aggregation(config), "critic": needs_critic(config)}


def num_total_batches(config: PPOConfig, num_prompts: int, world_size: int = 1) -> int:
    """PPO iterations of the run (TRL's ``num_total_batches``): every rollout is a full batch."""
    return math.ceil(total_episodes(config, num_prompts) / batch_sizes(config, world_size).batch_size)


def every(steps: float, total: int) -> int:
    """An interval given as TrainingArguments does: N iterations, or a share (< 1) of ``total``; 0 = never."""
    if steps <= 0:
        return 0
    return max(1, math.ceil(steps * total)) if steps < 1 else int(steps)


def resume_target(config: PPOConfig) -> str | None:
    """``resume_from_checkpoint`` as a folder or 'latest' ('true' also means the newest); None = no resume."""
    value = config.resume_from_checkpoint
    if value is None or str(value).lower() in ("false", "none", ""):
        return None
    return "latest" if str(value).lower() in ("true", "latest") else str(value)


def parse_config(argv: list[str] | None = None) -> PPOConfig:
    """``--config YAML`` plus command-line overrides (rlhf.config: TRL's parser and rules);
    an unknown key or a bad value raises ConfigError naming the file or flag and the field."""
    return parse_dataclass(PPOConfig, argv, prog="python -m ppo.train")


# ---------------------------------------------------------------------------
# Input validation (no model weights are loaded here)
# ---------------------------------------------------------------------------


def model_context_length(name: str) -> int:
    """max_position_embeddings from the model config only (no weights)."""
    if name in TINY_MODELS:
        return 1024  # build_tiny_model's max_position_embeddings
    config = AutoConfig.from_pretrained(resolve(name))
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions"))


def load_prompts(spec: str) -> list[str | list[dict]]:
    """Prompts from "builtin", a text file (one per line), a JSONL file of TRL prompt-only
    rows ``{"prompt": text}`` or ``{"prompt": [{"role", "content"}, ...]}``, or a `datasets`
    dataset with a ``prompt`` column: a parquet file, a saved folder or a hub id from the
    local cache (its ``train`` split; see `rlhf.preferences.iter_rows`). A conversation
    stays a message list, templated as it is (`rlhf.generation.chat_prompt_ids`)."""
    if spec == "builtin":
        return builtin_prompts()
    path = Path(spec)
    rows = []  # (prompt, where it came from)
    if path.is_file() and path.suffix.lower() != ".parquet":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                as_json = path.suffix in (".jsonl", ".json") or line.lstrip().startswith("{")
                rows.append((_json_prompt(line, f"{spec}:{number}") if as_json else line.strip(), f"{spec}:{number}"))
    else:
        if not path.exists() and not looks_like_hub_id(spec):
            _fail("prompts", f"file {spec} does not exist (use 'builtin', a JSONL/text file or a dataset)")
        try:
            for row, source, _ in iter_rows(spec, split="train"):
                if not isinstance(row, dict) or "prompt" not in row:
                    _fail("prompts", f"{source}: expected a 'prompt' column (TRL's prompt-only format)")
                rows.append((row["prompt"], source))
        except PreferenceDataError as err:
            _fail("prompts", str(err))
    prompts = [_check_prompt(prompt, where) for prompt, where in rows]
    if not prompts:
        _fail("prompts", f"{spec} holds no prompt")
    return prompts


def _json_prompt(line: str, where: str):
    try:
        return json.loads(line)["prompt"]
    except (json.JSONDecodeError, KeyError, TypeError):
        _fail("prompts", f"{where}: expected a JSON object with a 'prompt' key")


def _check_prompt(prompt, where: str) -> str | list[dict]:
    """A prompt is non-empty text or a non-empty list of {"role", "content"} messages."""
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt):
        return prompt
    _fail("prompts", f"{where}: 'prompt' must be a non-empty string or a list of {{\"role\", \"content\"}} "
                     "messages (TRL's conversational format)")


def stop_token_id(tokenizer, stop_token: str) -> int:
    """`rlhf.generation.stop_token_id`, with its error as a config error."""
    try:
        return generation.stop_token_id(tokenizer, stop_token)
    except ValueError as err:
        _fail("stop_token", str(err).removeprefix("stop_token: "))


def same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab()


def validate_inputs(config: PPOConfig, world_size: int = 1, tokenizer=None) -> dict:
    """Check the config against files and model configs before any weights are loaded.

    Returns what was loaded on the way (prompts, tokenised prompts, pretraining text),
    so the trainer does not read the files twice.
    """
    check_report_to(config.report_to)
    try:  # an optimizer whose library is missing fails here, not after the weights load
        Trainer.get_optimizer_cls_and_kwargs(config)
    except (ImportError, ValueError) as err:
        _fail("optim", f"{getattr(config.optim, 'value', config.optim)!r} cannot be built: {err}")
    sizes = batch_sizes(config, world_size)
    if sizes.local_batch_size % sizes.local_rollout_forward_batch_size:
        _fail("local_rollout_forward_batch_size",
              f"{sizes.local_rollout_forward_batch_size} must divide the per-process rollout per_device_train_batch_size"
              f" x gradient_accumulation_steps x num_mini_batches = {sizes.local_batch_size}")
    try:
        tokenizer = tokenizer or load_tokenizer(config.sft_model_path, padding_side="left")
    except ModelNotFoundError as err:
        _fail("sft_model_path", f"{err}; expected a toolkit model name, a model folder or a hub id")
    stop_token_id(tokenizer, config.stop_token)

    prompts = load_prompts(config.prompts)
    prompt_ids = [chat_prompt_ids(tokenizer, p) for p in prompts]
    context = model_context_length(config.sft_model_path)
    room = context - config.response_length
    if room < 1:
        _fail("response_length", f"{config.response_length} leaves no room for a prompt in the {context}-token context")
    too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) > room]
    if too_long:
        i = too_long[0]
        _fail("prompts", f"{len(too_long)} prompt(s) are longer than the context minus response_length "
                         f"({context} - {config.response_length} = {room} tokens), e.g. #{i} with {len(prompt_ids[i])} "
                         f"tokens: {prompts[i][:60]!r}")

    pretrain_text = None
    if config.ptx_coef > 0:
        path = Path(config.pretrain_data)
        if not path.exists():
            _fail("pretrain_data", f"file {path} does not exist")
        pretrain_text = path.read_text(encoding="utf-8")
        if not pretrain_text.strip():
            _fail("pretrain_data", f"{path} is empty")
        if config.ptx_max_length > context:
            _fail("ptx_max_length", f"{config.ptx_max_length} exceeds the model context {context}")

    for index, entry in enumerate(config.reward_models):
        try:
            for member in RewardModel.member_dirs(entry["path"]):
                RewardModel.check_member(member)
        except NotARewardModelError as err:
            _fail("reward_models", f"entry {index}: {err}")
    if config.value_init == "reward_model" and needs_critic(config):
        folder = RewardModel.member_dirs(config.reward_models[0]["path"])[0]  # the critic copies an ensemble's first member
        if not same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(folder)):
            _fail("value_init", f"'reward_model' needs the reward model's tokenizer to equal the policy's ({folder} "
                                "differs): the critic reads the policy's tokens. Use value_init: policy_head (scoring "
                                "still works: reward models re-tokenise the decoded text)")
    resume = resume_target(config)
    if resume not in (None, "latest") and not Path(resume).exists():
        _fail("resume_from_checkpoint", f"{resume} does not exist")
    if resume == "latest" and not any((Path(config.output_dir) / "checkpoints").glob("step_*")):
        _fail("resume_from_checkpoint", f"'latest' needs a checkpoint under {Path(config.output_dir) / 'checkpoints'} "
                                        "(none found)")
    return {"prompts": prompts, "prompt_ids": prompt_ids, "pretrain_text": pretrain_text, "tokenizer": tokenizer,
            "context": context, "batch_sizes": sizes,
            "num_total_batches": num_total_batches(config, len(prompts), world_size)}
