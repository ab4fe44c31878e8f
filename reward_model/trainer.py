"""The reward-model trainer: transformers' `Trainer` with a per-prompt preference loss.

Accelerate, DeepSpeed/FSDP, mixed precision, gradient accumulation, checkpointing, resume
and trackers all come from `Trainer`; only `compute_loss` and the metrics are ours.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Literal

import torch
from transformers import EvalPrediction, Trainer

from reward_model.benchmarks import DEFAULT_SUBSET, ScoredExample
from reward_model.evaluate import evaluate_scores
from reward_model.modeling import sequence_scores
from rlhf.losses import (
    best_of_k_loss,
    bradley_terry_loss,
    center_rewards_penalty,
    pairwise_ranking_loss,
    plackett_luce_loss,
)
from rlhf.config import ConfigError
from rlhf.metrics import mean_margin, pairwise_accuracy, ranking_pairs

LOSSES = ("bradley_terry", "best_of_k", "pairwise_ranking", "plackett_luce")
LossName = Literal["bradley_terry", "best_of_k", "pairwise_ranking", "plackett_luce"]


def scatter_scores(flat_scores: torch.Tensor, item_mask: torch.Tensor) -> torch.Tensor:
    """(sum K,) scores of the collated items -> (batch, K_max), zeros where masked."""
    scores = flat_scores.new_zeros(item_mask.shape)
    return scores.masked_scatter(item_mask, flat_scores)


def comparison_loss(scores: torch.Tensor, batch: dict, loss: LossName = "bradley_terry", noise: float = 0.0,
                    use_margin: bool = True, center_rewards_coefficient: float | None = None) -> torch.Tensor:
    """Per-prompt loss, weighted mean over the batch.

    Pairs use `bradley_terry_loss` (ties as 0.5, margins, Christiano noise) whatever the
    K-way loss is: with K = 2 the K-way losses equal it (tested in the core), and only it
    knows margins and noise. Rows with K > 2 use the configured K-way loss; for
    ``bradley_terry`` that is InstructGPT's all-pairs loss (eq. 15.6), Bradley-Terry on
    every ranked pair, averaged per prompt."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    mask, ranks = batch["item_mask"], batch["ranks"]
    per_row = torch.zeros(scores.shape[0], dtype=scores.dtype, device=scores.device)
    pairs = batch["is_pair"]
    if pairs.any():
        margin = batch["margin"][pairs].to(scores.dtype) if use_margin else None
        per_row[pairs] = bradley_terry_loss(scores[pairs, 0], scores[pairs, 1], batch["label"][pairs].to(scores.dtype),
                                            margin=margin, noise=noise, reduction="none")
    kway = ~pairs
    if kway.any():
        if loss == "best_of_k":
            choice = batch["choice"][kway]
            if (choice < 0).any():
                raise ValueError("loss best_of_k needs one best item per comparison; a batch row has a tie at the top")
            per_row[kway] = best_of_k_loss(scores[kway], choice, mask[kway], reduction="none")
        elif loss == "plackett_luce":
            per_row[kway] = plackett_luce_loss(scores[kway], ranks[kway], mask[kway], reduction="none")
        else:
            per_row[kway] = pairwise_ranking_loss(scores[kway], ranks[kway], mask[kway], reduction="none")
    weight = batch["weight"].to(scores.dtype)
    total = (per_row * weight).sum() / weight.sum()
    if center_rewards_coefficient:
        # Weighted like the preference loss, so a comparison counts as much in both terms.
        total = total + center_rewards_coefficient * center_rewards_penalty(scores, mask, weight)
    return total


