"""Handlers, storage, export, agreement and accounts in plain pytest: no server."""

from __future__ import annotations

import json
import sqlite3

import pytest
from labeling_testkit import FAST_N, PASSWORD, make_project, pair_rows, write_jsonl

from labeling_app import active, admin
from labeling_app.config import ConfigError, load_config
from labeling_app.export import comparisons_from_storage, main as export_main, vote_to_comparison, write_export
from labeling_app.handlers import AnswerError, LabelingService, answer_from_display, dense_ranks, render_completion
from labeling_app.sources import Item, SourceError, load_items
from labeling_app.storage import Storage, display_order_for
from labeling_app.users import UserStore, UsersError, add_user, main as users_main, read_users
from rlhf.config import run_main
from rlhf.preferences import load_comparisons


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_storage(tmp_path, items, overlap=1, clock=None, **kwargs) -> Storage:
    storage = Storage(tmp_path / "votes.sqlite", tmp_path / "audit.jsonl", overlap=overlap,
                      lease_seconds=60, clock=clock or FakeClock(), **kwargs)
    storage.sync_items(items)
    return storage


def text_items(n, k=2, mode=None):
    return [Item(f"i{j}", mode or ("pair" if k == 2 else "ranking"), [f"c{j}-{c}" for c in range(k)], f"prompt {j}")
            for j in range(n)]


# -- answers in display terms become true order -------------------------------------------

def test_pair_answers_map_to_true_order():
    item = text_items(1)[0]
    assert answer_from_display(item, [0, 1], "A") == {"kind": "pair", "label": 1.0}
    assert answer_from_display(item, [1, 0], "A") == {"kind": "pair", "label": 0.0}  # A showed true item 1
    assert answer_from_display(item, [1, 0], "B") == {"kind": "pair", "label": 1.0}
    assert answer_from_display(item, [1, 0], "tie") == {"kind": "pair", "label": 0.5}
    assert answer_from_display(item, [1, 0], "cant_tell") == {"kind": "not_comparable"}
    with pytest.raises(AnswerError):
        answer_from_display(item, [0, 1], "best:1")


def test_ranking_and_best_of_k_map_to_true_order():
    item = text_items(1, k=4)[0]
    order = [2, 0, 3, 1]  # slot 0 shows true item 2, ...
    # shown ranks per slot: slot0 best, slot1 and slot2 tied second, slot3 last
    answer = answer_from_display(item, order, "rank", ["1", "2", "2", "4"])
    assert answer == {"kind": "ranking", "ranks": [1, 2, 0, 1]}
    best = Item("b", "best_of_k", ["w", "x", "y"], "p")
    assert answer_from_display(best, [2, 0, 1], "best:1") == {"kind": "best_of_k", "choice": 2}
    with pytest.raises(AnswerError):
        answer_from_display(best, [2, 0, 1], "best:4")


def test_dense_ranks_validate():
    assert dense_ranks(["3", "1", "3"], 3) == [1, 0, 1]
    for bad in (["1", None, "2"], ["1", "x", "2"], ["1", "2", "4"]):
        with pytest.raises(AnswerError):
            dense_ranks(bad, 3)


def test_display_order_is_per_annotator_and_item_and_stable():
    item = text_items(1, k=6)[0]
    a1 = display_order_for(item, "alice", 0, True)
    assert a1 == display_order_for(item, "alice", 0, True)
    assert sorted(a1) == list(range(6))
    orders = {tuple(display_order_for(Item(f"x{j}", "ranking", item.completions, "p"), "alice", 0, True))
              for j in range(20)}
    assert len(orders) > 5  # randomised across items
    assert display_order_for(item, "alice", 0, False) == list(range(6))


def test_completion_markup_is_escaped():
    html = render_completion('<script>window.x=1</script><img src=x onerror="alert(1)">', "A")
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "onerror=&quot;alert(1)&quot;" in html


# -- storage: leases, overlap, skips, idempotence ------------------------------------------

