"""Reward ensembles and query selection (Christiano et al. 2017; seed section 14.3).

- Each member is trained on a bootstrap resample of the comparisons (`bootstrap_indices`).
- Each member is normalised to zero mean and unit std on reference data, so members are
  comparable and the learned reward has a fixed scale (`Normalizer`).
- Predictions are the mean of the normalised members, with their std as uncertainty.
- Queries are the candidate pairs the members disagree on most (`select_queries`), or a
  random subset (the paper notes disagreement sometimes hurts).

`SegmentRewardEnsemble` is the ready-made case for segments of (observation, action)
features: members are small MLPs giving per-step rewards, a segment's score is their sum
(eq. 14.3), and training uses the core's `bradley_terry_loss` (eq. 14.7). The text reward
model trains its members through transformers' Trainer instead and reuses the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from torch import nn

from rlhf.losses import bradley_terry_loss


def bootstrap_indices(n: int, num_members: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """One resample of size n, drawn with replacement, per member."""
    if n < 1 or num_members < 1:
        raise ValueError(f"need n >= 1 and num_members >= 1, got n={n}, num_members={num_members}")
    return [torch.randint(0, n, (n,), generator=generator) for _ in range(num_members)]


class Normalizer(nn.Module):
    """Affine map to zero mean and unit std on reference scores, saved with the model."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("std", torch.tensor(1.0))

    @torch.no_grad()
    def fit(self, reference_scores: torch.Tensor) -> "Normalizer":
        if reference_scores.numel() < 2:
            raise ValueError("normalisation needs at least 2 reference scores")
        self.mean.copy_(reference_scores.float().mean())
        self.std.copy_(reference_scores.float().std().clamp_min(1e-8))
        return self

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.mean) / self.std


