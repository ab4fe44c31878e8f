"""The live loop (`rlhf loop`): its pieces against a fake app, then whole runs on tiny models
with two bots, including kill -9 of the reward part mid-fit and of the app mid-vote."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from labeling_app.http_client import AdminClient, ApiError

from pipeline.loop.config import LoopPaths, parse_config
from pipeline.loop.policy import QueryingPart, gain_in_std
from pipeline.loop.reward import RewardPart, is_heldout, publish, read_labels
from reward_model.modeling import RewardModel
from rlhf.config import ConfigError
from rlhf.preferences import Comparison

SMOKE = ["--config", "configs/loop/smoke.yaml"]


class FakeApp:
    """The app's loop API as the reward part sees it: votes in pages of `page` after an id."""

    def __init__(self, votes: list[dict], page: int = 4):
        self.served, self.page, self.heartbeats = votes, page, []

    def votes(self, after: int, limit: int) -> dict:
        newer = [v for v in self.served if v["vote_id"] > after][: min(limit, self.page)]
        return {"votes": newer, "last_id": newer[-1]["vote_id"] if newer else after}

    def heartbeat(self, part: str, state: dict) -> None:
        self.heartbeats.append((part, state))


def vote(vote_id: int, item_id: str | None = None) -> dict:
    item_id = item_id or f"item-{vote_id}"
    comparison = Comparison(items=[f"a clear answer {vote_id}", f"hello {vote_id}", f"maybe {vote_id}"],
                            kind="ranking", ranks=[0, 2, 1], prompt=f"Question {vote_id}?",
                            annotator="bot-1", id=f"{item_id}:bot-1")
    return {"vote_id": vote_id, "item_id": item_id, "annotator": "bot-1", "comparison": comparison.to_dict()}


def loop_config(tmp_path, *extra):
    return parse_config([*SMOKE, "--out", str(tmp_path), *extra])


def test_heldout_share_follows_the_item_id_hash():
    ids = [f"it{i:04d}-p{i % 7}" for i in range(1000)]
    held = [i for i in ids if is_heldout(i, 5)]
    assert 160 < len(held) < 240  # about one in five
    assert held == [i for i in ids if is_heldout(i, 5)]  # the same every time
    assert not any(is_heldout(i, 0) for i in ids)


def test_read_labels_keeps_each_vote_once_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [vote(1), vote(2), vote(1)]  # vote 1 pulled again after a crash
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"vote_id": 3, "item')  # cut by kill -9
    assert [label["vote_id"] for label in read_labels(path)] == [1, 2]


def test_reward_part_pulls_fits_and_publishes_exact_sets(tmp_path):
    config, rm_config, _ = loop_config(tmp_path, "--initial_labels", "6", "--refit_every", "3", "--heldout_every", "3")
    app = FakeApp([vote(i) for i in range(1, 7)])
    part = RewardPart(config, rm_config, client=app)
    assert part.pull() == 6 and part.pull() == 0  # paged (4 + 2), then nothing new
    assert part.due()
    assert part.fit() == 1
    paths = LoopPaths(tmp_path)
    meta = json.loads((paths.version_dir(1) / "meta.json").read_text())
    heldout = [i for i in range(1, 7) if is_heldout(f"item-{i}", 3)]
    assert meta["votes"] == 6 and meta["heldout_vote_ids"] == heldout
    assert meta["trained_vote_ids"] == [i for i in range(1, 7) if i not in heldout]
    assert paths.latest_version() == 1 and (paths.version_dir(1) / "model" / "ensemble.json").exists()
    assert len((paths.version_dir(1) / "train.jsonl").read_text().splitlines()) == len(meta["trained_vote_ids"])
    # the held-out check by hand: ranks [0, 2, 1] give the pairs 0>1, 0>2, 2>1; credit = share ordered right
    model = RewardModel.load(paths.version_dir(1) / "model")
    credits = []
    for i in heldout:
        items = vote(i)["comparison"]["items"]
        scores, _ = model.score([f"Question {i}?"] * 3, items, normalize=False)
        s = scores.tolist()
        credits.append(np.mean([s[0] > s[1], s[0] > s[2], s[2] > s[1]]))
    assert meta["heldout_accuracy"] == pytest.approx(np.mean(credits))

    app.served += [vote(i) for i in range(7, 9)]
    part.pull()
    assert not part.due()  # 8 < 6 + 3
    app.served.append(vote(9))
    part.pull()
    assert part.due() and part.fit() == 2
    meta2 = json.loads((paths.version_dir(2) / "meta.json").read_text())
    assert sorted(meta2["trained_vote_ids"] + meta2["heldout_vote_ids"]) == list(range(1, 10))
    assert meta2["warm_start_from"] == str(paths.version_dir(1) / "model")
    # every vote once on disk, and a restarted part reads the same state and clears a half-written fit
    (paths.reward / ".tmp-v0003").mkdir()
    again = RewardPart(config, rm_config, client=app)
    assert (again.version, again.fitted_on, len(again.labels)) == (2, 9, 9)
    assert not (paths.reward / ".tmp-v0003").exists()