def test_overlap_and_no_repeat(tmp_path):
    storage = make_storage(tmp_path, text_items(3), overlap=2)
    service = LabelingService(storage)
    seen = {}
    for user in ("u1", "u2", "u3"):
        view = service.current(user)
        seen[user] = []
        for _ in range(5):  # bounded
            if view.item_id is None:
                break
            seen[user].append(view.item_id)
            view = service.answer(user, view.shown, "A")
    for user, ids in seen.items():
        assert len(ids) == len(set(ids))
    counts = {}
    for vote in storage.votes():
        counts[vote["item_id"]] = counts.get(vote["item_id"], 0) + 1
    assert counts == {"i0": 2, "i1": 2, "i2": 2}
    assert seen["u3"] == []  # everything was full before u3 came


def test_lease_blocks_others_until_it_expires(tmp_path):
    clock = FakeClock()
    storage = make_storage(tmp_path, text_items(1), overlap=1, clock=clock)
    service = LabelingService(storage)
    late = service.current("alice")
    assert late.item_id == "i0"
    assert service.current("bob").item_id is None  # leased to alice
    assert service.current("alice").item_id == "i0"  # same item again (reload)
    clock.now += 61
    shown_to_bob = service.current("bob")
    assert shown_to_bob.item_id == "i0"  # alice's lease ran out
    # alice answers late: bob holds the live lease, so her vote is refused, and his is kept
    view = service.answer("alice", late.shown, "B")
    assert "ran out" in view.message and storage.votes() == []
    service.answer("bob", shown_to_bob.shown, "A")
    assert [v["annotator"] for v in storage.votes()] == ["bob"]


def test_double_vote_is_idempotent_and_skip_is_remembered(tmp_path):
    storage = make_storage(tmp_path, text_items(2), overlap=1)
    service = LabelingService(storage)
    view = service.current("alice")
    service.answer("alice", view.shown, "A")
    service.answer("alice", view.shown, "B")  # a retried or second click
    assert len(storage.votes()) == 1 and storage.votes()[0]["pressed"] == "A"
    view = service.current("alice")
    service.answer("alice", view.shown, "skip")
    assert service.current("alice").item_id is None
    assert service.current("bob").item_id == view.item_id  # a skip frees the item for others
    assert storage.progress("alice") == (1, 1)


