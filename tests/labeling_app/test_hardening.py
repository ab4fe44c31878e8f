"""The labelling app as a hostile or unlucky user meets it: re-sent votes, late votes, other
annotators' files, a removed account, markup in item ids, huge comments and bodies."""

from __future__ import annotations

import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from labeling_testkit import PASSWORD, HttpSession, make_project, pair_rows

from labeling_app.handlers import MAX_COMMENT, LabelingService, View, parse_shown
from labeling_app.sources import Item
from labeling_app.storage import Storage
from labeling_app.users import add_user, remove_user

SHOWN, STATUS, HTML, COMMENT = range(4)  # a view's outputs (app.build_demo)


def stored(server) -> list[tuple[str, str]]:
    return [(v["item_id"], v["annotator"]) for v in server.service.storage.votes()]


# -- 1. a vote names the item and order it answers; a re-send is stored once ----------------

@pytest.mark.parametrize("sends", [2, 5])
def test_concurrent_resends_of_one_vote_store_one_vote(tmp_path, server_factory, sends):
    server = server_factory(make_project(tmp_path / "p", pair_rows(10)))
    shown = HttpSession(server.url, "alice").call("current")
    item, _ = parse_shown(shown[SHOWN])
    # one page session per send: Gradio streams a session's results over one connection
    sessions = [HttpSession(server.url, "alice") for _ in range(sends)]
    with ThreadPoolExecutor(sends) as pool:
        replies = list(pool.map(lambda session: session.call("vote_a", shown[SHOWN], ""), sessions))
    assert stored(server) == [(item, "alice")]  # one vote, and none on the next item
    assert all(reply == replies[0] for reply in replies)  # the same reply to every send
    assert parse_shown(replies[0][SHOWN])[0] != item and "Not saved" not in replies[0][STATUS]


def test_a_vote_for_an_item_not_shown_is_refused(tmp_path, server_factory):
    server = server_factory(make_project(tmp_path / "p", pair_rows(3)))
    alice, bob = HttpSession(server.url, "alice"), HttpSession(server.url, "bob")
    shown_to_bob = bob.call("current")[SHOWN]
    mine = alice.call("current")
    refused = alice.call("vote_a", shown_to_bob, "")  # bob's item: never shown to alice
    assert "Not saved" in refused[STATUS] and refused[SHOWN] == mine[SHOWN]
    item, order = parse_shown(mine[SHOWN])
    other_order = json.dumps({"item": item, "order": order[::-1]})
    assert "Not saved" in alice.call("vote_a", other_order, "")[STATUS]  # not the order shown
    assert "Not saved" in alice.call("vote_a", "", "")[STATUS]
    assert stored(server) == []


# -- 2. exports: admins only, owner-only, cleaned up ----------------------------------------

