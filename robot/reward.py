"""Reward learning from segment comparisons: data set, ensemble fit, queries, metrics.

The reward model is `rlhf.ensemble.SegmentRewardEnsemble` on (obs, action) step features,
each member reading the columns of a feature set (`feature_columns`: all, the state, or the
task-space relative positions): 3 members (2 x 64 leaky ReLU), bootstrap resamples, Bradley-Terry loss with Christiano's
10 % random-answer noise, each member normalised to zero mean / unit std per step.
Comparisons refer to segments by id, so simulated and human labels look the same
(`rlhf.preferences.Comparison`, core format, items = [segment_a, segment_b]).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from torch import nn

from rlhf.ensemble import EnsembleTrainConfig, SegmentRewardEnsemble, mlp, select_queries
from rlhf.labelers import make_teacher
from rlhf.metrics import pairwise_accuracy
from rlhf.preferences import Comparison
from robot.envs import ENV_IDS, TASKS
from robot.segments import Segments, distinct_pairs, random_pairs


class Standardize(nn.Module):
    """Fixed per-feature affine map to zero mean / unit std, set once from the first segments.

    Raw features mix joint angles (~1 rad) with centimetre-scale position differences; without
    this the small but decisive flange-target terms are learned slowly."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("is_set", torch.tensor(False))

    @torch.no_grad()
    def set(self, features: torch.Tensor) -> None:
        flat = features.reshape(-1, features.shape[-1])
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-3))
        self.is_set.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


FEATURE_SETS = ("obs_action", "obs", "relative", "relative_action")


def feature_columns(task: str, feature_set: str, obs_dim: int, action_dim: int) -> tuple[int, ...]:
    """Columns of the (obs, action) step features a reward member reads.

    - "obs_action": everything (Christiano et al.'s r(o, a));
    - "obs": the state only (actions are not visible in a clip);
    - "relative": the task-space relative positions a person judges a clip by (reach:
      flange - target). With the 30 (o, a) features and 700 noisy labels the ensemble
      also keys on joint angles, velocities and actions that merely correlate with good
      segments in the labelled data, and PPO then exploits those (measured: it rated the
      true-reward policy's reaching below the learned policy's hovering 10-15 cm away);
    - "relative_action": the relative positions and the action (r(o, a) without joint state)."""
    if feature_set == "obs_action":
        return tuple(range(obs_dim + action_dim))
    if feature_set == "obs":
        return tuple(range(obs_dim))
    if feature_set in ("relative", "relative_action"):
        name = {env_id: n for n, env_id in ENV_IDS.items()}.get(task, task)
        if name not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(TASKS))}")
        actions = tuple(range(obs_dim, obs_dim + action_dim)) if feature_set == "relative_action" else ()
        return tuple(TASKS[name].relative_obs) + actions
    raise ValueError(f"unknown reward feature set {feature_set!r}; expected one of {FEATURE_SETS}")


class SelectColumns(nn.Module):
    """Keep the given feature columns; stored as a buffer, so a checkpoint knows its inputs."""

    def __init__(self, columns):
        super().__init__()
        self.register_buffer("columns", torch.as_tensor(list(columns), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.columns)


def member_mlp(input_dim: int, hidden: int, dropout: float = 0.0) -> nn.Module:
    """2 x hidden leaky-ReLU MLP (`rlhf.ensemble.mlp`), with dropout after each hidden layer
    when `dropout` > 0 (Christiano et al. regularise the reward net with L2 and dropout)."""
    if dropout == 0.0:
        return mlp(input_dim, (hidden, hidden))
    return nn.Sequential(nn.Linear(input_dim, hidden), nn.LeakyReLU(0.01), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden), nn.LeakyReLU(0.01), nn.Dropout(dropout), nn.Linear(hidden, 1))


