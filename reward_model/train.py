"""Fit a reward model on preference data.

    accelerate launch -m reward_model.train --config configs/reward_model/quickstart.yaml
    python -m reward_model.train --config configs/reward_model/smoke.yaml --learning_rate 3e-4
    rlhf train-rm --config ...

Every field of `RewardModelConfig` (ours and transformers' `TrainingArguments`) can be set
in the YAML file and overridden on the command line (TRL's `TrlParser`).

Output folder: the model (a `*ForSequenceClassification` checkpoint, LoRA merged), its
tokenizer and `reward_stats.json` (mean/std of scores on the reference set, used to
normalise rewards downstream); with `ensemble_size: N`, one such folder per member under
`member_<i>/` and an `ensemble.json` listing them. Beside the model, as transformers'
example scripts leave it: `trainer_state.json` (the whole log history), `train_results.json`,
`eval_results.json`, `all_results.json`, and with `--report_to tensorboard` the event files
under `runs/`; with held-out data and an `eval_strategy`, `eval_metrics.png` (the numbers
of `rlhf eval-rm` at every evaluation, docs/reward_models.md). An ensemble's members each
hold their own; its top-level `trainer_state.json` has every member's log history, each
entry tagged with its `member`, and its `eval_metrics.png` every member's line.

An output folder holding an earlier run is refused unless `--overwrite true` (the earlier
run is deleted once the data and model are checked) or `--resume_from_checkpoint` (a
`checkpoint-N` folder, or `true` for the newest one under `--output_dir`).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Dataset
from peft import get_peft_model
from transformers import TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, get_peft_config
from trl.trainer.utils import disable_dropout_in_model

from reward_model.benchmarks import examples_from_comparisons
from reward_model.collate import ComparisonCollator, tokenize_comparisons
from reward_model.modeling import RewardModel, check_padding_free, score_token_lists, sequence_scores
from reward_model.plots import plot_checkpoint_metrics
from reward_model.trainer import LOSSES, HeldOutReport, PreferenceRewardTrainer
from rlhf.config import ConfigError, check_report_to, run_main
from rlhf.config import parse_config as parse_dataclass
from rlhf.ensemble import bootstrap_indices
from rlhf.losses import bradley_terry_loss
from rlhf.models import ModelNotFoundError, load_model, load_tokenizer
from rlhf.outputs import check_output_folder, start_output_folder, write_text
from rlhf.precision import PrecisionChoice, device_type, random_token_ids, requested_precision, resolve_precision
from rlhf.preferences import load_comparisons


@dataclass
class RewardModelConfig(TrainingArguments):
    """Reward-model fields; everything else is transformers' `TrainingArguments`."""

    model_name_or_path: str = field(default="tiny-random-llama", metadata={"help": "model name or path (toolkit names: smollm2-135m-instruct, tiny-random-llama); a saved reward model or ensemble warm-starts each member from its namesake"})
    train_data: str | None = field(default=None, metadata={"help": "preference data in any format of docs/data_formats.md: a JSONL/JSON/parquet file, a datasets folder (save_to_disk) or a hub id from the local cache"})
    eval_data: str | None = field(default=None, metadata={"help": "held-out preference data, as train_data (optional)"})
    dataset_train_split: str = field(default="train", metadata={"help": "split of a train_data DatasetDict to train on (its only split if it has one)"})
    dataset_test_split: str = field(default="test", metadata={"help": "split of an eval_data DatasetDict to evaluate on (its only split if it has one)"})
    data_format: str = field(default="auto", metadata={"help": "auto | trl | hh | ranked | core"})
    eval_fraction: float = field(default=0.0, metadata={"help": "share of prompts held out for evaluation when eval_data is not given"})
    loss: str = field(default="bradley_terry", metadata={"help": "bradley_terry | best_of_k | pairwise_ranking | plackett_luce"})
    noise: float = field(default=0.0, metadata={"help": "Christiano's random-answer probability in the pair likelihood"})
    use_margin: bool = field(default=True, metadata={"help": "use the data's margin column (Llama-2 style)"})
    center_rewards_coefficient: float | None = field(default=None, metadata={"help": "reward centering (Eisenstein et al. 2023, eq. 2): adds coefficient x weighted mean over comparisons of (2 x mean reward)^2, which is TRL's (r_chosen + r_rejected)^2 on pairs; 0.01 recommended"})
    max_length: int | None = field(default=1024, metadata={"help": "longest sequence in tokens"})
    too_long: str = field(default="error", metadata={"help": "error | drop (counted) for comparisons over max_length"})
    ensemble_size: int = field(default=1, metadata={"help": "members trained on bootstrap resamples"})
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters (merged into the saved model)"})
    lora_r: int = field(default=16)
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.0)
    lora_target_modules: str = field(default="all-linear")
    backbone_layers: int | None = field(default=None, metadata={"help": "keep only the first N transformer layers: a smaller reward model from the same family (None = all)"})
    padding_side: str = field(default="right", metadata={"help": "right | left (scores are identical); unused with padding_free"})
    padding_free: bool = field(default=True, metadata={"help": "pack the sequences of a batch into rows instead of padding each (same scores, fewer tokens; checked once per model)"})
    disable_dropout: bool = field(default=True)
    overwrite: bool = field(default=False, metadata={"help": "replace an earlier run in output_dir (deleted once the data and model are checked); without it an earlier run is refused unless resumed"})
    precision: str = field(default="auto", metadata={"help": "auto = bf16 autocast where a short matmul probe finds it at least 1.1x faster than fp32 on this machine and the Bradley-Terry loss of random pairs under bf16 agrees with fp32 (within 2 percent), else fp32 (docs/precision.md); bf16 or fp32 to fix it. bf16: true (TRL's flag) means precision: bf16"})
    # TRL RewardConfig defaults that differ from TrainingArguments'
    learning_rate: float = field(default=1e-4)
    logging_steps: float = field(default=10)
    remove_unused_columns: bool = field(default=False)

    def __post_init__(self):
        self.precision = requested_precision(self.precision, self.bf16)
        self.bf16 = self.precision == "bf16"  # auto: set by train() once measured
        # transformers refuses bf16 on a machine without a GPU unless use_cpu says it is meant
        self.use_cpu = self.use_cpu or (self.bf16 and not torch.cuda.is_available())
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if self.too_long not in ("error", "drop"):
            raise ValueError(f"too_long: expected 'error' or 'drop', got {self.too_long!r}")
        if not 0.0 <= self.noise < 1.0:
            raise ValueError(f"noise: expected a probability in [0, 1), got {self.noise}")
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size: expected >= 1, got {self.ensemble_size}")
        if self.backbone_layers is not None and self.backbone_layers < 1:
            raise ValueError(f"backbone_layers: expected >= 1 or null, got {self.backbone_layers}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction: expected a share in [0, 1), got {self.eval_fraction}")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side: expected 'right' or 'left', got {self.padding_side!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: expected > 0, got {self.learning_rate}")


def split_by_prompt(comparisons: list, eval_fraction: float, seed: int, permutation=None) -> tuple[list, list]:
    """Hold out whole prompts, so no evaluation prompt is seen in training.

    ``permutation(n)`` orders the sorted distinct prompts (default: torch's seeded
    randperm); the first ``eval_fraction`` of them are held out."""
    if eval_fraction == 0:
        return comparisons, []
    prompts = sorted({json.dumps(c.prompt, sort_keys=True) for c in comparisons})
    if permutation is None:
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        order = permutation(len(prompts))
    held_out = {prompts[i] for i in order[: max(1, round(eval_fraction * len(prompts)))]}
    train = [c for c in comparisons if json.dumps(c.prompt, sort_keys=True) not in held_out]
    evaluation = [c for c in comparisons if json.dumps(c.prompt, sort_keys=True) in held_out]
    return train, evaluation


def lora_config(config: RewardModelConfig):
    """The LoRA adapters of a reward model, built the TRL way (`trl.get_peft_config`): a
    sequence-classification task whose freshly initialised score head is trained in full."""
    return get_peft_config(ModelConfig(use_peft=True, lora_task_type="SEQ_CLS", lora_r=config.lora_r,
                                       lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                       lora_target_modules=config.lora_target_modules,
                                       lora_modules_to_save=["score"]))


def initial_weights(config: RewardModelConfig, member: int) -> str:
    """Where member ``member`` starts: ``model_name_or_path``, or, when that is a saved reward
    model (a warm start from an earlier fit, as the live loop refits), the saved member of
    the same index (cycling when the saved ensemble is smaller)."""
    if not RewardModel.is_model_dir(config.model_name_or_path):
        return config.model_name_or_path
    folders = RewardModel.member_dirs(config.model_name_or_path)
    return str(folders[member % len(folders)])


def resume_checkpoint(config: RewardModelConfig) -> str | bool | None:
    """What to pass to ``Trainer.train(resume_from_checkpoint=...)``: None, a checkpoint
    folder, or True for the newest ``checkpoint-N`` (``--resume_from_checkpoint true`` or
    ``latest``; the command line gives it as text). A checkpoint that is not there is a
    ConfigError now, not a traceback after the model is built."""
    value = config.resume_from_checkpoint
    if value in (None, False, ""):
        return None
    if value is True or str(value).lower() in ("true", "latest"):
        first_member = Path(config.output_dir) / ("member_0" if config.ensemble_size > 1 else "")
        if not first_member.is_dir() or get_last_checkpoint(str(first_member)) is None:
            raise ConfigError("--resume_from_checkpoint", f"no checkpoint-N folder in {first_member} to resume; "
                                                          "expected a checkpoint folder, or true with one under --output_dir")
        return True
    if not Path(value).is_dir():
        raise ConfigError("--resume_from_checkpoint", f"{value} not found; expected a checkpoint-N folder, or true "
                                                      "for the newest one under --output_dir")
    return str(value)


def build_model(config: RewardModelConfig, seed: int, member: int = 0):
    overrides = {"num_hidden_layers": config.backbone_layers} if config.backbone_layers else {}
    # A cut backbone leaves the checkpoint's later layers unloaded by design; transformers'
    # load report would list each of their weights as UNEXPECTED, so it is silenced for
    # this load only (a new score head is expected anyway when starting from a causal LM).
    load_report = logging.getLogger("transformers.modeling_utils")
    level = load_report.level
    if config.backbone_layers:
        load_report.setLevel(logging.ERROR)
    try:
        model = load_model(initial_weights(config, member), kind="seq_cls", seed=seed, **overrides)
    finally:
        load_report.setLevel(level)
    if config.disable_dropout:
        disable_dropout_in_model(model)
    if config.use_lora:
        model = get_peft_model(model, lora_config(config))
    return model


def random_pairs_loss(model) -> torch.Tensor:
    """Bradley-Terry loss (eq. 14.5) of a few random token sequences paired up: precision
    auto's numerics check for the reward model (``rlhf.precision``)."""
    ids = random_token_ids(model.config.vocab_size, rows=4).to(model.device)
    scores = sequence_scores(model, ids, torch.ones_like(ids))
    return bradley_terry_loss(scores[0::2], scores[1::2])


def choose_run_precision(config: RewardModelConfig, model) -> PrecisionChoice:
    """The precision of the run (``rlhf.precision``), checked on the first member's model
    before it trains; when measured (auto), printed as a note on the main process."""
    model.eval()  # the check compares precisions, not dropout masks; Trainer switches back to train
    choice = resolve_precision(config.precision, device_type(config.use_cpu),
                               loss_fn=functools.partial(random_pairs_loss, model), check_device=model.device.type)
    if config.precision == "auto" and PartialState().is_main_process:
        print(choice.note(), file=sys.stderr)
    return choice


def reward_statistics(model, sequences: list[list[int]], pad_token_id: int, batch_size: int = 16) -> dict:
    """Mean and std of the model's scores on reference sequences."""
    model.eval()
    scores = score_token_lists(model, sequences, pad_token_id, batch_size)
    return {"mean": scores.mean().item(), "std": max(scores.std().item(), 1e-6), "n": len(scores)}


def save_run_record(trainer: PreferenceRewardTrainer, train_metrics: dict) -> None:
    """What a TRL/transformers user finds in an output folder besides the model (as the
    example scripts write it): trainer_state.json with the whole log history, and
    train_results.json, eval_results.json (the last evaluation) and all_results.json."""
    trainer.save_state()
    trainer.save_metrics("train", train_metrics)
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if evaluations:
        trainer.save_metrics("eval", {key: value for key, value in evaluations[-1].items()
                                      if key.startswith("eval_") or key == "epoch"})


def ensemble_trainer_state(states: list[TrainerState]) -> str:
    """The top-level trainer_state.json of an ensemble: the members' log histories in one,
    each entry tagged with its ``member``. The rest is member 0's state: the bootstrap
    resamples have the training set's size, so every member runs the same steps."""
    log_history = [{**entry, "member": member} for member, state in enumerate(states) for entry in state.log_history]
    return json.dumps(asdict(states[0]) | {"log_history": log_history}, indent=2, sort_keys=True) + "\n"


def train(config: RewardModelConfig) -> dict:
    """Train (an ensemble of) reward model(s); returns a summary with the output paths."""
    if config.train_data is None:
        raise ConfigError("train_data", "expected a preference file (--train_data FILE or train_data: in the YAML)")
    check_report_to(config.report_to)
    comparisons = load_comparisons(config.train_data, config.data_format, config.dataset_train_split, "--train_data")
    if config.eval_data:
        train_comparisons, eval_comparisons = comparisons, load_comparisons(
            config.eval_data, config.data_format, config.dataset_test_split, "--eval_data")
    else:
        train_comparisons, eval_comparisons = split_by_prompt(comparisons, config.eval_fraction, config.seed)
    resume = resume_checkpoint(config)
    try:
        tokenizer = load_tokenizer(initial_weights(config, 0), padding_side=config.padding_side)
    except ModelNotFoundError as err:
        raise ConfigError("--model_name_or_path", f"{err}; expected a toolkit model name, a model folder or a hub id") from None
    train_examples, left_out = tokenize_comparisons(train_comparisons, tokenizer, config.max_length, config.too_long)
    eval_examples, eval_left_out = tokenize_comparisons(eval_comparisons, tokenizer, config.max_length, config.too_long)
    if not train_examples:
        raise ConfigError(config.train_data, f"no trainable comparison (left out: {left_out}); expected at least one "
                                             "comparison within --max_length")
    reference = [ids for example in train_examples for ids in example["input_ids"]]
    # Every evaluation reports as rlhf eval-rm does, on the held-out comparisons that were tokenised.
    held_out = dict(zip([e["index"] for e in eval_examples],
                        examples_from_comparisons([eval_comparisons[e["index"]] for e in eval_examples])[0]))
    eval_batch = config.per_device_eval_batch_size * PartialState().num_processes
    if held_out and config.eval_strategy != "no" and config.dataloader_drop_last and len(held_out) % eval_batch:
        raise ConfigError("--dataloader_drop_last", f"would leave {len(held_out) % eval_batch} of the {len(held_out)} "
                                                    f"held-out comparisons out of every evaluation (batches of "
                                                    f"{eval_batch}); expected false with held-out data")
    collator = ComparisonCollator(tokenizer.pad_token_id, padding_side=config.padding_side,
                                  padding_free=config.padding_free)

    # The inputs are good: replace an earlier run (once every process has checked the folder).
    state = PartialState()
    state.wait_for_everyone()
    if state.is_main_process:
        start_output_folder(config.output_dir, config.overwrite)
    state.wait_for_everyone()
    output_dir = Path(config.output_dir)
    members = []
    resamples = (bootstrap_indices(len(train_examples), config.ensemble_size,
                                   torch.Generator().manual_seed(config.seed))
                 if config.ensemble_size > 1 else [torch.arange(len(train_examples))])
    histories, states = [], []
    for member, indices in enumerate(resamples):
        member_dir = output_dir / f"member_{member}" if config.ensemble_size > 1 else output_dir
        model = build_model(config, seed=config.seed + member, member=member)
        if member == 0:
            precision = choose_run_precision(config, model)
            config = replace(config, bf16=precision.precision == "bf16")
        args = config
        if config.ensemble_size > 1:
            # Each member is a complete output folder (its own trainer_state.json and
            # runs/ TensorBoard logs) and a run of its own in the trackers.
            args = replace(config, output_dir=str(member_dir), seed=config.seed + member,
                           run_name=f"{config.run_name or output_dir.name}-member_{member}")
        if config.padding_free:
            check_padding_free(model, tokenizer.pad_token_id)
        trainer = PreferenceRewardTrainer(
            model=model, args=args, data_collator=collator, processing_class=tokenizer,
            train_dataset=Dataset.from_list([train_examples[i] for i in indices.tolist()]),
            eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
            loss_type=config.loss, noise=config.noise, use_margin=config.use_margin,
            center_rewards_coefficient=config.center_rewards_coefficient,
            compute_metrics=HeldOutReport(held_out) if held_out else None,
        )
        result = trainer.train(resume_from_checkpoint=resume)
        save_run_record(trainer, result.metrics | precision.record())
        histories.append(trainer.state.log_history)
        states.append(trainer.state)
        final = trainer.model
        if config.use_lora:
            final = final.merge_and_unload()
        if trainer.is_world_process_zero():
            final.config.pad_token_id = tokenizer.pad_token_id
            final.save_pretrained(member_dir)
            tokenizer.save_pretrained(member_dir)
            stats = reward_statistics(final, reference, tokenizer.pad_token_id)
            stats["reference"] = f"{len(reference)} training completions"
            RewardModel.write_stats(member_dir, stats)
        members.append(member_dir)
    if config.ensemble_size > 1 and trainer.is_world_process_zero():
        RewardModel.write_ensemble_index(output_dir, members)
        write_text(output_dir / TRAINER_STATE_NAME, ensemble_trainer_state(states))
    if held_out and trainer.compute_metrics.names and trainer.is_world_process_zero():
        plot_checkpoint_metrics(histories, sorted(trainer.compute_metrics.names), output_dir / "eval_metrics.png")
    return {"output_dir": str(output_dir), "members": [str(m) for m in members], "train_comparisons": len(train_examples),
            "eval_comparisons": len(eval_examples), "left_out": left_out, "eval_left_out": eval_left_out,
            "log_history": histories, "precision": precision.record()}


def parse_config(argv: list[str] | None = None) -> RewardModelConfig:
    """``--config YAML`` plus command-line overrides (rlhf.config: TRL's parser and rules)."""
    return parse_dataclass(RewardModelConfig, argv, prog="python -m reward_model.train")


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    check_output_folder(config.output_dir, "--output_dir", config.overwrite, resume=resume_checkpoint(config) is not None,
                        resume_flag="--resume_from_checkpoint true")
    summary = train(config)
    if not PartialState().is_main_process:
        return 0
    last = [entry for entry in summary["log_history"][-1] if "eval_accuracy" in entry]
    print(f"trained {len(summary['members'])} model(s) on {summary['train_comparisons']} comparisons "
          f"(left out: {summary['left_out']}); saved to {summary['output_dir']}")
    if last:
        print(f"held-out accuracy {last[-1]['eval_accuracy']:.3f} on {summary['eval_comparisons']} comparisons")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
