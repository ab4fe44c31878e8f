"""An in-process server driven through `gradio_client`: concurrency, login, privacy."""

from __future__ import annotations

import random
import re
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gradio_client.exceptions import AppError, AuthenticationError
from labeling_testkit import PASSWORD, make_project, pair_rows

from labeling_app.handlers import clip_url, parse_shown

ANNOTATORS = [f"ann{i:02d}" for i in range(20)]
VOTES_EACH = 50
PROGRESS = re.compile(r"Progress: (\d+) / (\d+) done")
SHOWN, STATUS, HTML = range(3)  # a view's outputs (app.build_demo)


def login(url: str, user: str, password: str = PASSWORD) -> httpx.Client:
    http = httpx.Client(base_url=url, timeout=30)
    response = http.post("/login", data={"username": user, "password": password})
    assert response.status_code == 200, response.text
    return http


@pytest.mark.slow
def test_twenty_annotators_fifty_votes_each(tmp_path, server_factory):
    config = make_project(tmp_path / "p", pair_rows(600), overlap=2, users=ANNOTATORS)
    server = server_factory(config)

    def annotate(user: str) -> list[str]:
        rng = random.Random(user)
        client = server.client(user)
        shown = client.predict(api_name="/current")
        voted = []
        for _ in range(VOTES_EACH):
            voted.append(parse_shown(shown[SHOWN])[0])
            shown = client.predict(shown[SHOWN], "",
                                   api_name=rng.choice(["/vote_a", "/vote_b", "/vote_tie", "/cant_tell"]))
            assert "**" not in shown[STATUS], shown[STATUS]  # no refusal note
        done, _ = map(int, PROGRESS.search(shown[STATUS]).groups())
        assert done == VOTES_EACH
        return voted

    start = time.monotonic()
    with ThreadPoolExecutor(len(ANNOTATORS)) as pool:
        futures = [pool.submit(annotate, user) for user in ANNOTATORS]
        results = [f.result(timeout=240) for f in futures]
    elapsed = time.monotonic() - start

    db = sqlite3.connect(server.config.db_path)
    rows = db.execute("SELECT item_id, annotator FROM votes").fetchall()
    assert len(rows) == len(ANNOTATORS) * VOTES_EACH == 1000
    assert len(set(rows)) == 1000  # nobody labelled an item twice
    per_item = Counter(item for item, _ in rows)
    assert max(per_item.values()) <= 2  # overlap respected
    per_annotator = Counter(user for _, user in rows)
    assert set(per_annotator.values()) == {VOTES_EACH}
    for user, voted in zip(ANNOTATORS, results):  # what each client was shown is what got stored
        assert {item for item, who in rows if who == user} == set(voted)
    audit_lines = server.config.audit_path.read_text().splitlines()
    assert len(audit_lines) == 1000
    print(f"1000 votes by 20 annotators in {elapsed:.1f} s")


def test_requests_without_login_are_refused(tmp_path, server_factory):
    server = server_factory(make_project(tmp_path / "p", pair_rows(3), clips=1))
    from gradio_client import Client

    with pytest.raises(AuthenticationError):
        Client(server.url, verbose=False, analytics_enabled=False, ssl_verify=False)
    with pytest.raises(Exception):
        server.client("alice", "wrong-password")
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    assert anonymous.get("/config").status_code in (401, 403)
    join = anonymous.post("/gradio_api/queue/join", json={"data": [""], "fn_index": 1, "session_hash": "x"})
    assert join.status_code in (401, 403)
    assert anonymous.post("/login", data={"username": "alice", "password": "nope"}).status_code == 400
    clip = clip_url(server.service.storage.item("clip0").clips[0])
    assert anonymous.get(clip).status_code in (401, 403)  # clips need a login too
    assert login(server.url, "alice").get(clip).status_code == 200
    assert server.service.storage.votes() == []


@pytest.mark.slow
def test_annotators_cannot_read_or_touch_others_votes(tmp_path, server_factory):
    server = server_factory(make_project(tmp_path / "p", pair_rows(4)))
    alice, bob = server.client("alice"), server.client("bob")
    shown = alice.predict(api_name="/current")
    alice.predict(shown[SHOWN], "alice's private note", api_name="/vote_a")

    shown = bob.predict(api_name="/current")
    assert "Progress: 0 / 2 done" in shown[STATUS]  # bob's own: p0 is full, p1 is leased to alice
    with pytest.raises(AppError, match="Admins only"):
        bob.predict(api_name="/admin_report")
    http = login(server.url, "bob")
    for fmt in ("core", "trl", "ranked"):
        assert http.get(f"/labeling/export/{fmt}").status_code == 403
    listing = str(bob.view_api(return_format="dict", print_info=False))
    assert "admin" not in listing and "export" not in listing  # not advertised either

    # no route serves the database, the audit log or the users file
    for path in (server.config.db_path, server.config.audit_path, server.config.users):
        for url in (f"/gradio_api/file={path}", f"/file={path}"):
            response = http.get(url)
            assert response.status_code >= 400 and b"private note" not in response.content, url

    # bob's answers only ever touch bob's lease
    bob.predict(shown[SHOWN], "", api_name="/vote_b")
    votes = server.service.storage.votes()
    assert [(v["annotator"], v["comment"]) for v in votes] == [("alice", "alice's private note"), ("bob", "")]
    assert votes[0]["item_id"] != votes[1]["item_id"]

    admin = server.client("admin")
    summary = admin.predict(api_name="/admin_report")
    assert "2 votes" in summary[0]
    assert "alice's private note" in login(server.url, "admin").get("/labeling/export/core").text


def test_ranking_and_best_of_k_through_the_api(tmp_path, server_factory):
    rows = [{"id": "r", "prompt": "p", "completions": ["w", "x", "y", "z"]}]
    server = server_factory(make_project(tmp_path / "p", rows, task="ranking"))
    alice = server.client("alice")
    shown = alice.predict(api_name="/current")
    assert "Item r " in shown[STATUS]
    refused = alice.predict(shown[SHOWN], "1,2", "", api_name="/rank")  # too few ranks: the item stays
    assert "Item r " in refused[STATUS] and "Not saved" in refused[STATUS]
    alice.predict(shown[SHOWN], "2,1,1,3", "", api_name="/rank")
    vote = server.service.storage.votes()[0]
    order = vote["display_order"]
    expected = [None] * 4
    for slot, rank in enumerate([1, 0, 0, 2]):
        expected[order[slot]] = rank
    assert vote["ranks"] == expected and vote["pressed"] == "rank:2,1,1,3"

    rows = [{"id": "b", "prompt": "p", "completions": ["w", "x", "y"]}]
    server = server_factory(make_project(tmp_path / "q", rows, task="best_of_k"))
    bob = server.client("bob")
    shown = bob.predict(api_name="/current")
    assert 'data-mode="best_of_k"' in shown[HTML]
    bob.predict(shown[SHOWN], "", api_name="/best_3")
    vote = server.service.storage.votes()[0]
    assert vote["kind"] == "best_of_k" and vote["choice"] == vote["display_order"][2]
