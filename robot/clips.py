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

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from robot.render import write_clip
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
                width: int = 320, height: int = 240, progress: bool = True) -> Path:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for name in ("segments.npz", "checkpoint.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: --run must be an output folder of robot.train")
    if num_pairs < 1:
        raise ValueError(f"--pairs must be >= 1, got {num_pairs}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot.clips", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="output folder of robot.train (segments.npz, checkpoint.pt)")
    parser.add_argument("--pairs", type=int, default=20, help="number of pairs to render (default 20)")
    parser.add_argument("--out", required=True, help="folder for the .webm clips and manifest.json")
    parser.add_argument("--seed", type=int, default=0, help="candidate-pair sampling seed")
    parser.add_argument("--rounds", choices=("last", "all"), default="last", help="segments of the last round or all")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    manifest = write_clips(args.run, args.pairs, args.out, args.seed, args.rounds, args.width, args.height)
    print(f"manifest: {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