def test_votes_survive_reopen_and_queue_resumes(tmp_path):
    storage = make_storage(tmp_path, text_items(3))
    service = LabelingService(storage)
    view = service.current("alice")
    view = service.answer("alice", view.shown, "tie", comment="close call")
    storage.close()
    reopened = make_storage(tmp_path, text_items(3))
    assert [(v["item_id"], v["label"], v["comment"]) for v in reopened.votes()] == [("i0", 0.5, "close call")]
    assert LabelingService(reopened).current("alice").item_id == "i1"
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit[0]["event"] == "vote" and audit[0]["item_id"] == "i0"
    mode = sqlite3.connect(tmp_path / "votes.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_changed_item_with_votes_is_refused(tmp_path):
    storage = make_storage(tmp_path, text_items(1))
    service = LabelingService(storage)
    service.answer("alice", service.current("alice").shown, "A")
    changed = [Item("i0", "pair", ["other", "text"], "prompt 0")]
    with pytest.raises(Exception, match="changed since votes"):
        storage.sync_items(changed)


def test_incomplete_ranking_keeps_the_item(tmp_path):
    storage = make_storage(tmp_path, text_items(1, k=4))
    service = LabelingService(storage)
    view = service.current("alice")
    view = service.answer("alice", view.shown, "rank", ["1", None, "2", "3"])
    assert view.item_id == "i0" and "Not saved" in view.message
    view = service.answer("alice", view.shown, "rank", ["1", "1", "2", "3"])
    assert view.item_id is None and storage.votes()[0]["kind"] == "ranking"


def test_time_on_task_is_recorded(tmp_path):
    clock = FakeClock()
    storage = make_storage(tmp_path, text_items(1), clock=clock)
    service = LabelingService(storage)
    view = service.current("alice")
    clock.now += 7.5
    service.answer("alice", view.shown, "A")
    assert storage.votes()[0]["seconds"] == 7.5


# -- export -----------------------------------------------------------------------------

def test_export_true_order_and_tie_policies(tmp_path):
    items = text_items(3) + [Item("k", "ranking", ["w", "x", "y", "z"], [{"role": "user", "content": "hi"}])]
    storage = make_storage(tmp_path, items, shuffle=True)
    service = LabelingService(storage)
    answers = {"i0": ("A", None), "i1": ("tie", None), "i2": ("cant_tell", None), "k": ("rank", ["2", "1", "3", "3"])}
    orders = {}
    view = service.current("alice")
    for _ in range(4):
        orders[view.item_id] = storage.lease_of("alice", view.item_id).display_order
        key, ranks = answers[view.item_id]
        view = service.answer("alice", view.shown, key, ranks)
    assert view.item_id is None

    core = comparisons_from_storage(storage, ties="half", cant_tell="drop")
    by_item = {c.meta["item_id"]: c for c in core}
    assert set(by_item) == {"i0", "i1", "k"}
    expected_label = 1.0 if orders["i0"][0] == 0 else 0.0  # A = the true item shown left
    assert by_item["i0"].label == expected_label and by_item["i1"].label == 0.5
    shown = [2, 1, 3, 3]
    expected_ranks = [None] * 4
    dense = {1: 0, 2: 1, 3: 2}
    for slot, true in enumerate(orders["k"]):
        expected_ranks[true] = dense[shown[slot]]
    assert by_item["k"].ranks == expected_ranks
    assert by_item["k"].annotator == "alice" and by_item["k"].id == "k:alice"

    assert {c.meta["item_id"] for c in comparisons_from_storage(storage, ties="drop")} == {"i0", "k"}
    kept = comparisons_from_storage(storage, ties="drop", cant_tell="keep")
    assert [c.kind for c in kept if c.meta["item_id"] == "i2"] == ["not_comparable"]
    half = comparisons_from_storage(storage, ties="half", cant_tell="half")
    assert [c.label for c in half if c.meta["item_id"] == "i2"] == [0.5]

    path, rows = write_export(core, "core", tmp_path / "core.jsonl")
    assert rows == 3 and len(load_comparisons(path, format="core")) == 3
    path, rows = write_export(core, "trl", tmp_path / "trl.jsonl")
    trl = [json.loads(line) for line in path.read_text().splitlines()]
    pair = next(r for r in trl if r.get("item_id") == "i0")
    assert pair["chosen"] == ("c0-0" if expected_label == 1.0 else "c0-1")
    assert all(r["chosen"] != r["rejected"] for r in trl)
    path, rows = write_export(core, "ranked", tmp_path / "ranked.jsonl")
    ranked = [json.loads(line) for line in path.read_text().splitlines()]
    assert next(r for r in ranked if r.get("item_id") == "k")["ranks"] == expected_ranks


def test_clip_votes_export_segment_ids(tmp_path):
    item = Item("c0", "clip", ["seg-a", "seg-b"], None, ["/x/a.webm", "/x/b.webm"])
    vote = {"kind": "pair", "label": 0.0, "choice": None, "ranks": None, "annotator": "al", "display_order": [1, 0],
            "seconds": 1.0, "shown_at": 1.0, "answered_at": 2.0, "pressed": "A", "comment": ""}
    comparison = vote_to_comparison(vote, item)
    assert comparison.items == ["seg-a", "seg-b"] and comparison.prompt is None and comparison.label == 0.0
    assert comparison.meta["clips"] == ["/x/a.webm", "/x/b.webm"]


# -- agreement on the admin page ----------------------------------------------------------

def _votes_from_labels(table: dict[str, list[float | None]]):
    votes = []
    for annotator, labels in table.items():
        for i, label in enumerate(labels):
            if label is not None:
                votes.append({"item_id": f"i{i}", "annotator": annotator, "kind": "pair", "label": label,
                              "choice": None, "ranks": None, "seconds": 1.0})
    return votes


def test_agreement_matches_reference_kappa():
    # Cohen's 2x2 reference: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.40
    a = [1.0] * 25 + [0.0] * 25
    b = [1.0] * 20 + [0.0] * 5 + [1.0] * 10 + [0.0] * 15
    result = admin.agreement(_votes_from_labels({"x": a, "y": b}), overlap=2)
    assert result["cohens_kappa_mean"] == pytest.approx(0.40, abs=1e-4)
    assert result["fleiss_kappa"] is not None and result["krippendorff_alpha_nominal"] is not None
    perfect = admin.agreement(_votes_from_labels({"x": [1.0, 0.0, 0.5], "y": [1.0, 0.0, 0.5],
                                                  "z": [1.0, 0.0, 0.5]}), overlap=3)
    assert perfect["fleiss_kappa"] == pytest.approx(1.0) and perfect["krippendorff_alpha_nominal"] == pytest.approx(1.0)


def test_admin_report_tables(tmp_path):
    storage = make_storage(tmp_path, text_items(2), overlap=2)
    service = LabelingService(storage)
    for user in ("u1", "u2"):
        view = service.current(user)
        while view.item_id:
            view = service.answer(user, view.shown, "A")
    data = admin.report(storage)
    assert data["votes"] == 4 and data["items_done"] == 2
    assert [row[:2] for row in data["annotators"]] == [["u1", 2], ["u2", 2]]
    assert "Cohen" in admin.summary_markdown(data)


# -- accounts ---------------------------------------------------------------------------

def test_users_hash_verify_admin(tmp_path):
    path = tmp_path / "users.json"
    add_user(path, "alice", PASSWORD, n=FAST_N)
    add_user(path, "root", PASSWORD, admin=True, n=FAST_N)
    raw = path.read_text()
    assert PASSWORD not in raw and len(read_users(path)["alice"]["salt"]) == 32
    assert read_users(path)["alice"]["salt"] != read_users(path)["root"]["salt"]
    store = UserStore(path)
    assert store.verify("alice", PASSWORD) and not store.verify("alice", "wrong-password")
    assert not store.verify("nobody", PASSWORD)
    assert store.is_admin("root") and not store.is_admin("alice")
    with pytest.raises(UsersError):
        add_user(path, "bad name", PASSWORD)
    with pytest.raises(UsersError):
        add_user(path, "carol", "short")


def test_users_cli(tmp_path, capsys, monkeypatch):
    import io

    path = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert users_main(["--file", str(path), "add", "dora", "--admin", "--password-stdin"]) == 0
    assert users_main(["--file", str(path), "list"]) == 0
    assert "dora\tadmin" in capsys.readouterr().out
    assert UserStore(path).verify("dora", "a-long-password")
    assert users_main(["--file", str(path), "remove", "dora"]) == 0
    assert users_main(["--file", str(path), "remove", "dora"]) == 2
    assert "no user" in capsys.readouterr().err
    config = make_project(tmp_path / "p", pair_rows(1), users=("erin",), admins=())
    assert users_main(["--config", str(config), "list"]) == 0  # the config's users file
    assert capsys.readouterr().out == "erin\tannotator\n"


# -- configs and sources: clear errors ------------------------------------------------------

def test_bad_configs_name_the_field(tmp_path):
    config = make_project(tmp_path / "p", pair_rows(2))
    assert load_config(config).overlap == 1
    cases = {
        "overlap: 0": "overlap", "task: vote": "task", "colour: red": "colour",
        "sources: []": "sources", "export: {ties: maybe}": "export.ties",
    }
    for line, field_name in cases.items():
        bad = tmp_path / "p" / f"bad-{field_name}.yaml"
        text = config.read_text()
        key = line.split(":")[0]
        kept = [ln for ln in text.splitlines() if not ln.startswith(key + ":")]
        if key == "sources":  # drop the source list too
            kept = [ln for ln in kept if not ln.startswith("  - ")]
        bad.write_text("\n".join(kept) + "\n" + line + "\n")
        with pytest.raises(ConfigError, match=f"field '{field_name}'"):
            load_config(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text("sources: [{type: jsonl, path: nope.jsonl}]\nstorage: s\nusers: u.json\n")
    with pytest.raises(ConfigError, match="source file not found"):
        load_config(missing)
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(tmp_path / "broken.yaml")


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "p", "completions": ["only one"]}', "K >= 2"),
    ('{"prompt": "p", "completions": ["same", "same"]}', "identical"),
    ('{"completions": ["a", "b"]}', "field 'prompt'"),
    ('{"prompt": "p", "completions": ["a", ""]}', "text is empty"),
    ('{"prompt": "p", "completions": [' + ",".join(f'"{i}"' for i in range(10)) + "]}", "at most 9"),
    ("{not json", "malformed JSON"),
])
def test_malformed_task_files_name_the_line(tmp_path, line, message):
    config = make_project(tmp_path / "p", pair_rows(1))
    (tmp_path / "p" / "items.jsonl").write_text('{"prompt": "ok", "completions": ["a", "b"]}\n' + line + "\n")
    with pytest.raises(SourceError, match=message) as err:
        load_items(load_config(config))
    assert "items.jsonl, line 2" in str(err.value)