def test_exports_are_for_admins_only_and_leave_no_file(tmp_path, server_factory, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    server = server_factory(make_project(tmp_path / "p", pair_rows(2)))
    alice = HttpSession(server.url, "alice")
    alice.call("vote_a", alice.call("current")[SHOWN], "a private note")
    admin = HttpSession(server.url, "admin")
    modes = []
    real_chmod = os.chmod
    monkeypatch.setattr(os, "chmod", lambda path, mode, **kw: (modes.append(mode), real_chmod(path, mode, **kw)))
    for fmt in ("core", "trl", "ranked"):
        response = admin.http.get(f"/labeling/export/{fmt}")
        assert response.status_code == 200, response.text
        assert "attachment" in response.headers["content-disposition"]
        assert alice.http.get(f"/labeling/export/{fmt}").status_code == 403
        assert httpx.get(server.url + f"labeling/export/{fmt}").status_code == 401
    assert "a private note" in admin.http.get("/labeling/export/core").text
    assert modes and all(mode == 0o600 for mode in modes)
    assert list(temp.iterdir()) == []  # nothing left behind


# -- 3. values from project files are escaped wherever they are shown -----------------------

def test_item_ids_and_messages_are_escaped_in_the_status_line():
    view = View('x`<img src=x onerror=alert(1)>`*y*', mode="pair", message="item 'a`<b>`' is gone")
    assert "<img" not in view.status and "<b>" not in view.status
    assert "&lt;img" in view.status and "\\`" in view.status and "\\*y\\*" in view.status


# -- 4. the page before login reveals nothing -----------------------------------------------

def test_the_page_before_login_has_no_api_description(tmp_path, server_factory):
    server = server_factory(make_project(tmp_path / "p", pair_rows(2)))
    for query in ("", "?all_endpoints=true"):
        page = httpx.get(server.url + query)
        assert page.status_code == 200 and "auth_required" in page.text
        for secret in ("vote_a", "admin_report", "api_name", "named_endpoints"):
            assert secret not in page.text, (query, secret)
    logged_in = HttpSession(server.url, "alice").http.get("/")
    assert "vote_a" in logged_in.text


# -- 5. removing a user or changing a password ends their sessions ------------------------

def test_removed_user_and_changed_password_end_sessions(tmp_path, server_factory):
    server = server_factory(make_project(tmp_path / "p", pair_rows(4)))
    users = server.config.users
    alice, bob = HttpSession(server.url, "alice"), HttpSession(server.url, "bob")
    alice.call("current")
    bob.call("current")
    remove_user(users, "alice")
    with pytest.raises(httpx.HTTPStatusError):
        alice.call("current")
    add_user(users, "bob", "a-new-password", n=2**10)
    with pytest.raises(httpx.HTTPStatusError):
        bob.call("current")
    HttpSession(server.url, "bob", "a-new-password").call("current")  # the new password works


# -- 6. a late vote never beats the live lease holder ---------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_late_vote_nobody_competes_for_is_kept(tmp_path):
    """(A late vote against a live lease holder: test_lease_blocks_others_until_it_expires.)"""
    clock = FakeClock()
    storage = Storage(tmp_path / "v.sqlite", tmp_path / "a.jsonl", lease_seconds=60, clock=clock)
    storage.sync_items([Item("i0", "pair", ["a", "b"], "p")])
    service = LabelingService(storage)
    slow = service.current("alice")
    clock.now += 61
    service.answer("alice", slow.shown, "A")
    assert [(v["item_id"], v["annotator"]) for v in storage.votes()] == [("i0", "alice")]


# -- 7. only the clips the items name, as video ----------------------------------------------

def test_only_named_clips_are_served_as_video(tmp_path, server_factory):
    config = make_project(tmp_path / "p", None, clips=1)
    folder = tmp_path / "p" / "clips"
    (folder / "page.html").write_text("<script>alert(1)</script>")
    (folder / "extra.webm").write_bytes((folder / "seg0a.webm").read_bytes())
    server = server_factory(config)
    alice = HttpSession(server.url, "alice")
    urls = re.findall(r'<video[^>]* src="([^"]+)"', alice.call("current")[HTML])
    assert len(urls) == 2
    for url in urls:
        response = alice.http.get("/" + url)
        assert response.status_code == 200 and response.headers["content-type"] == "video/webm"
        assert httpx.get(server.url + url).status_code == 401  # a login is needed
    clip_route = "/" + urls[0].rsplit("/", 1)[0]
    for name in ("page.html", "extra.webm", "manifest.json"):
        for url in (f"/gradio_api/file={folder / name}", f"/file={folder / name}", f"{clip_route}/{name}"):
            response = alice.http.get(url)
            assert response.status_code >= 400 and b"<script>" not in response.content, url


# -- 8. over-long comments are refused visibly; bodies are bounded ----------------------------

def test_over_long_comments_are_refused_with_a_message(tmp_path, server_factory):
    server = server_factory(make_project(tmp_path / "p", pair_rows(2)))
    alice = HttpSession(server.url, "alice")
    shown = alice.call("current")
    long_comment = "x" * (MAX_COMMENT + 1)
    refused = alice.call("vote_a", shown[SHOWN], long_comment)
    assert f"at most {MAX_COMMENT}" in refused[STATUS] and refused[SHOWN] == shown[SHOWN]
    assert refused[COMMENT] == long_comment  # kept, so it can be shortened
    assert stored(server) == []
    alice.call("vote_a", shown[SHOWN], "x" * MAX_COMMENT)
    assert len(server.service.storage.votes()[0]["comment"]) == MAX_COMMENT

    huge = {"data": [shown[SHOWN], "y" * 2_000_000], "fn_index": 1, "session_hash": alice.session}
    assert alice.http.post("/gradio_api/queue/join", json=huge).status_code == 413
    assert httpx.post(server.url + "login", content=b"username=" + b"a" * 2_000_000,
                      headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