def ensemble_statistics(member_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over the member axis (dim 0) of normalised member scores."""
    if member_scores.shape[0] == 1:
        return member_scores[0], torch.zeros_like(member_scores[0])
    return member_scores.mean(dim=0), member_scores.std(dim=0)


DisagreementMethod = Literal["variance", "probability_std", "probability_variance", "vote"]
DISAGREEMENT_METHODS = ("variance", "probability_std", "probability_variance", "vote")


def disagreement(member_scores_a: torch.Tensor, member_scores_b: torch.Tensor,
                 method: DisagreementMethod = "probability_std") -> torch.Tensor:
    """How much the members disagree on each candidate pair; inputs are (members, pairs).

    With P_m(A > B) = sigmoid(R_A - R_B) the Bradley-Terry preference of member m
    (Christiano et al. 2017, eq. 1), every spread is over members (population, no Bessel):

    - ``probability_std``: std of P(A > B) (B-Pref's query selection; robot queries).
    - ``probability_variance``: variance of P(A > B), at most 0.25 (the labelling app's
      active ordering).
    - ``variance``: variance of R_A - R_B (the `imitation` library's "logit").
    - ``vote``: p(1 - p) of the share p of members preferring A (Christiano's "which
      segment is preferred" count)."""
    diff = member_scores_a - member_scores_b
    if method == "probability_std":
        return torch.sigmoid(diff).std(dim=0, unbiased=False)
    if method == "probability_variance":
        return torch.sigmoid(diff).var(dim=0, unbiased=False)
    if method == "variance":
        return diff.var(dim=0, unbiased=False)
    if method == "vote":
        share = (diff > 0).float().mean(dim=0)
        return share * (1 - share)
    raise ValueError(f"unknown disagreement method {method!r}; expected one of {DISAGREEMENT_METHODS}")


def ranking_disagreement(member_scores: torch.Tensor, method: DisagreementMethod = "probability_variance") -> float:
    """Disagreement of one K-way item, averaged over its K(K-1)/2 pairs of completions.

    ``member_scores`` is (members, K); a single member or K < 2 gives 0."""
    members, k = member_scores.shape
    if members < 2 or k < 2:
        return 0.0
    first, second = torch.triu_indices(k, k, offset=1)
    return disagreement(member_scores[:, first], member_scores[:, second], method).mean().item()


def select_queries(member_scores_a: torch.Tensor, member_scores_b: torch.Tensor, num_queries: int,
                   method: Literal["disagreement", "random"] = "disagreement",
                   disagreement_method: DisagreementMethod = "probability_std",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the candidate pairs to send to the labeler.

    Christiano et al. sample ~10x more candidate pairs than needed and keep those with the
    highest disagreement; ``method="random"`` keeps a uniform random subset instead."""
    num_candidates = member_scores_a.shape[-1]
    if not 0 < num_queries <= num_candidates:
        raise ValueError(f"num_queries must be in [1, {num_candidates}] (the candidate pool), got {num_queries}")
    if method == "random":
        return torch.randperm(num_candidates, generator=generator)[:num_queries]
    if method != "disagreement":
        raise ValueError(f"unknown query selection {method!r}; expected 'disagreement' or 'random'")
    if member_scores_a.shape[0] < 2:
        raise ValueError("disagreement needs an ensemble of at least 2 members")
    scores = disagreement(member_scores_a, member_scores_b, disagreement_method)
    return torch.topk(scores, num_queries).indices


# =====================================================================================
# Segment rewards: an ensemble of per-step MLPs
# =====================================================================================

def temporal_crop_masks(num_pairs: int, length: int, crop_range: int,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SURF's temporal cropping (Park et al. 2022, "temporal data augmentation"): per pair one window length L,
    uniform in [length - crop_range, length], at independent uniform starts in the two
    segments; a preference is assumed to hold for the windows too. Returns boolean (pairs,
    length) masks of the steps kept in A and in B.

    SURF's code stores segments with crop_range extra steps on each side and draws L up to
    length + crop_range; segments here are stored at their labelled length, so windows
    only shrink."""
    lengths = torch.randint(length - crop_range, length + 1, (num_pairs,), generator=generator)
    steps = torch.arange(length)
    masks = []
    for _ in range(2):
        starts = (torch.rand(num_pairs, generator=generator) * (length - lengths + 1)).long()
        masks.append((steps >= starts[:, None]) & (steps < (starts + lengths)[:, None]))
    return masks[0], masks[1]


def confident_pseudo_labels(scores_a: torch.Tensor, scores_b: torch.Tensor,
                            threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SURF's pseudo-labels (Park et al. 2022, "semi-supervised reward learning"): label = 1 when P(A > B) =
    sigmoid(score_a - score_b) >= 0.5, else 0; kept (mask 1.0) where max(P, 1 - P) >= threshold."""
    prob_a = torch.sigmoid(scores_a - scores_b)
    labels = (prob_a >= 0.5).to(scores_a.dtype)
    return labels, (torch.maximum(prob_a, 1 - prob_a) >= threshold).to(scores_a.dtype)


def cropped_scores(member: nn.Module, segments_a: torch.Tensor, segments_b: torch.Tensor, crop_range: int,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A member's segment scores (sums of per-step rewards) of a batch of pairs, over
    `temporal_crop_masks` windows when crop_range > 0."""
    steps_a, steps_b = member(segments_a).squeeze(-1), member(segments_b).squeeze(-1)
    if crop_range == 0:
        return steps_a.sum(-1), steps_b.sum(-1)
    mask_a, mask_b = temporal_crop_masks(steps_a.shape[0], steps_a.shape[1], crop_range, generator)
    return (steps_a * mask_a).sum(-1), (steps_b * mask_b).sum(-1)


def pseudo_label_loss(member: nn.Module, unlabeled_a: torch.Tensor, unlabeled_b: torch.Tensor,
                      config: "EnsembleTrainConfig", generator: torch.Generator | None) -> torch.Tensor:
    """SURF's unlabelled term: mean over the batch of the cross-entropy of the cropped scores
    against the member's confident uncropped pseudo-labels (0 where not confident)."""
    with torch.no_grad():
        labels, keep = confident_pseudo_labels(member(unlabeled_a).squeeze(-1).sum(-1),
                                               member(unlabeled_b).squeeze(-1).sum(-1), config.pseudo_label_threshold)
    score_a, score_b = cropped_scores(member, unlabeled_a, unlabeled_b, config.crop_range, generator)
    return (bradley_terry_loss(score_a, score_b, labels, reduction="none") * keep).mean()


def mlp(input_dim: int, hidden: Sequence[int] = (64, 64), negative_slope: float = 0.01) -> nn.Module:
    """Christiano et al.'s MuJoCo reward net: 2 x 64, leaky ReLU (alpha 0.01), scalar output."""
    layers, width = [], input_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.LeakyReLU(negative_slope)]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


@dataclass
class EnsembleTrainConfig:
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    noise: float = 0.0  # Christiano's random-answer probability in the preference model
    seed: int = 0
    crop_range: int = 0  # SURF temporal cropping: windows up to this many steps shorter (temporal_crop_masks); 0 = off
    pseudo_label_threshold: float = 0.0  # SURF: unlabelled pairs a member is this confident on join the loss; 0 = off
    pseudo_label_weight: float = 1.0  # SURF's lambda_u: weight of the pseudo-label loss


class SegmentRewardEnsemble(nn.Module):
    """N member networks r_i(features) -> per-step reward; a segment scores the sum over steps.

    Features have shape (..., T, D) for segments of T steps, or (..., D) for single steps."""

    def __init__(self, input_dim: int, num_members: int = 3,
                 make_member: Callable[[int], nn.Module] | None = None, seed: int = 0):
        super().__init__()
        make_member = make_member or (lambda dim: mlp(dim))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.members = nn.ModuleList([make_member(input_dim) for _ in range(num_members)])
        self.normalizers = nn.ModuleList([Normalizer() for _ in range(num_members)])
        self.input_dim = input_dim

    def member_step_rewards(self, features: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        """(members, ...) per-step rewards."""
        outputs = [member(features).squeeze(-1) for member in self.members]
        if normalized:
            outputs = [norm(out) for norm, out in zip(self.normalizers, outputs)]
        return torch.stack(outputs)

    def member_segment_scores(self, segments: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        """(members, num_segments) summed rewards of (num_segments, T, D) segments."""
        return self.member_step_rewards(segments, normalized).sum(dim=-1)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, batch_size: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the normalised per-step rewards, computed in batches."""
        means, stds = [], []
        flat = features.reshape(-1, features.shape[-1])
        for start in range(0, flat.shape[0], batch_size):
            mean, std = ensemble_statistics(self.member_step_rewards(flat[start:start + batch_size]))
            means.append(mean)
            stds.append(std)
        shape = features.shape[:-1]
        return torch.cat(means).reshape(shape), torch.cat(stds).reshape(shape)

    @torch.no_grad()
    def fit_normalization(self, reference_features: torch.Tensor) -> None:
        """Per-member zero mean / unit std of per-step rewards on reference steps."""
        flat = reference_features.reshape(-1, reference_features.shape[-1])
        raw = self.member_step_rewards(flat, normalized=False)
        for norm, scores in zip(self.normalizers, raw):
            norm.fit(scores)

    def fit(self, segments_a: torch.Tensor, segments_b: torch.Tensor, labels: torch.Tensor,
            config: EnsembleTrainConfig | None = None, progress: bool = False,
            unlabeled: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[float]:
        """Train every member on its own bootstrap resample with the Bradley-Terry loss.

        labels = P(A preferred) in [0, 1] (0.5 for ties). Returns each member's final
        training loss. Normalisation is refit afterwards on all the segments' steps.

        SURF (Park et al. 2022), as its official `semi_train_reward` does it: with
        `config.crop_range` every pair is seen through `temporal_crop_masks` windows; with
        `config.pseudo_label_threshold` and `unlabeled` = (segments_a, segments_b) each batch
        also draws as many unlabelled pairs (SURF's mu = 1), labels them by the member's own
        uncropped prediction (`confident_pseudo_labels`) and adds
        `pseudo_label_weight` x the mean over the batch of their (cropped) loss, zero where
        the member is not confident."""
        config = config or EnsembleTrainConfig()
        if not (segments_a.shape == segments_b.shape and segments_a.shape[0] == labels.shape[0]):
            raise ValueError(f"segments_a {tuple(segments_a.shape)}, segments_b {tuple(segments_b.shape)} and "
                             f"labels {tuple(labels.shape)} must agree on the number of pairs")
        if not 0 <= config.crop_range < segments_a.shape[1]:
            raise ValueError(f"crop_range must be in [0, segment length {segments_a.shape[1]}), "
                             f"got {config.crop_range}")
        semi_supervised = config.pseudo_label_threshold > 0 and unlabeled is not None and len(unlabeled[0]) > 0
        generator = torch.Generator().manual_seed(config.seed)
        resamples = bootstrap_indices(labels.shape[0], len(self.members), generator)
        final_losses = []
        iterator = zip(self.members, resamples)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(list(iterator), desc="reward ensemble", unit="member")
        for member, indices in iterator:
            optimizer = torch.optim.AdamW(member.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
            for _ in range(config.epochs):
                order = indices[torch.randperm(len(indices), generator=generator)]
                for start in range(0, len(order), config.batch_size):
                    batch = order[start:start + config.batch_size]
                    score_a, score_b = cropped_scores(member, segments_a[batch], segments_b[batch], config.crop_range,
                                                      generator)
                    loss = bradley_terry_loss(score_a, score_b, labels[batch], noise=config.noise)
                    if semi_supervised:
                        pick = torch.randint(0, len(unlabeled[0]), (len(batch),), generator=generator)
                        loss = loss + config.pseudo_label_weight * pseudo_label_loss(
                            member, unlabeled[0][pick], unlabeled[1][pick], config, generator)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            final_losses.append(loss.item())
        self.fit_normalization(torch.cat([segments_a, segments_b]))
        return final_losses
