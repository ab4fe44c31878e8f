"""Fixed-length trajectory segments: what a teacher (simulated or human) compares.

A segment is `length` consecutive steps of one episode (25 steps = 1 s on reach). It keeps
everything later stages need:

- obs (T, obs_dim) and actions (T, 7): the reward model's (o, a) features;
- true_rewards (T,): per-step ground truth, read only by simulated teachers and metrics;
- qpos / qvel (T, nq / nv) and mocap_pos (T, nmocap, 3): the state *after* each action
  (what the reward scores and a rendered frame shows), so clips can be rendered later;
- ids: unique strings ("s000123"); human labels refer to segments by these ids.

Segments never cross an episode boundary (a clip with a teleporting arm cannot be judged),
so a segment longer than the episode is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch


@dataclass
class Segments:
    ids: np.ndarray  # (N,) str
    obs: np.ndarray  # (N, T, obs_dim) float32
    actions: np.ndarray  # (N, T, action_dim) float32
    true_rewards: np.ndarray  # (N, T) float64
    qpos: np.ndarray  # (N, T, nq)
    qvel: np.ndarray  # (N, T, nv)
    mocap_pos: np.ndarray  # (N, T, nmocap, 3)
    source_round: np.ndarray  # (N,) int: loop round the segment came from (-1: random policy)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def length(self) -> int:
        return self.obs.shape[1]

    def features(self) -> torch.Tensor:
        """(N, T, obs_dim + action_dim) float32 reward-model input."""
        return torch.from_numpy(np.concatenate([self.obs, self.actions], axis=-1).astype(np.float32))

    def true_returns(self) -> np.ndarray:
        return self.true_rewards.sum(axis=-1)

    def subset(self, index) -> "Segments":
        index = np.asarray(index)
        return Segments(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def index_of(self, segment_ids) -> np.ndarray:
        """Row of each id; KeyError naming the first unknown id."""
        position = {sid: i for i, sid in enumerate(self.ids.tolist())}
        missing = [sid for sid in segment_ids if sid not in position]
        if missing:
            raise KeyError(f"unknown segment id {missing[0]!r} ({len(missing)} unknown ids)")
        return np.array([position[sid] for sid in segment_ids], dtype=np.int64)

    @staticmethod
    def concat(parts: list["Segments"]) -> "Segments":
        return Segments(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Segments)})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})
        return path

    @staticmethod
    def load(path: str | Path) -> "Segments":
        with np.load(path, allow_pickle=False) as data:
            return Segments(**{f.name: data[f.name] for f in fields(Segments)})


def check_segment_length(length: int, max_episode_steps: int) -> None:
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"segment length must be a positive integer, got {length!r}")
    if length > max_episode_steps:
        raise ValueError(
            f"segment length {length} is longer than the episode ({max_episode_steps} steps); "
            "segments never cross episode boundaries, so use segment_length <= max_episode_steps"
        )


def sample_segments(episodes: dict[str, np.ndarray], length: int, count: int, rng: np.random.Generator,
                    first_id: int = 0, source_round: int = 0) -> Segments:
    """`count` segments from whole episodes, uniformly over (episode, start) pairs.

    episodes: arrays with leading axes (num_episodes, H): "obs", "actions", "true_rewards",
    "qpos", "qvel", "mocap_pos" (see `robot.policy.Rollout.episodes`). Sampling is with
    replacement over episodes; starts are uniform in [0, H - length], so every step of an
    episode can be covered (unlike fragmenters that under-sample the edges of long trajectories
    only when H >> length).
    """
    num_episodes, horizon = episodes["true_rewards"].shape
    check_segment_length(length, horizon)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    episode = rng.integers(0, num_episodes, size=count)
    start = rng.integers(0, horizon - length + 1, size=count)
    steps = start[:, None] + np.arange(length)[None, :]  # (count, T)
    take = {name: episodes[name][episode[:, None], steps] for name in
            ("obs", "actions", "true_rewards", "qpos", "qvel", "mocap_pos")}
    ids = np.array([f"s{first_id + i:07d}" for i in range(count)])
    return Segments(ids=ids, obs=take["obs"].astype(np.float32), actions=take["actions"].astype(np.float32),
                    true_rewards=take["true_rewards"].astype(np.float64), qpos=take["qpos"], qvel=take["qvel"],
                    mocap_pos=take["mocap_pos"], source_round=np.full(count, source_round, dtype=np.int64))


def random_pairs(num_segments: int, num_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b) with a != b, drawn uniformly (with replacement: a pair may repeat)."""
    if num_segments < 2:
        raise ValueError("need at least 2 segments to form pairs")
    a = rng.integers(0, num_segments, size=num_pairs)
    b = (a + rng.integers(1, num_segments, size=num_pairs)) % num_segments  # never equal to a
    return a, b


def distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs with each unordered pair {a, b} once, at its first occurrence, in order."""
    keys = np.minimum(a, b) * (int(max(a.max(initial=0), b.max(initial=0))) + 1) + np.maximum(a, b)
    _, first = np.unique(keys, return_index=True)
    first = np.sort(first)
    return a[first], b[first]