def test_one_shot_fits_once_on_the_whole_budget(tmp_path):
    config, rm_config, _ = loop_config(tmp_path, "--mode", "one_shot", "--label_budget", "12")
    part = RewardPart(config, rm_config, client=FakeApp([vote(i) for i in range(1, 12)]))
    part.pull()
    assert not part.due()  # 11 of 12
    part.client.served.append(vote(12))
    part.pull()
    assert part.due()
    part.version, part.fitted_on = 1, 12  # as after the fit
    part.client.served += [vote(i) for i in range(13, 40)]
    part.pull()
    assert not part.due()  # one-shot never refits


def test_publish_replaces_the_pointer_by_rename(tmp_path):
    paths = LoopPaths(tmp_path)
    paths.reward.mkdir(parents=True)
    assert paths.latest_version() == 0
    publish(paths, 3)
    assert paths.latest.read_text() == "v0003\n" and paths.latest_version() == 3
    assert not list(paths.reward.glob("*.tmp"))


def test_gain_in_std_by_hand():
    initial, now = np.array([0.2, 0.4, 0.6]), np.array([0.5, 0.7, 0.9])
    assert gain_in_std(now, initial) == pytest.approx(0.3 / np.std([0.2, 0.4, 0.6]))


class RefusingClient:
    """An app that answers every item request with the given error."""

    def __init__(self, error: Exception):
        self.error, self.calls = error, 0

    def add_items(self, items, priorities):
        self.calls += 1
        raise self.error


def test_a_refused_request_stops_the_part_and_an_unanswered_one_is_tried_later(tmp_path):
    config = loop_config(tmp_path)[0]
    refused = ApiError(400, "items[1] (id 'a-b'), field 'id': the id appears twice in this request", "http://app/items")
    part = QueryingPart(config, client=RefusingClient(refused))
    with pytest.raises(RuntimeError, match="the labelling app refused the items: .*the id appears twice"):
        part.send_initial_and_wait([{"id": "a-b"}, {"id": "a-b"}])  # once, not a silent retry forever
    assert part.client.calls == 1
    for error in (ApiError(503, "busy", "http://app/items"), httpx.ReadTimeout("slow")):
        part = QueryingPart(config, client=RefusingClient(error))
        assert part.send([{"id": "a-b"}], {}) == 0 and part.items_sent == 0


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="initial_labels"):
        loop_config(tmp_path, "--initial_labels", "50", "--label_budget", "12")
    with pytest.raises(ConfigError, match="queries_per_iteration"):
        loop_config(tmp_path, "--queries_per_iteration", "9")
    with pytest.raises(ConfigError, match="teacher"):
        loop_config(tmp_path, "--teacher", "nobody")
    with pytest.raises(ConfigError, match="ppo.reward_models"):
        loop_config(tmp_path, "--ppo.reward_models", "somewhere")  # the loop sets it itself


# ---------------------------------------------------------------------------------------
# Whole runs: `python -m pipeline.loop` with two bots on tiny models
# ---------------------------------------------------------------------------------------

