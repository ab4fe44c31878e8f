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
            config: EnsembleTrainConfig | None = None, progress: bool = False) -> list[float]:
        """Train every member on its own bootstrap resample with the Bradley-Terry loss.

        labels = P(A preferred) in [0, 1] (0.5 for ties). Returns each member's final
        training loss. Normalisation is refit afterwards on all the segments' steps."""
        config = config or EnsembleTrainConfig()
        if not (segments_a.shape == segments_b.shape and segments_a.shape[0] == labels.shape[0]):
            raise ValueError(f"segments_a {tuple(segments_a.shape)}, segments_b {tuple(segments_b.shape)} and "
                             f"labels {tuple(labels.shape)} must agree on the number of pairs")
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
                    score_a = member(segments_a[batch]).squeeze(-1).sum(-1)
                    score_b = member(segments_b[batch]).squeeze(-1).sum(-1)
                    loss = bradley_terry_loss(score_a, score_b, labels[batch], noise=config.noise)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            final_losses.append(loss.item())
        self.fit_normalization(torch.cat([segments_a, segments_b]))
        return final_losses
