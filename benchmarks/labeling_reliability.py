"""Reliability of the labelling app, measured: votes acknowledged / stored / lost, duplicate
sends, and requests refused without login and across annotators.

    GRADIO_ANALYTICS_ENABLED=False python benchmarks/labeling_reliability.py [--votes 50] [--kills 2]

Every scenario runs a real server (`python -m labeling_app`) in a child process on a free
127.0.0.1 port, with a throw-away project, and annotators speaking HTTP as a browser tab
does (`HttpSession`):

1. 20 concurrent annotators cast `--votes` votes each: acknowledged, stored, lost.
2. 8 annotators vote while the server is killed with SIGKILL `--kills` times mid-stream and
   restarted: every vote whose reply arrived must be in the database.
3. The same vote sent 2 and 5 times at once, 20 times each: votes stored per send group.
4. Requests tried without login (pages, API description, queue, clips, exports) and by one
   annotator against another's item or the admin's exports: refused out of tried.

Prints one line per figure; docs/labeling_app.md ("Reliability") quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labeling_app.handlers import clip_url, parse_shown  # noqa: E402
from labeling_app.http_client import HttpSession  # noqa: E402
from labeling_app.users import add_user  # noqa: E402

PASSWORD = "benchmark-password"


def make_project(root: Path, annotators: list[str], items: int, overlap: int, clip: Path | None = None) -> Path:
    """Text pairs (and one clip pair when `clip` is given); cheap password hashes."""
    root.mkdir(parents=True)
    with open(root / "items.jsonl", "w", encoding="utf-8") as handle:
        for i in range(items):
            handle.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?",
                                     "completions": [f"First answer {i}.", f"Second answer {i}."]}) + "\n")
    sources = ["  - {type: jsonl, path: items.jsonl}"]
    if clip is not None:
        (root / "clips").mkdir()
        for name in ("a.webm", "b.webm"):
            (root / "clips" / name).write_bytes(clip.read_bytes())
        (root / "clips" / "page.html").write_text("<script>alert(1)</script>")
        (root / "clips" / "manifest.json").write_text(json.dumps({"pairs": [
            {"id": "clip0", "clip_a": "a.webm", "clip_b": "b.webm", "segment_a": "s0", "segment_b": "s1"}]}))
        sources.append("  - {type: clips, path: clips/manifest.json}")
    for name in annotators:
        add_user(root / "users.json", name, PASSWORD, n=2**10)
    add_user(root / "users.json", "admin", PASSWORD, admin=True, n=2**10)
    config = root / "project.yaml"
    config.write_text("name: reliability\nsources:\n" + "\n".join(sources) +
                      f"\noverlap: {overlap}\nstorage: store\nusers: users.json\n", encoding="utf-8")
    return config


class ServerProcess:
    """`python -m labeling_app` in a child process, up when the constructor returns."""

    def __init__(self, config: Path, port: int, log: Path):
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
        self.url = f"http://127.0.0.1:{port}/"
        self.process = subprocess.Popen([sys.executable, "-m", "labeling_app", "--config", str(config),
                                         "--port", str(port)], cwd=REPO, env=env, stdout=log.open("a"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early; see {log}")
            try:
                httpx.get(self.url + "config", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not come up in 90 s; see {log}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stored_votes(config: Path) -> set[tuple[str, str]]:
    db = sqlite3.connect(config.parent / "store" / "votes.sqlite")
    try:
        return set(db.execute("SELECT item_id, annotator FROM votes").fetchall())
    finally:
        db.close()


def vote_until(url: str, user: str, votes: int, acknowledged: list, stop: threading.Event) -> None:
    """Vote `votes` times (or until `stop` or the server dies); record each acknowledged vote."""
    try:
        session = HttpSession(url, user, PASSWORD, timeout=30)
        shown = session.call("current")
        for _ in range(votes):
            if stop.is_set() or not shown[0]:
                return
            item, _ = parse_shown(shown[0])
            shown = session.call("vote_a", shown[0], "")
            acknowledged.append((item, user))
    except (httpx.HTTPError, RuntimeError):
        return  # the server was killed under us: what was acknowledged is what counts


def concurrent_annotators(root: Path, annotators: int, votes: int) -> dict:
    users = [f"ann{i:02d}" for i in range(annotators)]
    config = make_project(root, users, items=annotators * votes, overlap=2)
    server = ServerProcess(config, free_port(), root / "server.log")
    acknowledged: list = []
    try:
        with ThreadPoolExecutor(annotators) as pool:
            list(pool.map(lambda u: vote_until(server.url, u, votes, acknowledged, threading.Event()), users))
    finally:
        server.stop()
    stored = stored_votes(config)
    return {"acknowledged": len(acknowledged), "stored": len(stored), "lost": len(set(acknowledged) - stored)}


def killed_server(root: Path, kills: int) -> dict:
    users = [f"ann{i}" for i in range(8)]
    config = make_project(root, users, items=2000, overlap=2)
    port, acknowledged = free_port(), []
    for _ in range(kills):
        server = ServerProcess(config, port, root / "server.log")
        stop = threading.Event()
        threads = [threading.Thread(target=vote_until, args=(server.url, u, 10_000, acknowledged, stop))
                   for u in users]
        for thread in threads:
            thread.start()
        before, deadline = len(acknowledged), time.monotonic() + 120
        while len(acknowledged) < before + 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # mid-stream: every annotator is still voting
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    stored = stored_votes(config)
    return {"kills": kills, "acknowledged": len(acknowledged), "stored": len(stored),
            "lost": len(set(acknowledged) - stored)}


def duplicate_sends(root: Path, copies: int, trials: int) -> dict:
    config = make_project(root, ["alice"], items=trials, overlap=1)
    server = ServerProcess(config, free_port(), root / "server.log")
    per_trial = []
    try:
        shown = HttpSession(server.url, "alice", PASSWORD).call("current")
        for _ in range(trials):
            before = len(stored_votes(config))
            sessions = [HttpSession(server.url, "alice", PASSWORD) for _ in range(copies)]
            with ThreadPoolExecutor(copies) as pool:
                replies = list(pool.map(lambda s: s.call("vote_a", shown[0], ""), sessions))
            per_trial.append(len(stored_votes(config)) - before)
            shown = replies[0]
    finally:
        server.stop()
    return {"copies": copies, "trials": trials, "stored_once": sum(n == 1 for n in per_trial),
            "stored_more": sum(n > 1 for n in per_trial)}


def refused(response: httpx.Response) -> bool:
    return response.status_code >= 400


def queue_join(http: httpx.Client, fn_index: int, data: list) -> httpx.Response:
    return http.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": "bench"})


def access_checks(root: Path, clip: Path) -> dict:
    config = make_project(root, ["alice", "bob"], items=4, overlap=1, clip=clip)
    server = ServerProcess(config, free_port(), root / "server.log")
    try:
        alice, bob = HttpSession(server.url, "alice", PASSWORD), HttpSession(server.url, "bob", PASSWORD)
        alice_view = alice.call("current")
        clip_path = str((config.parent / "clips" / "a.webm").resolve())
        anonymous = httpx.Client(base_url=server.url, timeout=30)
        without_login = [refused(anonymous.get(path)) for path in (
            "/config", "/gradio_api/info", "/gradio_api/openapi.json", "/" + clip_url(clip_path),
            f"/gradio_api/file={clip_path}", "/labeling/export/core", "/labeling/export/trl",
            "/labeling/export/ranked")]
        without_login.append(refused(queue_join(anonymous, 1, [alice_view[0], ""])))
        without_login.append("vote_a" not in anonymous.get("/?all_endpoints=true").text)

        before = stored_votes(config)
        across = ["Not saved" in bob.call("vote_a", alice_view[0], "")[1]]  # alice's item, sent by bob
        across[0] = across[0] and stored_votes(config) == before
        across += [refused(bob.http.get(f"/labeling/export/{fmt}")) for fmt in ("core", "trl", "ranked")]
        across += [refused(bob.http.get(f"/gradio_api/file={config.parent / name}"))
                   for name in ("store/votes.sqlite", "store/audit.jsonl", "users.json", "clips/page.html")]
        across.append(_admin_report_refused(bob))
    finally:
        server.stop()
    return {"anonymous_refused": sum(without_login), "anonymous_tried": len(without_login),
            "cross_refused": sum(across), "cross_tried": len(across)}


def _admin_report_refused(session: HttpSession) -> bool:
    try:
        session.call("admin_report")
    except RuntimeError:
        return True  # "Admins only."
    return False


def make_clip(path: Path) -> Path:
    """A tiny VP9 WebM, as the tests make it."""
    sys.path.insert(0, str(REPO / "tests" / "labeling_app"))
    from labeling_testkit import make_clip as testkit_clip

    return testkit_clip(path, 40)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=50, help="votes per annotator in scenario 1 (default 50)")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs in scenario 2 (default 2)")
    parser.add_argument("--trials", type=int, default=20, help="send groups per duplicate count (default 20)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="labeling-reliability-"))
    figures = {"concurrent_20": concurrent_annotators(root / "concurrent", 20, args.votes),
               "sigkill": killed_server(root / "killed", args.kills),
               "duplicates_2": duplicate_sends(root / "dup2", 2, args.trials),
               "duplicates_5": duplicate_sends(root / "dup5", 5, args.trials),
               "access": access_checks(root / "access", make_clip(root / "clip.webm"))}
    c, k, a = figures["concurrent_20"], figures["sigkill"], figures["access"]
    print(f"20 concurrent annotators: {c['acknowledged']} votes acknowledged, {c['stored']} stored, {c['lost']} lost")
    print(f"{k['kills']} x kill -9 mid-stream: {k['acknowledged']} acknowledged, {k['stored']} stored, "
          f"{k['lost']} lost")
    for n in (2, 5):
        d = figures[f"duplicates_{n}"]
        print(f"{n} concurrent sends of one vote: stored once in {d['stored_once']} / {d['trials']}, "
              f"more than once in {d['stored_more']}")
    print(f"without login: {a['anonymous_refused']} / {a['anonymous_tried']} requests refused")
    print(f"across annotators: {a['cross_refused']} / {a['cross_tried']} requests refused")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