def start_loop(out: Path, *extra) -> subprocess.Popen:
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.Popen([sys.executable, "-m", "pipeline.loop", *SMOKE, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def store_votes(out: Path) -> list[int]:
    import sqlite3

    with sqlite3.connect(out / "app" / "store" / "votes.sqlite") as db:
        return [row[0] for row in db.execute("SELECT id FROM votes ORDER BY id")]


def check_nothing_lost_nothing_twice(out: Path) -> dict:
    """The invariants of a finished smoke loop (label_budget 12, 40 iterations)."""
    paths = LoopPaths(out)
    assert store_votes(out) == list(range(1, 13))  # the whole budget, each vote once
    pulled = [json.loads(line)["vote_id"] for line in paths.labels.read_text().splitlines()]
    assert sorted(set(pulled)) == list(range(1, 13))
    assert len({json.loads(line)["id"] for line in paths.sent.read_text().splitlines()}) == 12
    versions = sorted(paths.reward.glob("v[0-9]*"))
    assert versions and [v.name for v in versions] == [f"v{i:04d}" for i in range(1, len(versions) + 1)]
    assert paths.latest_version() == len(versions) and not list(paths.reward.glob(".tmp-*"))
    for folder in versions:
        meta = json.loads((folder / "meta.json").read_text())
        seen = meta["trained_vote_ids"] + meta["heldout_vote_ids"]
        assert sorted(seen) == list(range(1, meta["votes"] + 1))  # every vote so far, none twice
        assert len((folder / "train.jsonl").read_text().splitlines()) == len(meta["trained_vote_ids"])
    assert json.loads((versions[0] / "meta.json").read_text())["votes"] == 6  # the initial labels
    metrics = [json.loads(line) for line in (paths.policy / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 41))  # each step once, resumed or not
    used = [m["loop/reward_version"] for m in metrics]
    assert used == sorted(used) and used[-1] > used[0]  # a switch to a newer version, logged
    assert sum(m["loop/waited_seconds"] for m in metrics) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["iterations"], summary["votes"], summary["items_sent"]) == (40, 12, 12)
    assert summary["reward_versions"] == len(versions) and summary["policy_waited_seconds"] == 0
    assert (out / "loop.png").stat().st_size > 1000 and "Live preference loop" in (out / "report.md").read_text()
    return summary


@pytest.mark.slow
def test_loop_runs_with_two_bots(tmp_path):
    out = tmp_path / "loop"
    process = start_loop(out)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    summary = check_nothing_lost_nothing_twice(out)
    assert summary["vote_round_trip_ms"]["n"] == 12
    assert f"report: {out / 'report.md'}" in output.replace("\n", "")
    again = start_loop(out)  # an earlier run is refused unless resumed or overwritten
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "error: --out:" in output and "--resume true" in output


def wait_for(condition, timeout: float = 240.0, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def app_answers(paths: LoopPaths) -> bool:
    try:
        return "votes" in AdminClient(paths.url_file.read_text().strip(), paths.api_token(), timeout=2).status()
    except (ApiError, httpx.HTTPError, OSError):
        return False


def kill9(out: Path, part: str) -> None:
    os.kill(int((out / "logs" / f"{part}.pid").read_text()), signal.SIGKILL)


@pytest.mark.slow
def test_loop_resumes_after_kill9_of_each_part(tmp_path):
    out = tmp_path / "loop"
    paths = LoopPaths(out)
    process = start_loop(out, "--think_time", "0.4")
    try:
        # the reward part mid-fit: its version folder is still a .tmp
        wait_for(lambda: list(paths.reward.glob(".tmp-v*")), what="a fit in progress")
        kill9(out, "reward")
        # the app mid-labelling: on-policy items are being voted on
        wait_for(lambda: len(store_votes(out)) >= 7 if (paths.store / "votes.sqlite").exists() else False,
                 what="on-policy votes")
        kill9(out, "app")
        # the policy after a checkpoint, before its last iteration
        wait_for(lambda: any((p / "loop_state.json").exists() for p in (paths.policy / "checkpoints").glob("step_*"))
                 and not (paths.policy / "summary.json").exists(), what="a checkpoint")
        kill9(out, "policy")
        wait_for(lambda: app_answers(paths), what="the restarted app")
        status = subprocess.run([sys.executable, "-m", "pipeline.loop", "status", *SMOKE, "--out", str(out)],
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and "votes in" in status.stdout and "reward version published" in status.stdout
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:  # a failed check: the launcher stops its parts on SIGTERM
            process.terminate()
            process.wait(120)
    assert process.returncode == 0, output
    assert output.count("restarting it") >= 3  # reward, app and policy (and the bots after the app)
    check_nothing_lost_nothing_twice(out)
    assert [p.name for p in (paths.policy / "checkpoints").iterdir()] == ["step_40"]  # only the newest is kept


def test_trainer_parts_lower_their_session_group_too():
    """With autogroup scheduling a part's niceness only counts within its own session, so
    the part raises its group's niceness as well (checked in a fresh session)."""
    code = ("import os; from pipeline.loop.launch import lower_priority; os.setsid(); before = os.nice(0); "
            "lower_priority(4); group = '/proc/self/autogroup'; "
            "print(before, os.nice(0), open(group).read().split()[-1] if os.path.exists(group) else 4)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, group = map(int, out)
    assert (after, group) == (min(before + 4, 19), 4)  # niceness is capped at 19