def make_ensemble(input_dim: int, members: int, hidden: int, seed: int, output: str = "tanh",
                  columns=None, dropout: float = 0.0) -> SegmentRewardEnsemble:
    """Christiano's MuJoCo reward net (2 x hidden, leaky ReLU 0.01) behind a feature standardiser.

    The ensemble always takes the full (obs, action) step features; each member first keeps
    `columns` (default: all), so rollouts, segments and clips need not know the feature set.
    The ensemble is returned in eval mode (no dropout); `fit_reward` trains in train mode.
    output "tanh" (B-Pref): a bounded per-step reward cannot grow without limit on states far
    from the labelled ones, which PPO otherwise finds and exploits; "linear": Christiano's."""
    if output not in ("tanh", "linear"):
        raise ValueError(f"reward output must be 'tanh' or 'linear', got {output!r}")
    columns = tuple(range(input_dim)) if columns is None else tuple(int(c) for c in columns)
    if not columns or min(columns) < 0 or max(columns) >= input_dim:
        raise ValueError(f"reward feature columns must be in [0, {input_dim}), got {columns}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"reward dropout must be in [0, 1), got {dropout}")
    head = [nn.Tanh()] if output == "tanh" else []
    ensemble = SegmentRewardEnsemble(input_dim, members, seed=seed, make_member=lambda dim: nn.Sequential(
        SelectColumns(columns), Standardize(len(columns)), member_mlp(len(columns), hidden, dropout), *head))
    return ensemble.eval()


def set_feature_scale(ensemble: SegmentRewardEnsemble, features: torch.Tensor, force: bool = False) -> None:
    """Fix every member's input standardisation from `features` (once, unless forced)."""
    for member in ensemble.members:
        select, standardize = member[0], member[1]
        if force or not bool(standardize.is_set):
            standardize.set(select(features))


def ensemble_from_checkpoint(state: dict) -> SegmentRewardEnsemble | None:
    """The reward ensemble of a `robot.train` checkpoint (None for a true-reward run).

    Checkpoints written before members had a column selector (no `reward_features` in the
    config) read all (obs, action) features; their layer indices are shifted by one."""
    if state.get("ensemble") is None:
        return None
    config = state["config"]
    feature_set = config.get("reward_features", "obs_action")
    columns = feature_columns(config["task"], feature_set, state["obs_dim"], state["action_dim"])
    ensemble = make_ensemble(state["obs_dim"] + state["action_dim"], config["ensemble_members"], config["reward_hidden"],
                             config["seed"], config.get("reward_output", "tanh"), columns,
                             config.get("reward_dropout", 0.0))
    weights = dict(state["ensemble"])
    if "reward_features" not in config:
        weights = {_shift_layer(key): value for key, value in weights.items()}
        for i, member in enumerate(ensemble.members):
            weights[f"members.{i}.0.columns"] = member[0].columns
    ensemble.load_state_dict(weights)
    return ensemble


def _shift_layer(key: str) -> str:
    """members.<i>.<k>.rest -> members.<i>.<k + 1>.rest (old layout without SelectColumns)."""
    parts = key.split(".")
    if parts[0] == "members" and len(parts) > 2 and parts[2].isdigit():
        parts[2] = str(int(parts[2]) + 1)
    return ".".join(parts)


def comparison_arrays(comparisons: list[Comparison], segments: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index_a, index_b, label) for the trainable pair comparisons; items are segment ids."""
    pairs = [c for c in comparisons if c.kind == "pair" and c.trainable]
    if not pairs:
        raise ValueError("no trainable pair comparisons (kind 'pair' with a label) to learn from")
    index_a = segments.index_of([str(c.items[0]) for c in pairs])
    index_b = segments.index_of([str(c.items[1]) for c in pairs])
    labels = np.array([c.label for c in pairs], dtype=np.float32)
    return index_a, index_b, labels


def fit_reward(ensemble: SegmentRewardEnsemble, segments: Segments, comparisons: list[Comparison],
               train_config: EnsembleTrainConfig, progress: bool = False,
               unlabeled_pairs: list[tuple[str, str]] | None = None) -> dict:
    """Refit every member on all comparisons so far; returns training stats.

    unlabeled_pairs: segment-id pairs for SURF's pseudo-labels (used when the train config's
    `pseudo_label_threshold` is set)."""
    index_a, index_b, labels = comparison_arrays(comparisons, segments)
    features = segments.features()
    set_feature_scale(ensemble, features)  # first fit: the random-policy segments set the scale
    unlabeled = None
    if unlabeled_pairs:
        ids_a, ids_b = zip(*unlabeled_pairs)
        unlabeled = (features[segments.index_of(list(ids_a))], features[segments.index_of(list(ids_b))])
    ensemble.train()  # dropout (if any) only while fitting
    try:
        losses = ensemble.fit(features[index_a], features[index_b], torch.from_numpy(labels), train_config,
                              progress=progress, unlabeled=unlabeled)
    finally:
        ensemble.eval()
    if any(isinstance(m, nn.Dropout) for m in ensemble.modules()):
        # fit() normalised the members in train mode; redo it without dropout
        ensemble.fit_normalization(torch.cat([features[index_a], features[index_b]]))
    with torch.no_grad():
        scores = ensemble.member_segment_scores(features[np.concatenate([index_a, index_b])]).mean(0)
    n = len(labels)
    # Ties (label 0.5) are left out; NaN when every label is a tie.
    accuracy = pairwise_accuracy(scores[:n].numpy(), scores[n:].numpy(), labels, labelled_ties="skip")
    stats = {"reward_loss": float(np.mean(losses)), "reward_train_accuracy": accuracy, "num_comparisons": n}
    if unlabeled is not None:
        stats["num_unlabeled_pairs"] = len(unlabeled_pairs)
    return stats


@torch.no_grad()
def segment_scores(ensemble: SegmentRewardEnsemble, segments: Segments) -> np.ndarray:
    """(N,) learned segment returns: ensemble-mean of the normalised per-step rewards, summed."""
    return ensemble.member_segment_scores(segments.features()).mean(0).numpy()


def reward_agreement(ensemble: SegmentRewardEnsemble, segments: Segments, num_pairs: int = 2000,
                     seed: int = 0, min_gap: float = 0.0) -> dict:
    """How well learned segment returns track true ones on (held-out) segments.

    Pearson and Spearman correlation of the returns, and the preference accuracy on random
    pairs whose true returns differ by more than `min_gap` (what a rational teacher answers;
    a gap excludes near-ties that no teacher could call reliably)."""
    learned, true = segment_scores(ensemble, segments), segments.true_returns()
    a, b = random_pairs(len(segments), num_pairs, np.random.default_rng(seed))
    differ = np.abs(true[a] - true[b]) > min_gap
    # The rational teacher's label of each kept pair: 1 when A's true return is higher.
    labels = (true[a] > true[b])[differ].astype(float)
    accuracy = pairwise_accuracy(learned[a][differ], learned[b][differ], labels) if differ.any() else float("nan")
    return {"pearson": float(pearsonr(learned, true)[0]), "spearman": float(spearmanr(learned, true)[0]),
            "pair_accuracy": accuracy, "num_pairs": int(differ.sum()), "num_segments": len(segments)}


def choose_queries(ensemble: SegmentRewardEnsemble | None, pool: Segments, num_queries: int, candidate_factor: int,
                   method: str, rng: np.random.Generator, disagreement_method: str = "probability_std"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Sample `candidate_factor * num_queries` candidate pairs from the pool, keep `num_queries`.

    With method "disagreement" the kept pairs are those the ensemble members disagree on most;
    without a trained ensemble (the first batch) the choice is uniform, as in B-Pref. A pair
    drawn twice is a candidate once, so no query repeats within a batch (a repeated pair
    costs a label for nothing, and the labelling app refuses an item id twice in a request)."""
    a, b = distinct_pairs(*random_pairs(len(pool), num_queries * candidate_factor, rng))
    num_queries = min(num_queries, len(a))
    if ensemble is None or method == "random":
        keep = rng.permutation(len(a))[:num_queries]
        return a[keep], b[keep]
    features = pool.features()
    with torch.no_grad():
        member_scores = ensemble.member_segment_scores(features)  # (members, pool)
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    keep = select_queries(member_scores[:, a], member_scores[:, b], num_queries, method=method,
                          disagreement_method=disagreement_method, generator=generator).numpy()
    return a[keep], b[keep]


def ask_teacher(teacher, pool: Segments, index_a: np.ndarray, index_b: np.ndarray) -> list[Comparison | None]:
    """Simulated labels from the true per-step rewards; items are the segment ids."""
    return teacher.label_pairs(pool.true_rewards[index_a], pool.true_rewards[index_b],
                               pool.ids[index_a].tolist(), pool.ids[index_b].tolist())


def build_teacher(name: str, kwargs: dict, seed: int):
    return make_teacher(name, **{"seed": seed, **kwargs})


def label_schedule(budget: int, initial_fraction: float, num_rounds: int, decay: float) -> list[int]:
    """Labels per round: [initial, round 1, ..., round R], summing to `budget`.

    After the initial share, round r gets a share proportional to 1 / (1 + decay * (r - 1)),
    a decreasing schedule like Christiano's 2e6 / (T + 2e6) rate."""
    initial = max(1, round(budget * initial_fraction))
    weights = np.array([1.0 / (1.0 + decay * r) for r in range(num_rounds)])
    rest = budget - initial
    per_round = np.floor(rest * weights / weights.sum()).astype(int)
    per_round[: rest - per_round.sum()] += 1  # hand out the rounding remainder to the earliest rounds
    return [initial, *per_round.tolist()]
