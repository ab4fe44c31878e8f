"""PPO-ptx configuration: every hyper-parameter in one dataclass, with its default and why.

Loaded with TRL's ``TrlParser``: ``--config FILE.yaml`` sets the fields, command-line flags
override them, unknown keys are an error::

    python -m ppo.train --config configs/ppo/smoke.yaml --learning_rate 1e-4

``PPOConfig.__post_init__`` checks values that are wrong on their own (negative sizes,
unknown names); ``validate_inputs`` checks them against the files and model configs
(prompt lengths, pretraining data, tokenizers, batch sizes vs. number of processes)
BEFORE any model weights are loaded, so a bad run fails in seconds with the field named.

Batch-size units (the same as the last TRL PPO trainer's, but spelled out):

* ``rollout_batch_size``: prompts (= episodes) per PPO iteration, summed over processes;
* ``mini_batch_size``: episodes per optimizer step, summed over processes;
* ``micro_batch_size``: episodes per forward/backward pass on ONE process (gradient
  accumulation inside a mini-batch); also the scoring chunk size;
* ``generation_batch_size``: prompts per ``generate`` call on ONE process (null = the
  micro-batch). Decoding a token costs about the same for 4 rows as for 16 on a CPU, so
  a larger chunk samples faster; the sampled trajectory depends on it (seeds are per chunk).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from ppo.core import KL_ESTIMATORS
from reward_model.modeling import NotARewardModelError, RewardModel
from rlhf import generation
from rlhf.config import ConfigError
from rlhf.config import parse_config as parse_dataclass
from rlhf.generation import builtin_prompts, chat_prompt_ids
from rlhf.models import TINY_MODELS, ModelNotFoundError, load_tokenizer, resolve
from rlhf.preferences import PreferenceDataError, iter_rows, looks_like_hub_id

VALUE_INITS = ("reward_model", "policy_head")
REWARD_FORMATS = ("text", "chat")
LR_SCHEDULES = ("linear", "constant")


class PPOConfigError(ConfigError):
    """A bad PPO configuration or input file; the message starts with the field name."""


def _fail(name: str, message: str):
    raise PPOConfigError(name, message)


@dataclass
class PPOConfig:
    # --- models -------------------------------------------------------------------
    policy_model: str = "tiny-random-llama"  # the SFT model pi_SFT that starts the policy and is the KL reference; toolkit name, folder or hub id
    reward_models: list[str] = field(default_factory=list)  # [{path, weight}] (YAML) or "path" / "path=weight" (CLI); scores normalised with each model's reward_stats.json, then weighted-summed
    reward_format: str = "text"  # how a reward model sees a sample: "text" = prompt + completion (what reward_model.demo trains on), "chat" = chat template of user/assistant turns
    value_init: str = "policy_head"  # "reward_model": critic = copy of the first reward model (TRL/OpenRLHF/DS-Chat); "policy_head": zero-initialised head on the policy trunk (Ziegler), no second network
    use_lora: bool = False  # LoRA adapters on the policy: the reference is the same network with adapters disabled (no second copy)
    lora_r: int = 16  # LoRA rank; 16 is the usual small-model default
    lora_alpha: int = 32  # LoRA scale = alpha / r = 2, the common choice
    use_cpu: bool = False  # force the CPU even with a GPU; CPU is also chosen when no CUDA device exists (multi-process CPU runs then use gloo)
    bf16: bool = False  # bf16 autocast via accelerate (mixed_precision="bf16"); off by default because tiny CPU tests want fp32 exactness
    # --- data ---------------------------------------------------------------------
    prompts: str = "builtin"  # "builtin" (rlhf/data/prompts.txt, 233 instructions) or a file: JSONL with {"prompt": ...} or one prompt per text line
    pretrain_data: str | None = None  # plain-text file for the ptx term (eq. 15.12); tokenised, concatenated and cut into ptx_max_length blocks
    ptx_coef: float = 0.0  # gamma of eq. 15.12 on the token-mean NLL; 0 = plain PPO (TRL, Ziegler); OpenRLHF used 0.05 with the same normalisation
    ptx_batch_size: int = 4  # pretraining blocks per micro-batch per process: one ptx micro-batch with every PPO micro-batch, from its own cycling loader
    ptx_max_length: int = 128  # tokens per pretraining block (DS-Chat-style packing: no padding, labels = inputs)
    # --- schedule and batching ----------------------------------------------------
    num_steps: int = 100  # PPO iterations (rollout + update)
    rollout_batch_size: int = 16  # prompts per iteration, summed over processes (Ziegler used 64-512; small here for CPU)
    mini_batch_size: int = 16  # episodes per optimizer step, summed over processes; = rollout_batch_size gives 1 mini-batch (TRL/Ziegler default)
    micro_batch_size: int = 4  # episodes per forward/backward on one process (gradient accumulation); also the scoring chunk
    generation_batch_size: int | None = None  # prompts per generate() call on one process; null = micro_batch_size. Bigger is faster per token; must divide the per-process rollout
    ppo_epochs: int = 4  # passes over each rollout (TRL, Ziegler, N+ use 4; DS-Chat 1)
    # --- sampling -----------------------------------------------------------------
    max_new_tokens: int = 64  # response length cap; responses stop earlier at stop_token
    temperature: float = 0.7  # sampling temperature, applied to the logits for BOTH sampling and log-probabilities (TRL's 0.7)
    stop_token: str = "eos"  # "eos" = the tokenizer's EOS; otherwise a string that must be ONE token of the policy tokenizer
    # --- reward and KL (eq. 15.7-15.11) ---------------------------------------------
    init_kl_coef: float = 0.05  # beta of eq. 15.8 (TRL PPO and N+ 0.05; Ziegler 0.2 with adaptive control)
    target_kl: float | None = None  # null = fixed beta; a number = Ziegler's adaptive controller, in nats PER SEQUENCE (sum over tokens), e.g. 6.0
    kl_horizon: float = 10000.0  # adaptive-controller horizon in episodes (Ziegler's 10,000)
    kl_estimator: str = "k1"  # per-token KL in the reward: k1 = log-ratio of eq. 15.7 (unbiased, what everyone uses in the reward); k3 is >= 0
    kl_clamp: float | None = None  # clamp of the per-token KL estimate (OpenRLHF/verl use 10); null = none, as in eq. 15.7
    score_clip: float | None = 10.0  # clip the (normalised) score to +-10 (OpenRLHF); rarely active on normalised scores
    missing_stop_penalty: float | None = None  # score replaced by this constant when a response hits max_new_tokens without the stop token (Ziegler/N+: -1); null = off
    whiten_rewards: bool = False  # scale per-token rewards by their batch std before GAE (Ziegler on; TRL off)
    gamma: float = 1.0  # discount; 1 so the score does not shrink with response length (sec. 15.2.6)
    lam: float = 0.95  # GAE lambda (TRL, Ziegler, N+, DS-Chat)
    # --- PPO losses ---------------------------------------------------------------
    clip_range: float = 0.2  # policy ratio clip epsilon (everyone's 0.2)
    clip_range_value: float | None = 0.2  # value clip around the rollout values (TRL, Ziegler); null = unclipped value loss
    vf_coef: float = 0.1  # value-loss weight in the shared loss (TRL, Ziegler, N+)
    learning_rate: float = 1.0e-5  # AdamW learning rate (TRL's 3e-6 is for bigger models; 1e-5 suits 135M)
    lr_schedule: str = "linear"  # "linear" anneal to 0 over num_steps (Ziegler) or "constant"
    weight_decay: float = 0.0  # AdamW weight decay; 0 as in TRL/Ziegler
    max_grad_norm: float = 1.0  # global gradient-norm clip per optimizer step
    # --- run ----------------------------------------------------------------------
    seed: int = 0  # seeds model init (tiny models), prompt order, sampling, shuffling and ptx order
    output_dir: str = "runs/ppo"  # metrics.jsonl, checkpoints/step_N (accelerate save_state), policy/ (final model)
    save_every: int = 0  # checkpoint every N iterations (0 = only at the end)
    resume_from: str | None = None  # a checkpoints/step_N folder, or "latest" for the newest one in output_dir
    overwrite: bool = False  # replace an earlier run in output_dir (deleted once the inputs are checked); without it an earlier run is refused unless resumed
    log_every: int = 1  # print a one-line summary every N iterations (metrics.jsonl gets every iteration)
    sample_table_every: int = 10  # rich table of sample prompts/completions every N iterations (0 = never)
    report_to: str = "none"  # accelerate tracker: "none", "tensorboard", "wandb", ... (metrics.jsonl is always written)
    progress_bar: bool = True  # tqdm bar with ETA on the main process

    def __post_init__(self):
        self.reward_models = [self._parse_reward_model(entry) for entry in (self.reward_models or [])]
        positive = ["num_steps", "rollout_batch_size", "mini_batch_size", "micro_batch_size", "ppo_epochs",
                    "max_new_tokens", "ptx_batch_size", "ptx_max_length", "lora_r", "log_every"]
        for name in positive:
            if getattr(self, name) < 1:
                _fail(name, f"expected >= 1, got {getattr(self, name)}")
        for name in ("save_every", "sample_table_every", "ptx_coef", "vf_coef", "init_kl_coef", "weight_decay"):
            if getattr(self, name) < 0:
                _fail(name, f"expected >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            _fail("temperature", f"expected > 0, got {self.temperature}")
        if self.learning_rate <= 0:
            _fail("learning_rate", f"expected > 0, got {self.learning_rate}")
        if not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            _fail("gamma" if not 0 < self.gamma <= 1 else "lam", "expected gamma in (0, 1] and lam in [0, 1]")
        if self.clip_range <= 0:
            _fail("clip_range", f"expected > 0, got {self.clip_range}")
        if self.target_kl is not None and self.target_kl <= 0:
            _fail("target_kl", f"expected > 0 or null (fixed KL coefficient), got {self.target_kl}")
        if self.kl_horizon <= 0:
            _fail("kl_horizon", f"expected > 0, got {self.kl_horizon}")
        if self.kl_estimator not in KL_ESTIMATORS:
            _fail("kl_estimator", f"expected one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.value_init not in VALUE_INITS:
            _fail("value_init", f"expected one of {VALUE_INITS}, got {self.value_init!r}")
        if self.reward_format not in REWARD_FORMATS:
            _fail("reward_format", f"expected one of {REWARD_FORMATS}, got {self.reward_format!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            _fail("lr_schedule", f"expected one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.value_init == "reward_model" and not self.reward_models:
            _fail("value_init", "'reward_model' needs at least one entry in reward_models (or use 'policy_head')")
        if self.mini_batch_size > self.rollout_batch_size or self.rollout_batch_size % self.mini_batch_size:
            _fail("mini_batch_size", f"{self.mini_batch_size} must divide rollout_batch_size {self.rollout_batch_size}")
        if self.generation_batch_size is not None and self.generation_batch_size < 1:
            _fail("generation_batch_size", f"expected >= 1 or null, got {self.generation_batch_size}")
        if self.mini_batch_size % self.micro_batch_size:
            _fail("micro_batch_size", f"{self.micro_batch_size} must divide mini_batch_size {self.mini_batch_size}")
        if self.ptx_coef > 0 and not self.pretrain_data:
            _fail("pretrain_data", "ptx_coef > 0 needs a pretraining text file (or set ptx_coef: 0)")

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

    def to_dict(self) -> dict:
        return asdict(self)


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
    if config.rollout_batch_size % (world_size * config.micro_batch_size):
        _fail("rollout_batch_size", f"{config.rollout_batch_size} must be a multiple of processes x micro_batch_size "
                                    f"= {world_size} x {config.micro_batch_size}")
    if config.mini_batch_size % (world_size * config.micro_batch_size):
        _fail("mini_batch_size", f"{config.mini_batch_size} must be a multiple of processes x micro_batch_size "
                                 f"= {world_size} x {config.micro_batch_size}")
    local_rollout = config.rollout_batch_size // world_size
    if config.generation_batch_size is not None and local_rollout % config.generation_batch_size:
        _fail("generation_batch_size", f"{config.generation_batch_size} must divide the per-process rollout "
                                       f"rollout_batch_size / processes = {local_rollout}")
    try:
        tokenizer = tokenizer or load_tokenizer(config.policy_model, padding_side="left")
    except ModelNotFoundError as err:
        _fail("policy_model", f"{err}; expected a toolkit model name, a model folder or a hub id")
    stop_token_id(tokenizer, config.stop_token)

    prompts = load_prompts(config.prompts)
    prompt_ids = [chat_prompt_ids(tokenizer, p) for p in prompts]
    context = model_context_length(config.policy_model)
    room = context - config.max_new_tokens
    if room < 1:
        _fail("max_new_tokens", f"{config.max_new_tokens} leaves no room for a prompt in the {context}-token context")
    too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) > room]
    if too_long:
        i = too_long[0]
        _fail("prompts", f"{len(too_long)} prompt(s) are longer than the context minus max_new_tokens "
                         f"({context} - {config.max_new_tokens} = {room} tokens), e.g. #{i} with {len(prompt_ids[i])} "
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
    if config.value_init == "reward_model":
        folder = RewardModel.member_dirs(config.reward_models[0]["path"])[0]  # the critic copies an ensemble's first member
        if not same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(folder)):
            _fail("value_init", f"'reward_model' needs the reward model's tokenizer to equal the policy's ({folder} "
                                "differs): the critic reads the policy's tokens. Use value_init: policy_head (scoring "
                                "still works: reward models re-tokenise the decoded text)")
    if config.resume_from not in (None, "latest") and not Path(config.resume_from).exists():
        _fail("resume_from", f"{config.resume_from} does not exist")
    if config.resume_from == "latest" and not any((Path(config.output_dir) / "checkpoints").glob("step_*")):
        _fail("resume_from", f"'latest' needs a checkpoint under {Path(config.output_dir) / 'checkpoints'} (none found)")
    return {"prompts": prompts, "prompt_ids": prompt_ids, "pretrain_text": pretrain_text, "tokenizer": tokenizer,
            "context": context}
