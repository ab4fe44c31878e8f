"""The live loop's side of the app: the token-guarded API (api.py), its client
(AdminClient), items added while serving, uploaded clips, and the bots (annotate.py)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from labeling_testkit import PASSWORD, HttpSession, make_clip, make_project, pair_rows

from labeling_app import api
from labeling_app.admin import report, summary_markdown
from labeling_app.annotate import main as annotate_main
from labeling_app.annotate import make_bot_accounts, parse_item
from labeling_app.config import load_config
from labeling_app.handlers import render_item
from labeling_app.http_client import AdminClient, ApiError
from labeling_app.sources import API_SOURCE, Item
from labeling_app.storage import Storage
from rlhf.config import ConfigError, run_main
from rlhf.rubric import gold_score

TOKEN = "test-token-1234"
PROMPT = "What is the most important thing to know about photosynthesis?"
# gold 0.85, 0.53 and 0.30 (rlhf.rubric.gold_score): an on-topic answer, an off-topic one, a content-free one
ANSWERS = ["Plants use sunlight and chlorophyll in their leaves to turn water and carbon dioxide into sugar and oxygen.",
           "Cars need fuel to drive on roads every day and they have wheels.",
           "Hello there! Thanks for asking!"]
ORDERS = [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0], [0, 2, 1], [1, 0, 2]]  # every order of three
ITEM_ID = re.compile(r'data-item="([^"]*)"')


def loop_project(root: Path, task: str = "ranking", overlap: int = 1, rows=None) -> Path:
    """A project served with the loop API and (unless `rows`) no source at all."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "api_token").write_text(TOKEN + "\n")
    return make_project(root, rows, overlap=overlap, task=task, extra="api_token_file: api_token\n")


def text_items(n: int, prefix: str = "t") -> list[dict]:
    return [{"id": f"{prefix}{i}", "prompt": f"Question {i}?", "completions": [f"yes {i}", f"no {i}"]}
            for i in range(n)]


def clip_item(item_id: str, clip_a: bytes, clip_b: bytes) -> dict:
    return {"id": item_id, "segments": [f"{item_id}-a", f"{item_id}-b"],
            "clip_data": [base64.b64encode(clip_a).decode(), base64.b64encode(clip_b).decode()]}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("clips")
    return make_clip(folder / "dark.webm", 40).read_bytes(), make_clip(folder / "light.webm", 200).read_bytes()


def shown_id(outputs: list) -> str | None:
    match = ITEM_ID.search(outputs[2])
    return match.group(1) if match else None


# -- config and storage ---------------------------------------------------------------------

def test_token_file_must_exist_and_hold_a_token(tmp_path):
    config = loop_project(tmp_path / "p")
    assert load_config(config).sources == []
    (tmp_path / "p" / "api_token").write_text(" \n")
    with pytest.raises(ConfigError, match="field 'api_token_file'.*is empty"):
        load_config(config)
    (tmp_path / "p" / "api_token").unlink()
    with pytest.raises(ConfigError, match="field 'api_token_file': token file not found"):
        load_config(config)
    without_token = make_project(tmp_path / "q", None)
    with pytest.raises(ConfigError, match="field 'sources'"):
        load_config(without_token)


def test_items_added_through_the_api_survive_a_restart(tmp_path):
    storage = Storage(tmp_path / "votes.sqlite", tmp_path / "audit.jsonl")
    storage.sync_items([Item("file0", "pair", ["a", "b"], "p", source="items.jsonl")])
    added = [Item(f"api{i}", "pair", ["a", "b"], "p", source=API_SOURCE) for i in range(2)]
    assert storage.add_items(added, {"api1": 2.0}) == (["api0", "api1"], [])
    storage.sync_items([])  # a restart whose sources no longer hold file0
    assert [item.id for item in storage.items()] == ["api0", "api1"]
    assert storage.next_item("alice").item.id == "api1"  # priority first
    storage.close()


# -- the API --------------------------------------------------------------------------------