def test_generations_and_clip_manifest_sources(tmp_path):
    gen = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "p", "generations": [{"text": "x"}, {"text": "y"},
                                                                                 {"text": "z"}]}])
    config = make_project(tmp_path / "p", clips=1, task="best_of_k")
    text = config.read_text().replace("sources:\n", f"sources:\n  - {{type: generations, path: {gen}}}\n")
    config.write_text(text)
    items = load_items(load_config(config))
    assert [(i.mode, i.k) for i in items] == [("best_of_k", 3), ("clip", 2)]
    assert items[1].completions == ["seg0a", "seg0b"] and items[1].clips[0].endswith("seg0a.webm")
    manifest = tmp_path / "p" / "clips" / "manifest.json"
    manifest.write_text(json.dumps({"pairs": [{"id": "x", "clip_a": "missing.webm", "clip_b": "seg0b.webm",
                                               "segment_a": 1, "segment_b": 2}]}))
    with pytest.raises(SourceError, match=r"pairs\[0\]\.clip_a"):
        load_items(load_config(config))


def test_active_ordering_puts_disagreement_first(tmp_path):
    rows = pair_rows(3)
    config = make_project(tmp_path / "p", rows)
    write_jsonl(tmp_path / "p" / "scores.jsonl", [
        {"id": "p0", "scores": [[1.0, 0.0], [1.0, 0.0]]},  # members agree
        {"id": "p2", "scores": [[3.0, 0.0], [0.0, 3.0]]},  # members disagree
    ])
    config.write_text(config.read_text() + "ensemble: {scores: scores.jsonl}\n")
    cfg = load_config(config)
    items = load_items(cfg)
    prio = active.priorities(cfg, items)
    assert prio["p2"] > prio["p0"] == pytest.approx(0.0)
    storage = make_storage(tmp_path, items)
    storage.sync_items(items, prio)
    assert LabelingService(storage).current("alice").item_id == "p2"


def test_export_cli(tmp_path, capsys):
    config = make_project(tmp_path / "p", pair_rows(2))
    cfg = load_config(config)
    from labeling_app.app import prepare

    service = prepare(cfg)
    view = service.current("alice")
    while view.item_id:
        view = service.answer("alice", view.shown, "B")
    service.storage.close()
    out = tmp_path / "out.jsonl"
    assert export_main(["--project", str(config), "--format", "trl", "--out", str(out)]) == 0
    assert "2 trl rows" in capsys.readouterr().out
    assert run_main(export_main, ["--project", str(tmp_path / "nope.yaml"), "--format", "core", "--out", str(out)]) == 2
    assert "config file not found" in capsys.readouterr().err
