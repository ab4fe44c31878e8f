"""A server killed with SIGKILL mid-stream loses no acknowledged vote, and a restarted
server resumes every queue."""

from __future__ import annotations

import json
import pytest
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from labeling_testkit import HttpSession, free_port, make_project, pair_rows

from labeling_app.handlers import parse_shown

REPO = Path(__file__).resolve().parents[2]
ANNOTATORS = ["alice", "bob", "carol", "dave"]


def start_server(config: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "labeling_app", "--config", str(config), "--port", str(port)],
                               cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).status_code in (200, 401, 403):
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"server did not come up in 60 s:\n{log.read_text()}")


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_vote(tmp_path):
    config = make_project(tmp_path / "p", pair_rows(200), overlap=2, users=ANNOTATORS)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_server(config, port, tmp_path / "server1.log")
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop, killed = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    # HttpSession returns every output: the shown token first, then the status line
    def annotate(user: str):
        session = HttpSession(url, user, timeout=10)
        try:
            shown = session.call("current")
            for _ in range(200):  # bounded; the kill ends it much sooner
                if stop.is_set():
                    return
                item, _ = parse_shown(shown[0])
                shown = session.call("vote_a", shown[0], "")  # returns only once the vote is stored
                with lock:
                    acknowledged.append((item, user))
        except Exception as err:
            if not killed.is_set():
                errors.append(err)  # a failure while the server was alive is a real one
            # else: the server died under us; whatever was acknowledged is what counts
        finally:
            session.close()

    threads = [threading.Thread(target=annotate, args=(u,), daemon=True) for u in ANNOTATORS]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 40 and time.monotonic() < deadline and not errors:
            time.sleep(0.02)
        assert not errors, errors
        assert len(acknowledged) >= 40, "votes did not flow"
        killed.set()
        os.kill(server.pid, signal.SIGKILL)  # mid-stream: the annotators are still voting
        server.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()

    with lock:
        acked = set(acknowledged)
    db = sqlite3.connect(tmp_path / "p" / "store" / "votes.sqlite")
    stored = set(db.execute("SELECT item_id, annotator FROM votes").fetchall())
    db.close()
    assert acked <= stored, f"lost acknowledged votes: {sorted(acked - stored)}"
    audit = {(r["item_id"], r["annotator"]) for r in map(json.loads, (tmp_path / "p" / "store" / "audit.jsonl")
                                                       .read_text().splitlines()) if r["event"] == "vote"}
    assert acked <= audit
    assert len(stored) == len(set(stored))

    # restart: queues resume, nobody gets an item they already voted on
    server = start_server(config, port, tmp_path / "server2.log")
    try:
        for user in ANNOTATORS:
            session = HttpSession(url, user, timeout=10)
            shown = session.call("current")
            done = int(re.search(r"Progress: (\d+) /", shown[1]).group(1))
            mine = {item for item, who in stored if who == user}
            assert done == len(mine)
            assert parse_shown(shown[0])[0] not in mine
            session.call("vote_b", shown[0], "")
            session.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
