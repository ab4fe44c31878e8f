"""The live loop on robot clips (`task: robot`): the reward part against a fake app on
synthetic segments, then a whole run with two bots on reach."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.loop.config import LoopPaths, read_task
from pipeline.loop.launch import loop_task, parse_loop_config
from pipeline.loop.reward import is_heldout
from pipeline.loop.robot import (RobotLoopConfig, RobotPolicyPart, RobotRewardPart, load_ensemble, load_segments,
                                 next_segment_id, save_segments, segments_dir)
from rlhf.config import ConfigError
from rlhf.metrics import pairwise_accuracy
from rlhf.preferences import Comparison
from robot.reward import segment_scores
from robot.segments import Segments
from tests.pipeline.test_loop import FakeApp

SMOKE = ["--config", "configs/loop/robot_smoke.yaml"]


def synthetic_segments(count: int, first_id: int = 0, length: int = 5, seed: int = 0) -> Segments:
    """Segments whose true per-step reward is the first observation: learnable from (o, a)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(count, length, 4)).astype(np.float32)
    return Segments(ids=np.array([f"s{first_id + i:07d}" for i in range(count)]), obs=obs,
                    actions=rng.normal(size=(count, length, 2)).astype(np.float32),
                    true_rewards=obs[..., 0].astype(np.float64), qpos=np.zeros((count, length, 3)),
                    qvel=np.zeros((count, length, 3)), mocap_pos=np.zeros((count, length, 1, 3)),
                    source_round=np.zeros(count, dtype=np.int64))


def clip_vote(vote_id: int, segments: Segments, a: int, b: int) -> dict:
    """A vote as the app's API serves it: items are the segment ids, label 1 = A preferred."""
    item_id = f"{segments.ids[a]}-{segments.ids[b]}"
    label = 1.0 if segments.true_returns()[a] > segments.true_returns()[b] else 0.0
    comparison = Comparison(items=[str(segments.ids[a]), str(segments.ids[b])], kind="pair", label=label,
                            annotator="bot-1", id=f"{item_id}:bot-1")
    return {"vote_id": vote_id, "item_id": item_id, "annotator": "bot-1", "comparison": comparison.to_dict()}


def robot_config(tmp_path, *extra):
    return parse_loop_config([*SMOKE, "--out", str(tmp_path), "--robot.reward_features", "obs_action", *extra])


def test_the_task_picks_the_config_and_the_parts(tmp_path):
    assert read_task(SMOKE) == "robot" and read_task(["--config", "configs/loop/smoke.yaml"]) == "text"
    assert read_task([*SMOKE, "--task", "text"]) == "text"
    parse, reward_part, policy_part = loop_task("robot")
    assert (reward_part, policy_part) == (RobotRewardPart, RobotPolicyPart)
    config, reward_stage, policy_stage = robot_config(tmp_path)
    assert isinstance(config, RobotLoopConfig) and reward_stage is policy_stage
    # the loop sets the robot section's run folder, seed, budget and teacher itself
    assert (reward_stage.out_dir, reward_stage.label_budget, reward_stage.teacher) == (
        str(tmp_path / "policy"), 8, "oracle")
    with pytest.raises(ConfigError, match="robot.label_budget"):
        robot_config(tmp_path, "--robot.label_budget", "20")
    with pytest.raises(ConfigError, match="clip_width"):
        robot_config(tmp_path, "--clip_width", "63")
    with pytest.raises(ConfigError, match="initial_labels"):
        robot_config(tmp_path, "--initial_labels", "9")
    with pytest.raises(ConfigError, match=r"^robot.learner: expected 'ppo' in the live loop"):
        robot_config(tmp_path, "--robot.learner", "sac")
    with pytest.raises(ConfigError, match=r"^robot.surf_pseudo_label_threshold: expected 0 in the live loop"):
        robot_config(tmp_path, "--robot.surf_pseudo_label_threshold", "0.95")


def test_segments_are_saved_whole_with_unique_ids(tmp_path):
    folder = tmp_path / "segments"
    assert load_segments(folder) is None and next_segment_id(folder) == 0
    save_segments(synthetic_segments(3), folder)
    save_segments(synthetic_segments(2, first_id=7).subset([1]), folder)  # a subset: ids need not be contiguous
    assert load_segments(folder).ids.tolist() == ["s0000000", "s0000001", "s0000002", "s0000008"]
    assert next_segment_id(folder) == 9 and not list(folder.glob(".tmp-*"))


