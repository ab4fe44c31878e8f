"""Render segment pairs of a run to WebM clips and write the labelling app's manifest.

    python -m robot.clips --run runs/robot/reach --pairs 20 --out runs/robot/clips

Pairs come from the run's segments.npz (the segments of its last round by default). With a
reward ensemble in the checkpoint they are the pairs its members disagree on most (the
informative queries); otherwise random. Writes OUT/manifest.json:

    {"pairs": [{"id", "clip_a", "clip_b", "segment_a", "segment_b"}]}

with clip paths relative to OUT. Label them in the labelling app (a `clips` source), export
the core format, then train with `--labels_file labels.jsonl --segments_file RUN/segments.npz`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf.config import ConfigError, parse_config, run_main
from robot.render import CLIP_HEIGHT, CLIP_WIDTH, write_clip
from robot.reward import choose_queries, ensemble_from_checkpoint
from robot.segments import Segments
from robot.vec_env import make_vec_env


def select_pairs(run_dir: Path, num_pairs: int, seed: int, rounds: str) -> tuple[Segments, np.ndarray, np.ndarray, dict]:
    segments = Segments.load(run_dir / "segments.npz")
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    if rounds == "last":
        pool = segments.subset(np.flatnonzero(segments.source_round == segments.source_round.max()))
    else:
        pool = segments
    ensemble = ensemble_from_checkpoint(state)
    rng = np.random.default_rng(seed)
    num_pairs = min(num_pairs, len(pool) * (len(pool) - 1) // 2)
    method = "disagreement" if ensemble is not None and len(ensemble.members) > 1 else "random"
    index_a, index_b = choose_queries(ensemble, pool, num_pairs, 10, method, rng)
    return pool, index_a, index_b, state["config"]


def write_clips(run_dir: str | Path, num_pairs: int, out_dir: str | Path, seed: int = 0, rounds: str = "last",
                width: int = CLIP_WIDTH, height: int = CLIP_HEIGHT, progress: bool = True) -> Path:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for name in ("segments.npz", "checkpoint.pt"):
        if not (run_dir / name).is_file():
            raise ConfigError(str(run_dir / name), "not found: --run must be an output folder of robot.train")
    if num_pairs < 1:
        raise ConfigError("--pairs", f"expected >= 1, got {num_pairs}")
    pool, index_a, index_b, config = select_pairs(run_dir, num_pairs, seed, rounds)
    envs = make_vec_env(config["task"], 1)  # only for its MjModel and dt
    fps = 1.0 / envs.dt  # real time: 25 fps at dt 0.04
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered, pairs = set(), []
    for i, (a, b) in enumerate(tqdm(list(zip(index_a, index_b)), desc="clips", unit="pair", disable=not progress)):
        for index in (a, b):
            segment_id = str(pool.ids[index])
            if segment_id not in rendered:  # a segment can appear in several pairs
                write_clip(envs.model, pool.qpos[index], out_dir / f"{segment_id}.webm", fps,
                           mocap_pos=pool.mocap_pos[index], width=width, height=height)
                rendered.add(segment_id)
        pairs.append({"id": f"pair{i:05d}", "clip_a": f"{pool.ids[a]}.webm", "clip_b": f"{pool.ids[b]}.webm",
                      "segment_a": str(pool.ids[a]), "segment_b": str(pool.ids[b])})
    manifest = out_dir / "manifest.json"
    manifest.write_text(json.dumps({"pairs": pairs}, indent=1))
    return manifest


@dataclass
class ClipsConfig:
    run: str = field(metadata={"help": "output folder of robot.train (segments.npz, checkpoint.pt)"})
    out: str = field(metadata={"help": "folder for the .webm clips and manifest.json"})
    pairs: int = field(default=20, metadata={"help": "number of pairs to render"})
    seed: int = field(default=0, metadata={"help": "candidate-pair sampling seed"})
    rounds: str = field(default="last", metadata={"help": "segments of the last round (last) or all"})
    width: int = field(default=CLIP_WIDTH, metadata={"help": "clip width in pixels (even): the front and side views "
                                                             "side by side, each half of it"})
    height: int = field(default=CLIP_HEIGHT, metadata={"help": "clip height in pixels (even)"})

    def __post_init__(self):
        if self.pairs < 1:
            raise ConfigError("pairs", f"expected >= 1, got {self.pairs}")
        if self.rounds not in ("last", "all"):
            raise ConfigError("rounds", f"expected 'last' or 'all', got {self.rounds!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < 2 or value % 2:  # yuv420p video; two views of width / 2
                raise ConfigError(name, f"an even number of pixels >= 2, got {value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_config(ClipsConfig, argv, prog="python -m robot.clips")
    torch.set_num_threads(1)
    manifest = write_clips(args.run, args.pairs, args.out, args.seed, args.rounds, args.width, args.height)
    print(f"manifest: {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