@torch.no_grad()
def pair_metrics(scores: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """TRL-named metrics over the ordered pairs each comparison induces, pooled over the batch
    (`rlhf.metrics.ranking_pairs`; ranks -1 = unranked, masked items are padding).

    accuracy: strictly better-ranked item scored strictly higher (equal scores are wrong,
    labelled ties left out); accuracy_ties_half: half credit for equal scores and for
    labelled ties (full credit impossible, half for any order); margin: mean score gap
    better - worse (`rlhf.metrics.pairwise_accuracy` and `mean_margin`). Each is 0.0 when
    the batch has no such pair."""
    scores_a, scores_b, labels = [], [], []
    for row_scores, row_ranks, row_mask in zip(scores.tolist(), ranks.tolist(), mask.tolist()):
        kept = [(s, None if r < 0 else r) for s, r, m in zip(row_scores, row_ranks, row_mask) if m]
        strict, tied = ranking_pairs([r for _, r in kept])
        for (i, j), label in [(pair, 1.0) for pair in strict] + [(pair, 0.5) for pair in tied]:
            scores_a.append(kept[i][0])
            scores_b.append(kept[j][0])
            labels.append(label)
    n_strict = labels.count(1.0)
    chosen = [a for a, label in zip(scores_a, labels) if label == 1.0]
    rejected = [b for b, label in zip(scores_b, labels) if label == 1.0]
    return {
        "accuracy": pairwise_accuracy(scores_a, scores_b, labels, score_ties="wrong", labelled_ties="skip")
        if n_strict else 0.0,
        "accuracy_ties_half": pairwise_accuracy(scores_a, scores_b, labels, score_ties="half", labelled_ties="half")
        if labels else 0.0,
        "margin": mean_margin(chosen, rejected) if n_strict else 0.0,
    }


def _name(section: str) -> str:
    """A section or subset name as part of a metric name: "Chat Hard" -> "chat_hard"."""
    return section.lower().replace(" ", "_")


def checkpoint_metrics(report: dict) -> dict[str, float]:
    """The numbers of an `evaluate_scores` report that a training run logs at every
    evaluation, flat and named for the trainer's logs (transformers adds the ``eval_``
    prefix, trackers show ``eval/<name>``). Numbers the data leaves undefined (None: no
    labelled ties, a constant length, ...) are left out: trackers log numbers only."""
    accuracy, rewards, calibration = report["accuracy"], report["rewards"], report["calibration"] or {}
    length_bias, ranking = report["length_bias"], report["ranking"] or {}
    metrics = {
        "accuracy": accuracy["accuracy"],
        "accuracy_with_ties_half_credit": accuracy.get("with_ties_half_credit", {}).get("accuracy"),
        "mean_chosen": rewards["mean_chosen"], "mean_rejected": rewards["mean_rejected"],
        "margin": rewards["mean_margin"],
        "ece": calibration.get("ece"), "brier": calibration.get("brier"),
        "kendall_tau_b": ranking.get("kendall_tau_b"), "top1_accuracy": ranking.get("top1_accuracy"),
        "length_bias_pearson_chars": length_bias["pearson_chars"],
        "length_bias_pearson_words": length_bias["pearson_words"],
        "length_bias_share_rm_prefers_longer": length_bias["share_rm_prefers_longer"],
        "length_bias_share_human_prefers_longer": length_bias["share_human_prefers_longer"],
    }
    for split, block in length_bias["accuracy_by_length"].items():
        metrics[f"length_bias_accuracy_{split}"] = block["accuracy"]
    if set(report["subsets"]) != {DEFAULT_SUBSET}:  # the data names its subsets
        for name, block in report["subsets"].items():
            metrics[f"subset_{name}_accuracy"] = block["accuracy"]
    if report["rewardbench_v1"]:
        metrics["rewardbench_v1_score"] = report["rewardbench_v1"]["score"]
        for section, value in report["rewardbench_v1"]["sections"].items():
            metrics[f"rewardbench_v1_{_name(section)}"] = value
    if report["rewardbench_v2"]:
        metrics["rewardbench_v2_score"] = report["rewardbench_v2"]["score"]
        for name, block in report["rewardbench_v2"]["subsets"].items():
            metrics[f"rewardbench_v2_{_name(name)}"] = block["score"]
    if report.get("rmbench"):
        for name in ("score", "hard", "normal", "easy"):
            metrics[f"rmbench_{name}"] = report["rmbench"][name]
    return {name: float(value) for name, value in metrics.items() if value is not None}


class HeldOutReport:
    """The Trainer's ``compute_metrics``: the `evaluate_scores` report (the numbers of
    ``rlhf eval-rm``) of the held-out comparisons, from the scores the evaluation loop
    already computed (no second pass), as `checkpoint_metrics`.

    ``examples`` maps each held-out example's ``index`` (the collated batch's ``index``) to
    its unscored `ScoredExample`. The predictions are the (rows, K_max) scores and the
    label ids the rows' indices, gathered from every process by the evaluation loop
    (accelerate's ``gather_for_metrics``, which drops the samples repeated to even out the
    last batch), so every process computes the same numbers. No bootstrap: the logs take
    the point estimates only. ``names`` collects the metric names logged so far."""

    def __init__(self, examples: dict[int, ScoredExample], n_bins: int = 10):
        self.examples, self.n_bins = examples, n_bins
        self.names: set[str] = set()

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        # One array of every batch's rows, or a list of per-batch arrays (eval_do_concat_batches false).
        label_ids, predictions = prediction.label_ids, prediction.predictions
        batches = zip(label_ids, predictions) if isinstance(label_ids, list) else [(label_ids, predictions)]
        rows = {index: row for ids, scores in batches for index, row in zip(ids.tolist(), scores.tolist())}
        if rows.keys() != self.examples.keys():
            raise RuntimeError(f"the evaluation scored {len(rows)} held-out comparisons, expected "
                               f"{len(self.examples)}")
        scored = [replace(example, scores=rows[index][:len(example.completions)])
                  for index, example in sorted(self.examples.items())]
        metrics = checkpoint_metrics(evaluate_scores(scored, bootstrap=0, n_bins=self.n_bins))
        self.names.update(metrics)
        return metrics


class PreferenceRewardTrainer(Trainer):
    """`Trainer` whose batches are comparisons (K items each) and whose loss is per prompt."""

    def __init__(self, *args, loss_type: LossName = "bradley_terry", noise: float = 0.0, use_margin: bool = True,
                 center_rewards_coefficient: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_type, self.noise, self.use_margin = loss_type, noise, use_margin
        self.center_rewards_coefficient = center_rewards_coefficient
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        flat = sequence_scores(model, inputs["input_ids"], inputs.get("attention_mask"),
                               position_ids=inputs.get("position_ids"), score_positions=inputs.get("score_positions"))
        scores = scatter_scores(flat, inputs["item_mask"])
        loss = comparison_loss(scores, inputs, self.loss_type, self.noise, self.use_margin,
                               self.center_rewards_coefficient)
        if mode == "train":
            # Counted in the TrainerState, which checkpoints save and resume restores.
            self.state.num_input_tokens_seen += self.accelerator.gather_for_metrics(inputs["num_tokens"]).sum().item()
        metrics = self._metrics[mode]
        metrics["num_tokens"] = [self.state.num_input_tokens_seen]
        all_scores = self.accelerator.gather_for_metrics(flat.detach())
        metrics["min_reward"].append(all_scores.min().item())
        metrics["mean_reward"].append(all_scores.mean().item())
        metrics["max_reward"].append(all_scores.max().item())
        if mode == "train" or self.compute_metrics is None or self.args.prediction_loss_only:
            # With compute_metrics (HeldOutReport) evaluation logs the whole held-out set's
            # accuracy and margin instead of these batch averages.
            for name, value in pair_metrics(scores.detach(), inputs["ranks"], inputs["item_mask"]).items():
                metrics[name].append(value)
        if return_outputs:
            return loss, {"scores": scores}
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Loss, and for ``compute_metrics`` (`HeldOutReport`) the (rows, K_max) scores with
        the rows' example indices as label ids."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only or "index" not in inputs:
            return loss.detach(), None, None
        return loss.detach(), outputs["scores"].detach().float(), inputs["index"]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        averaged = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        if mode == "eval":
            averaged = {f"eval_{key}": value for key, value in averaged.items()}
        logs.update(averaged)
        super().log(logs, start_time)
        self._metrics[mode].clear()
