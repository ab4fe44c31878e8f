"""SURF's options (Park et al. 2022) in the reward ensemble's fit: temporal cropping and
confident pseudo-labels, each against a plain loop or hand values, then in a robot run."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from rlhf.config import ConfigError
from rlhf.ensemble import (EnsembleTrainConfig, SegmentRewardEnsemble, confident_pseudo_labels, cropped_scores,
                           pseudo_label_loss, temporal_crop_masks)
from robot.config import RobotConfig


def test_crop_windows_share_one_length_per_pair_and_start_anywhere():
    generator = torch.Generator().manual_seed(0)
    mask_a, mask_b = temporal_crop_masks(2000, 10, 3, generator)
    lengths_a, lengths_b = mask_a.sum(1), mask_b.sum(1)
    assert torch.equal(lengths_a, lengths_b)
    assert set(lengths_a.tolist()) == {7, 8, 9, 10}  # [10 - 3, 10]
    for mask in (mask_a, mask_b):  # one contiguous window per row
        steps = mask.long()
        assert ((steps[:, 1:] - steps[:, :-1]) == 1).sum(1).le(1).all()
        assert ((steps[:, 1:] - steps[:, :-1]) == -1).sum(1).le(1).all()
    starts = mask_a.long().argmax(1)
    assert set(starts[lengths_a == 7].tolist()) == {0, 1, 2, 3}  # every start the length allows
    assert not torch.equal(mask_a, mask_b)  # independent starts
    full_a, full_b = temporal_crop_masks(5, 10, 0, generator)
    assert full_a.all() and full_b.all()


def test_confident_pseudo_labels_by_hand():
    # P(A > B) = sigmoid(d): d = 3 -> 0.953, d = -0.2 -> 0.450, d = -4 -> 0.018
    labels, keep = confident_pseudo_labels(torch.tensor([3.0, 0.0, -1.0]), torch.tensor([0.0, 0.2, 3.0]), 0.95)
    assert labels.tolist() == [1.0, 0.0, 0.0]
    assert keep.tolist() == [1.0, 0.0, 1.0]


class SumOfFirstFeature(nn.Module):
    """A 'member' whose per-step reward is the first feature: scores can be checked by hand."""

    def forward(self, x):
        return x[..., :1]


def test_cropped_scores_sum_the_kept_steps():
    segments_a = torch.arange(12.0).reshape(2, 6, 1)
    segments_b = -torch.arange(12.0).reshape(2, 6, 1)
    score_a, score_b = cropped_scores(SumOfFirstFeature(), segments_a, segments_b, 2, torch.Generator().manual_seed(3))
    mask_a, mask_b = temporal_crop_masks(2, 6, 2, torch.Generator().manual_seed(3))  # the same draws
    for row in range(2):
        assert score_a[row].item() == sum(segments_a[row, t, 0].item() for t in range(6) if mask_a[row, t])
        assert score_b[row].item() == sum(segments_b[row, t, 0].item() for t in range(6) if mask_b[row, t])
    uncropped = cropped_scores(SumOfFirstFeature(), segments_a, segments_b, 0, None)
    assert uncropped[0].tolist() == [15.0, 51.0] and uncropped[1].tolist() == [-15.0, -51.0]


def test_pseudo_label_loss_by_hand():
    # Uncropped scores: A sums to 4 and 0.5, B to 0 and 0; with threshold 0.9 only pair 0 is confident
    # (sigmoid(4) = 0.982 vs sigmoid(0.5) = 0.622), labelled A; the loss is its -log sigmoid(4), halved
    # by the mean over the batch of 2.
    unlabeled_a = torch.tensor([[[2.0], [2.0]], [[0.25], [0.25]]])
    unlabeled_b = torch.zeros(2, 2, 1)
    config = EnsembleTrainConfig(pseudo_label_threshold=0.9)
    loss = pseudo_label_loss(SumOfFirstFeature(), unlabeled_a, unlabeled_b, config, None)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-4.0))) / 2)


def planted(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of 8-step segments whose true per-step reward is feature 0 minus feature 1."""
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randn(count, 8, 3, generator=generator), torch.randn(count, 8, 3, generator=generator)
    true = lambda s: (s[..., 0] - s[..., 1]).sum(-1)  # noqa: E731
    return a, b, (true(a) > true(b)).float()


def test_fit_with_both_options_learns_the_planted_reward():
    train_a, train_b, labels = planted(60, 0)
    unlabeled_a, unlabeled_b, _ = planted(600, 1)
    test_a, test_b, test_labels = planted(500, 2)
    ensemble = SegmentRewardEnsemble(3, num_members=2, seed=0)
    config = EnsembleTrainConfig(epochs=30, batch_size=16, learning_rate=3e-3, crop_range=2,
                                 pseudo_label_threshold=0.95, seed=0)
    ensemble.fit(train_a, train_b, labels, config, unlabeled=(unlabeled_a, unlabeled_b))
    with torch.no_grad():
        scores_a, scores_b = ensemble.member_segment_scores(test_a).mean(0), ensemble.member_segment_scores(test_b).mean(0)
    accuracy = ((scores_a > scores_b).float() == test_labels).float().mean().item()
    assert accuracy > 0.85
    with pytest.raises(ValueError, match="crop_range must be in"):
        ensemble.fit(train_a, train_b, labels, EnsembleTrainConfig(crop_range=8))


def test_robot_run_draws_unlabelled_pairs_per_label(tmp_path):
    from robot.train import main as train_main

    run_dir = tmp_path / "surf"
    assert train_main(["--config", "configs/robot/smoke.yaml", "--out_dir", str(run_dir), "--total_timesteps", "1600",
                       "--num_rounds", "1", "--label_budget", "20", "--surf_crop_range", "5",
                       "--surf_pseudo_label_threshold", "0.95", "--surf_unlabeled_factor", "4"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["labels"] for row in rows] == [5, 20]
    assert [row["num_unlabeled_pairs"] for row in rows] == [20, 80]  # 4 random pool pairs per label asked
    assert all(np.isfinite(row["reward_loss"]) for row in rows if "reward_loss" in row)


def test_bad_surf_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="^surf_crop_range: expected in \\[0, segment_length = 25\\), got 25$"):
        RobotConfig(surf_crop_range=25)
    with pytest.raises(ConfigError, match="^surf_pseudo_label_threshold: expected 0 \\(off\\) or in \\(0.5, 1\\)"):
        RobotConfig(surf_pseudo_label_threshold=0.4)