def test_routes_need_the_token_and_exist_only_with_one(tmp_path, server_factory):
    server = server_factory(loop_project(tmp_path / "p"))
    status = server.url + "loop/api/status"
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}):
        refused = httpx.get(status, headers=headers)
        assert refused.status_code == 401 and "token" in refused.json()["error"]
    assert httpx.post(server.url + "loop/api/items", json={"items": text_items(1)}).status_code == 401
    assert server.service.storage.items() == []
    with AdminClient(server.url, TOKEN) as admin:
        assert admin.status() == {"items": 0, "open": 0, "votes": 0, "last_vote_id": 0, "annotators": 0, "parts": {}}

    plain = server_factory(make_project(tmp_path / "q", pair_rows(1)))
    response = httpx.get(plain.url + "loop/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404


def test_items_added_while_serving_are_shown_at_once_in_priority_order(tmp_path, server_factory):
    server = server_factory(loop_project(tmp_path / "p"))
    alice = HttpSession(server.url, "alice")
    assert shown_id(alice.call("current")) is None  # nothing yet
    admin = AdminClient(server.url, TOKEN)
    priorities = {"t0": 0.1, "t1": 0.5, "t2": 0.3, "t3": 0.9, "t4": 0.2}
    assert admin.add_items(text_items(5), priorities) == {"added": ["t0", "t1", "t2", "t3", "t4"], "existing": []}

    view = alice.call("current")
    shown = [shown_id(view)]
    for _ in range(4):
        view = alice.call("vote_a", view[0], "")
        shown.append(shown_id(view))
    assert shown == ["t3", "t1", "t2", "t4", "t0"]

    assert admin.add_items(text_items(5), priorities) == {"added": [], "existing": ["t0", "t1", "t2", "t3", "t4"]}
    changed = text_items(1)
    changed[0]["completions"] = ["yes 0", "changed"]
    with pytest.raises(ApiError) as refused:
        admin.add_items(changed)
    assert refused.value.status == 409 and "'t0'" in refused.value.message
    assert admin.status() == {"items": 5, "open": 1, "votes": 4, "last_vote_id": 4, "annotators": 1, "parts": {}}


def test_votes_after_an_id_are_exactly_the_later_votes(tmp_path, server_factory):
    server = server_factory(loop_project(tmp_path / "p"))
    admin = AdminClient(server.url, TOKEN)
    admin.add_items(text_items(4))
    alice = HttpSession(server.url, "alice")
    view = alice.call("current")
    for _ in range(4):
        view = alice.call("vote_b", view[0], "")

    later = admin.votes(after=2, limit=10)
    assert [v["vote_id"] for v in later["votes"]] == [3, 4] and later["last_id"] == 4
    assert [v["item_id"] for v in later["votes"]] == ["t2", "t3"]
    first = admin.votes(after=0, limit=2)
    assert [v["vote_id"] for v in first["votes"]] == [1, 2] and first["last_id"] == 2
    assert admin.votes(after=4) == {"votes": [], "last_id": 4}
    stored = server.service.storage.votes()
    for vote, row in zip(admin.votes()["votes"], stored):
        comparison = vote["comparison"]
        assert vote["annotator"] == "alice" and comparison["kind"] == "pair"
        assert comparison["label"] == row["label"] and comparison["id"] == f"{row['item_id']}:alice"
    with pytest.raises(ApiError) as refused:
        admin.votes(after=-1)
    assert refused.value.status == 400 and "'after'" in refused.value.message


def test_bad_items_are_refused_naming_the_item_and_field(tmp_path, server_factory, monkeypatch):
    server = server_factory(loop_project(tmp_path / "p"))
    admin = AdminClient(server.url, TOKEN)
    good = text_items(1)[0]
    cases = [
        ([good, {"id": "x", "prompt": "p", "completions": ["only one"]}], {},
         "items[1] (id 'x'), field 'completions': expected a list of K >= 2 completions"),
        ([{"id": "x", "completions": ["a", "b"]}], {}, "items[0] (id 'x'), field 'prompt': missing required field"),
        ([{"prompt": "p", "completions": ["a", "b"]}], {}, "items[0], field 'id'"),
        ([{"id": "c", "segments": ["s", "s"], "clip_data": ["", ""]}], {}, "items[0] (id 'c'), field 'segments'"),
        ([{"id": "c", "segments": ["s", "t"], "clip_data": ["bm90IGEgY2xpcA==", ""]}], {},
         "items[0] (id 'c'), field 'clip_data[0]': expected a base64-encoded WebM file"),
        ([good], {"t9": 1.0}, "field 'priorities': 't9' is not an item of this request"),
    ]
    for items, priorities, expected in cases:
        with pytest.raises(ApiError) as refused:
            admin.add_items(items, priorities)
        assert refused.value.status == 400 and expected in refused.value.message
    assert server.service.storage.items() == []  # all or nothing: the good item was not stored either

    monkeypatch.setattr(api, "MAX_BODY_BYTES", 1000)
    with pytest.raises(ApiError) as refused:
        admin.add_items(text_items(30))
    assert refused.value.status == 413


def test_heartbeats_show_in_status_and_escaped_on_the_admin_page(tmp_path, server_factory):
    server = server_factory(loop_project(tmp_path / "p"))
    admin = AdminClient(server.url, TOKEN)
    assert admin.heartbeat("reward", {"round": 1}) == {"ok": True}
    admin.heartbeat("reward", {"round": 2, "note": "<b>fit</b> *done*"})
    admin.heartbeat("policy", {"step": 10})
    parts = admin.status()["parts"]
    assert sorted(parts) == ["policy", "reward"] and parts["reward"]["state"] == {"round": 2, "note": "<b>fit</b> *done*"}
    summary = summary_markdown(report(server.service.storage))
    assert "**policy**" in summary and "**reward**" in summary
    assert "&lt;b&gt;fit&lt;/b&gt; \\*done\\*" in summary and "<b>" not in summary
    with pytest.raises(ApiError) as refused:
        admin.heartbeat("", {})
    assert refused.value.status == 400


def test_uploaded_clips_are_served_to_logged_in_annotators_only(tmp_path, server_factory, clips):
    server = server_factory(loop_project(tmp_path / "p"))
    admin = AdminClient(server.url, TOKEN)
    dark, light = clips
    assert admin.add_items([clip_item("c0", dark, light)]) == {"added": ["c0"], "existing": []}
    item = server.service.storage.item("c0")
    folder = server.config.clips_path.resolve()
    assert item.mode == "clip" and item.completions == ["c0-a", "c0-b"]
    assert [Path(p).parent.parent for p in item.clips] == [folder, folder]
    assert [Path(p).name for p in item.clips] == ["a.webm", "b.webm"]

    alice = HttpSession(server.url, "alice")
    page = alice.call("current")[2]
    urls = re.findall(r'<video[^>]* src="([^"]+)"', page)
    assert len(urls) == 2
    served = {alice.http.get("/" + url).content for url in urls}
    assert served == {dark, light}
    anonymous = httpx.get(server.url + urls[0])
    assert anonymous.status_code in (401, 403)
    assert httpx.get(server.url + "gradio_api/file=" + str(server.config.db_path),
                     cookies=alice.http.cookies).status_code >= 400

    assert admin.add_items([clip_item("c0", dark, light)]) == {"added": [], "existing": ["c0"]}
    with pytest.raises(ApiError) as refused:
        admin.add_items([clip_item("c0", light, dark)])
    assert refused.value.status == 409 and "other clips" in refused.value.message


# -- the bots ---------------------------------------------------------------------------------

def test_the_page_is_read_back_in_display_order():
    item = Item('id <"&>', "ranking", ["first & <b>", "second\nline", "third"], "Why <so>?")
    shown = parse_item(render_item(item, [2, 0, 1]))
    assert shown.item_id == 'id <"&>' and shown.mode == "ranking" and shown.prompt == "Why <so>?"
    assert shown.completions == ["third", "first & <b>", "second\nline"]
    assert parse_item('<div class="item-view" data-mode="done" data-k="0"></div>').item_id is None


def expected_ranks(completions: list[str]) -> list[int]:
    """Ranks (0 = best) by the gold: what the oracle answers."""
    scores = [gold_score(text, PROMPT) for text in completions]
    return [sorted(scores, reverse=True).index(score) for score in scores]


def test_the_answers_gold_scores_differ_clearly():
    assert [round(gold_score(text, PROMPT), 2) for text in ANSWERS] == [0.85, 0.53, 0.3]


def test_oracle_bots_rank_by_the_gold(tmp_path, server_factory, capsys):
    config = loop_project(tmp_path / "p", task="ranking", overlap=1)
    server = server_factory(config)
    items = [{"id": f"r{i}", "prompt": PROMPT, "completions": [ANSWERS[j] for j in order]}
             for i, order in enumerate(ORDERS)]
    AdminClient(server.url, TOKEN).add_items(items)
    accounts = tmp_path / "p" / "bots.json"
    make_bot_accounts(server.config.users, accounts, 2)
    log = tmp_path / "votes.jsonl"

    assert annotate_main(["--url", server.url, "--accounts", str(accounts), "--bots", "2", "--teacher", "oracle",
                          "--think_time", "0", "--max_votes", "6", "--log", str(log)]) == 0
    votes = server.service.storage.votes()
    assert len(votes) == 6 and sorted(v["item_id"] for v in votes) == [f"r{i}" for i in range(6)]
    by_id = {item["id"]: item for item in items}
    for vote in votes:
        assert vote["kind"] == "ranking" and vote["annotator"] in ("bot-1", "bot-2")
        assert vote["ranks"] == expected_ranks(by_id[vote["item_id"]]["completions"])
    assert len({tuple(v["ranks"]) for v in votes}) == 6  # every order of the three answers was ranked
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 6 and all(r["answer"] == "rank" and r["round_trip_ms"] > 0 for r in records)
    out = capsys.readouterr().out
    assert "annotate: 6 votes by 2 bot(s)" in out and "p50" in out and "p95" in out


def test_bot_answers_clip_pairs_from_the_returns_file(tmp_path, server_factory, clips):
    server = server_factory(loop_project(tmp_path / "p", overlap=1))
    dark, light = clips
    true_returns = {"c0": [3.0, 1.0], "c1": [0.5, 2.5], "c2": [-1.0, -2.0], "c3": [7.0, 9.0]}
    returns = tmp_path / "returns.jsonl"
    returns.write_text("".join(json.dumps({"item_id": k, "returns": v}) + "\n" for k, v in true_returns.items()))
    AdminClient(server.url, TOKEN).add_items([clip_item(item_id, dark, light) for item_id in true_returns])
    accounts = tmp_path / "bots.json"
    make_bot_accounts(server.config.users, accounts, 1)

    assert annotate_main(["--url", server.url, "--accounts", str(accounts), "--bots", "1", "--teacher", "oracle",
                          "--think_time", "0", "--max_votes", "4", "--returns", str(returns)]) == 0
    labels = {v["item_id"]: v["label"] for v in server.service.storage.votes()}
    assert labels == {"c0": 1.0, "c1": 0.0, "c2": 1.0, "c3": 0.0}  # label 1: true clip a preferred


def test_annotate_reports_bad_accounts_as_config_errors(tmp_path, server_factory, capsys):
    server = server_factory(loop_project(tmp_path / "p"))
    accounts = tmp_path / "bots.json"
    accounts.write_text(json.dumps({"accounts": [{"user": "alice", "password": "not-" + PASSWORD}]}))
    assert run_main(annotate_main, ["--url", server.url, "--accounts", str(accounts), "--bots", "1",
                                    "--max_seconds", "5"]) == 2
    assert "error: --accounts: alice: the app at" in capsys.readouterr().err
    assert run_main(annotate_main, ["--url", server.url, "--accounts", str(accounts), "--bots", "2"]) == 2
    assert "error: --bots: at most 1" in capsys.readouterr().err


def test_idle_bots_poll_until_items_arrive_or_time_runs_out(tmp_path, server_factory, capsys):
    server = server_factory(loop_project(tmp_path / "p", overlap=1))
    accounts = tmp_path / "bots.json"
    make_bot_accounts(server.config.users, accounts, 2)
    args = ["--url", server.url, "--accounts", str(accounts), "--teacher", "oracle", "--think_time", "0"]

    assert annotate_main(args + ["--max_seconds", "0.5"]) == 0  # nothing to label: it returns, having voted nothing
    assert "annotate: no votes by 2 bot(s)" in capsys.readouterr().out

    run = threading.Thread(target=annotate_main, args=(args + ["--max_votes", "2", "--max_seconds", "60"],))
    run.start()
    time.sleep(1.0)  # the bots are polling an empty queue
    AdminClient(server.url, TOKEN).add_items(text_items(2))
    run.join(timeout=60)
    assert not run.is_alive()
    assert sorted(v["item_id"] for v in server.service.storage.votes()) == ["t0", "t1"]
    assert "annotate: 2 votes by 2 bot(s)" in capsys.readouterr().out