def test_robot_reward_part_fits_publishes_and_warm_starts(tmp_path):
    config, robot, _ = robot_config(tmp_path, "--initial_labels", "6", "--refit_every", "3", "--heldout_every", "3")
    paths = LoopPaths(tmp_path)
    segments = synthetic_segments(40)
    save_segments(segments, segments_dir(paths))
    pairs = [(2 * i, 2 * i + 1) for i in range(20)]
    app = FakeApp([clip_vote(i + 1, segments, a, b) for i, (a, b) in enumerate(pairs[:6])])
    part = RobotRewardPart(config, robot, client=app)
    assert part.pull() == 6 and part.due() and part.fit() == 1
    meta = json.loads((paths.version_dir(1) / "meta.json").read_text())
    heldout = [v["vote_id"] for v in app.served if is_heldout(v["item_id"], 3)]
    assert meta["votes"] == 6 and meta["heldout_vote_ids"] == heldout
    assert meta["trained_vote_ids"] == [i for i in range(1, 7) if i not in heldout]
    assert meta["num_comparisons"] == len(meta["trained_vote_ids"]) and meta["warm_start_from"] is None
    assert paths.latest_version() == 1 and not list(paths.reward.glob(".tmp-*"))
    # the held-out accuracy by hand: the published ensemble's segment scores on the held-out pairs
    ensemble = load_ensemble(paths.version_dir(1))
    scores = segment_scores(ensemble, segments)
    held = [v["comparison"] for v in app.served if v["vote_id"] in heldout]
    index = {sid: i for i, sid in enumerate(segments.ids.tolist())}
    expected = pairwise_accuracy([scores[index[c["items"][0]]] for c in held],
                                 [scores[index[c["items"][1]]] for c in held], [c["label"] for c in held])
    assert meta["heldout_accuracy"] == pytest.approx(expected)

    app.served += [clip_vote(i + 1, segments, a, b) for i, (a, b) in enumerate(pairs) if i in (6, 7)]
    part.pull()
    assert not part.due()  # 8 < 6 + 3
    app.served.append(clip_vote(9, segments, *pairs[8]))
    part.pull()
    first_weights = {k: v.clone() for k, v in ensemble.state_dict().items()}
    assert part.due() and part.fit() == 2
    meta2 = json.loads((paths.version_dir(2) / "meta.json").read_text())
    assert sorted(meta2["trained_vote_ids"] + meta2["heldout_vote_ids"]) == list(range(1, 10))
    assert meta2["warm_start_from"] == str(paths.version_dir(1))
    warm = load_ensemble(paths.version_dir(2)).state_dict()
    scale = [k for k in first_weights if k.startswith("members.") and k.endswith((".1.mean", ".1.std"))]
    assert scale and all(torch.equal(warm[k], first_weights[k]) for k in scale)  # v1's input scale, kept
    assert any(not torch.equal(warm[k], v) for k, v in first_weights.items() if k.endswith("weight"))  # trained on
    # a restarted part reads the same state and clears a half-written fit
    (paths.reward / ".tmp-v0003").mkdir()
    again = RobotRewardPart(config, robot, client=app)
    assert (again.version, again.fitted_on, len(again.labels)) == (2, 9, 9)
    assert not (paths.reward / ".tmp-v0003").exists()


def test_no_fit_before_a_vote_can_train(tmp_path):
    config, robot, _ = robot_config(tmp_path, "--initial_labels", "1", "--heldout_every", "2")
    segments = synthetic_segments(40)
    save_segments(segments, segments_dir(LoopPaths(tmp_path)))
    votes = [clip_vote(i + 1, segments, 2 * i, 2 * i + 1) for i in range(20)]
    held, trains = ([v for v in votes if is_heldout(v["item_id"], 2) == h] for h in (True, False))
    app = FakeApp([{**held[0], "vote_id": 1}])
    part = RobotRewardPart(config, robot, client=app)
    part.pull()
    assert not part.due()  # its only vote is held out: nothing to fit
    app.served.append({**trains[0], "vote_id": 2})
    part.pull()
    assert part.due()


# ---------------------------------------------------------------------------------------
# A whole run: `python -m pipeline.loop` with two bots on reach
# ---------------------------------------------------------------------------------------

def store_votes(out: Path) -> list[int]:
    with sqlite3.connect(out / "app" / "store" / "votes.sqlite") as db:
        return [row[0] for row in db.execute("SELECT id FROM votes ORDER BY id")]


@pytest.mark.slow
def test_robot_loop_runs_with_two_bots(tmp_path):
    out = tmp_path / "loop"
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    process = subprocess.run([sys.executable, "-m", "pipeline.loop", *SMOKE, "--out", str(out)],
                             capture_output=True, text=True, env=env, timeout=600)
    assert process.returncode == 0, process.stdout + process.stderr
    paths = LoopPaths(out)
    assert store_votes(out) == list(range(1, 9))  # the budget, each vote once
    sent = [json.loads(line)["id"] for line in paths.sent.read_text().splitlines()]
    assert len(sent) == len(set(sent)) == 8
    returns = {json.loads(line)["item_id"] for line in paths.returns.read_text().splitlines()}
    assert set(sent) <= returns  # the bots could see every item's true returns
    saved = set(load_segments(segments_dir(paths)).ids.tolist())
    versions = sorted(paths.reward.glob("v[0-9]*"))
    assert [v.name for v in versions] == [f"v{i:04d}" for i in range(1, len(versions) + 1)]
    assert paths.latest_version() == len(versions) >= 2
    for folder in versions:
        meta = json.loads((folder / "meta.json").read_text())
        assert sorted(meta["trained_vote_ids"] + meta["heldout_vote_ids"]) == list(range(1, meta["votes"] + 1))
        trained = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
        assert len(trained) == len(meta["trained_vote_ids"]) and {s for c in trained for s in c["items"]} <= saved
    assert json.loads((versions[0] / "meta.json").read_text())["votes"] == 4  # the initial labels
    metrics = [json.loads(line) for line in (paths.policy / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]  # the untrained policy, then each round once
    used = [m["loop/reward_version"] for m in metrics]
    assert used == sorted(used) and used[-1] > used[1]  # a switch to a newer version, logged
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["iterations"], summary["votes"], summary["items_sent"]) == (4, 8, 8)
    assert summary["policy_waited_seconds"] == 0 and summary["return_after"] is not None
    assert "Live preference loop on robot clips" in (out / "report.md").read_text()
    assert (out / "loop.png").stat().st_size > 1000
