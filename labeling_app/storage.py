"""Durable storage of items, leases and votes: SQLite in WAL mode plus a JSONL audit log.

Why this shape:
- One short transaction per vote with ``synchronous=FULL``: once `record_vote` returns,
  the vote is on disk and survives ``kill -9`` (and a power cut, as far as fsync goes).
- The audit log gets the same vote appended and fsync'd before `record_vote` returns, so
  the votes can be rebuilt from it alone.
- ``UNIQUE(item_id, annotator)`` makes a double click or a retried request harmless.
- An annotator holds at most one lease, the item shown to them, and an answer is taken
  only for that item in the order shown: a re-sent answer cannot land on the next item.
- A lease that ran out loses to the annotator now holding the item: the late answer is
  refused unless it takes no place another annotator holds.
- Progress lives only here, not in Gradio state (which dies with the process), so a
  restarted server resumes every queue where it stopped.
- One connection guarded by one lock: votes are tiny, SQLite serialises writers anyway,
  and a single lock makes "pick an item and lease it" atomic across annotators.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .sources import API_SOURCE, Item

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,      -- order in the sources
    priority REAL NOT NULL DEFAULT 0,   -- higher first (ensemble disagreement)
    active INTEGER NOT NULL DEFAULT 1,  -- 0: no longer in the sources, kept for its votes
    vote_count INTEGER NOT NULL DEFAULT 0,
    full INTEGER NOT NULL DEFAULT 0,    -- vote_count >= overlap: out of every queue
    fingerprint TEXT NOT NULL,
    data TEXT NOT NULL              -- Item as JSON
);
-- the queue: open items in priority, then source, order; no scan over full items
CREATE INDEX IF NOT EXISTS items_queue ON items(full, active, priority DESC, position);
CREATE TABLE IF NOT EXISTS leases (
    item_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    shown_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    display_order TEXT NOT NULL,    -- JSON list: display slot -> true item index
    PRIMARY KEY (item_id, annotator)
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    kind TEXT NOT NULL,             -- pair | best_of_k | ranking | not_comparable
    label REAL,                     -- pair: P(true item 0 preferred)
    choice INTEGER,                 -- best_of_k: true index
    ranks TEXT,                     -- ranking: JSON ranks in true order
    pressed TEXT NOT NULL,          -- what the annotator answered, in display terms
    display_order TEXT NOT NULL,
    shown_at REAL NOT NULL,
    answered_at REAL NOT NULL,
    seconds REAL NOT NULL,          -- time on task
    comment TEXT NOT NULL DEFAULT '',
    UNIQUE (item_id, annotator)
);
CREATE INDEX IF NOT EXISTS votes_annotator ON votes(annotator);
CREATE TABLE IF NOT EXISTS skips (
    item_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (item_id, annotator)
);
-- the last word of each part of the live loop (reward, policy, ...), for the admin page
CREATE TABLE IF NOT EXISTS heartbeats (
    part TEXT PRIMARY KEY,
    state TEXT NOT NULL,            -- JSON object, as the part sent it
    at REAL NOT NULL                -- unix time it arrived
);
"""


class StorageError(RuntimeError):
    """A vote or lease that cannot be accepted; the message is shown to the annotator."""


@dataclass
class Lease:
    item: Item
    display_order: list[int]
    shown_at: float
    expires_at: float


def fingerprint(item: Item) -> str:
    return hashlib.sha256(json.dumps(item.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def display_order_for(item: Item, annotator: str, seed: int, shuffle: bool) -> list[int]:
    """The order slots are shown in: display slot i shows true item order[i]. Seeded by
    annotator and item so a reload shows the same order, yet annotators differ."""
    order = list(range(item.k))
    if shuffle:
        digest = hashlib.sha256(f"{seed}\0{annotator}\0{item.id}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


class Storage:
    def __init__(self, db_path: str | os.PathLike, audit_path: str | os.PathLike, overlap: int = 1,
                 lease_seconds: float = 300.0, per_annotator: int | None = None, seed: int = 0,
                 shuffle: bool = True, clock=time.time):
        self.db_path, self.audit_path = Path(db_path), Path(audit_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        self.overlap, self.lease_seconds, self.per_annotator = overlap, lease_seconds, per_annotator
        self.seed, self.shuffle, self.clock = seed, shuffle, clock
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per vote.
        self._db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"{self.db_path}: could not switch SQLite to WAL mode (got {mode})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._audit = open(self.audit_path, "a", encoding="utf-8")
        self._recount()
        self._items: dict[str, Item] = {}
        self._load_items()

    def _load_items(self) -> None:
        """The items cache: every lookup of an item's content reads it, not SQLite."""
        self._items = {row["id"]: Item.from_json(json.loads(row["data"]))
                       for row in self._db.execute("SELECT id, data FROM items")}

    def _recount(self) -> None:
        """Vote counts and 'full' flags from the votes themselves (the overlap may have
        changed since the last run)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("UPDATE items SET vote_count = (SELECT COUNT(*) FROM votes v WHERE v.item_id = items.id)")
        self._db.execute("UPDATE items SET full = (vote_count >= ?)", (self.overlap,))
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._audit.close()

    # -- items ---------------------------------------------------------------------------
    def sync_items(self, items: list[Item], priorities: dict[str, float] | None = None) -> None:
        """Store the project's items. An item that already has votes must not change
        (its votes would then describe other text); items gone from the sources are kept
        inactive for their votes. Items that came through the loop API are in no source
        file, so they stay as they are."""
        priorities = priorities or {}
        with self._lock:
            voted = {r[0] for r in self._db.execute("SELECT DISTINCT item_id FROM votes")}
            stored = {r["id"]: r["fingerprint"] for r in self._db.execute("SELECT id, fingerprint FROM items")}
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE items SET active = 0 WHERE json_extract(data, '$.source') != ?",
                                 (API_SOURCE,))
                for position, item in enumerate(items):
                    fp = fingerprint(item)
                    if item.id in voted and stored.get(item.id) != fp:
                        raise StorageError(f"item {item.id!r} ({item.source}) changed since votes were stored "
                                           f"in {self.db_path}; give the changed item a new id")
                    self._db.execute(
                        "INSERT INTO items (id, position, priority, active, fingerprint, data) VALUES (?,?,?,1,?,?) "
                        "ON CONFLICT(id) DO UPDATE SET position=excluded.position, priority=excluded.priority, "
                        "active=1, fingerprint=excluded.fingerprint, data=excluded.data",
                        (item.id, position, float(priorities.get(item.id, 0.0)), fp, json.dumps(item.to_json())))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._recount()
            self._load_items()

    def add_items(self, items: list[Item], priorities: dict[str, float] | None = None) -> tuple[list[str], list[str]]:
        """Add items while the server runs (the loop API): new ones go after the stored
        ones and are offered at once; no other item changes. Re-sending a stored item
        unchanged is a no-op, so a client may simply retry; a changed one is refused, as
        votes on it would then describe other content. One transaction: all or nothing.
        Returns (ids added, ids already stored)."""
        priorities = priorities or {}
        added, existing = [], []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                position = self._db.execute("SELECT COALESCE(MAX(position), -1) FROM items").fetchone()[0]
                for item in items:
                    stored = self._db.execute("SELECT fingerprint FROM items WHERE id = ?", (item.id,)).fetchone()
                    if stored is not None:
                        if stored[0] != fingerprint(item):
                            raise StorageError(f"item {item.id!r} is already stored with other content; "
                                               "give the changed item a new id")
                        existing.append(item.id)
                        continue
                    position += 1
                    self._db.execute(
                        "INSERT INTO items (id, position, priority, fingerprint, data) VALUES (?,?,?,?,?)",
                        (item.id, position, float(priorities.get(item.id, 0.0)), fingerprint(item),
                         json.dumps(item.to_json())))
                    added.append(item.id)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # still under the lock: no annotator can be offered an item before it is cached
            self._items.update({item.id: item for item in items if item.id in added})
        return added, existing

    def item(self, item_id: str) -> Item:
        return self._items[item_id]

    def has_item(self, item_id: str) -> bool:
        return item_id in self._items

    def items(self) -> list[Item]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM items WHERE active = 1 ORDER BY position").fetchall()
        return [self._items[r[0]] for r in rows]

    # -- assignment ----------------------------------------------------------------------
    def next_item(self, annotator: str) -> Lease | None:
        """The annotator's current item: the one they already hold, else the first free one
        (highest priority, then source order) they have neither voted on nor skipped and
        whose votes plus others' live leases are below the overlap. Leases it."""
        with self._lock:
            now = self.clock()
            held = self._db.execute(
                "SELECT l.* FROM leases l JOIN items i ON i.id = l.item_id WHERE l.annotator = ? AND l.expires_at > ? "
                "AND i.active = 1 AND NOT EXISTS (SELECT 1 FROM votes v WHERE v.item_id = l.item_id "
                "AND v.annotator = l.annotator) ORDER BY l.shown_at LIMIT 1", (annotator, now)).fetchone()
            if held is not None:
                expires = now + self.lease_seconds
                self._db.execute("UPDATE leases SET expires_at = ? WHERE item_id = ? AND annotator = ?",
                                 (expires, held["item_id"], annotator))
                return Lease(self._items[held["item_id"]], json.loads(held["display_order"]), held["shown_at"], expires)
            if self.per_annotator is not None and self._count_votes(annotator) >= self.per_annotator:
                return None
            row = self._db.execute(
                "SELECT i.id FROM items i WHERE i.full = 0 AND i.active = 1 "
                "AND NOT EXISTS (SELECT 1 FROM votes v WHERE v.item_id = i.id AND v.annotator = ?) "
                "AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.item_id = i.id AND s.annotator = ?) "
                "AND i.vote_count + (SELECT COUNT(*) FROM leases l "
                "     WHERE l.item_id = i.id AND l.annotator != ? AND l.expires_at > ?) < ? "
                "ORDER BY i.priority DESC, i.position LIMIT 1",
                (annotator, annotator, annotator, now, self.overlap)).fetchone()
            if row is None:
                return None
            item = self._items[row[0]]
            order = display_order_for(item, annotator, self.seed, self.shuffle)
            expires = now + self.lease_seconds
            # one lease per annotator: the item now shown replaces any that ran out
            self._db.execute("DELETE FROM leases WHERE annotator = ? AND item_id != ?", (annotator, item.id))
            self._db.execute(
                "INSERT INTO leases (item_id, annotator, shown_at, expires_at, display_order) VALUES (?,?,?,?,?) "
                "ON CONFLICT(item_id, annotator) DO UPDATE SET shown_at=excluded.shown_at, "
                "expires_at=excluded.expires_at, display_order=excluded.display_order",
                (item.id, annotator, now, expires, json.dumps(order)))
            return Lease(item, order, now, expires)

    def lease_of(self, annotator: str, item_id: str) -> Lease | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM leases WHERE annotator = ? AND item_id = ?",
                                   (annotator, item_id)).fetchone()
        if row is None:
            return None
        return Lease(self._items[item_id], json.loads(row["display_order"]), row["shown_at"], row["expires_at"])

    # -- votes ---------------------------------------------------------------------------
    def record_vote(self, annotator: str, item_id: str, order: list[int], answer: dict, pressed: str,
                    comment: str = "") -> dict:
        """Store one vote (answer in true order, see handlers.answer_from_display) on the
        item shown to the annotator in `order`, in one transaction; append it to the audit
        log, fsync both, and only then return it. A repeated vote on the same item returns
        the stored one unchanged; one on any other item raises StorageError."""
        with self._lock:
            existing = self._db.execute("SELECT * FROM votes WHERE item_id = ? AND annotator = ?",
                                        (item_id, annotator)).fetchone()
            if existing is not None:
                return dict(existing) | {"duplicate": True}
            now = self.clock()
            lease = self._answerable_lease(annotator, item_id, order, now)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count = self._db.execute("SELECT vote_count FROM items WHERE id = ?", (item_id,)).fetchone()[0]
                if count >= self.overlap:
                    raise StorageError(f"item {item_id!r} already has its {self.overlap} vote(s): your lease "
                                       "had expired; the next item is loaded")
                row = {
                    "item_id": item_id, "annotator": annotator, "kind": answer["kind"],
                    "label": answer.get("label"), "choice": answer.get("choice"),
                    "ranks": json.dumps(answer["ranks"]) if answer.get("ranks") is not None else None,
                    "pressed": pressed, "display_order": lease["display_order"], "shown_at": lease["shown_at"],
                    "answered_at": now, "seconds": round(now - lease["shown_at"], 3), "comment": comment or "",
                }
                cursor = self._db.execute(
                    f"INSERT INTO votes ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
                row["id"] = cursor.lastrowid
                self._db.execute("UPDATE items SET vote_count = vote_count + 1, full = (vote_count + 1 >= ?) "
                                 "WHERE id = ?", (self.overlap, item_id))
                self._db.execute("DELETE FROM leases WHERE item_id = ? AND annotator = ?", (item_id, annotator))
                self._db.execute("COMMIT")  # synchronous=FULL: the WAL is fsync'd here
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._append_audit({"event": "vote", **row})
            return row

    def record_skip(self, annotator: str, item_id: str, order: list[int]) -> None:
        """Skip: not a vote; the item is never offered to this annotator again. A repeated
        skip of the same item does nothing."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM skips WHERE item_id = ? AND annotator = ?",
                                (item_id, annotator)).fetchone() is not None:
                return
            self._answerable_lease(annotator, item_id, order, self.clock())
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO skips (item_id, annotator, at) VALUES (?,?,?)",
                             (item_id, annotator, self.clock()))
            self._db.execute("DELETE FROM leases WHERE item_id = ? AND annotator = ?", (item_id, annotator))
            self._db.execute("COMMIT")
            self._append_audit({"event": "skip", "item_id": item_id, "annotator": annotator, "at": self.clock()})

    def _answerable_lease(self, annotator: str, item_id: str, order: list[int], now: float) -> sqlite3.Row:
        """The annotator's lease on the item they answer, or StorageError saying why the
        answer is refused: the item must be the one shown to them, in the order shown, and
        a lease that ran out must not take a place another annotator now holds. Called
        under the lock."""
        lease = self._db.execute("SELECT * FROM leases WHERE item_id = ? AND annotator = ?",
                                 (item_id, annotator)).fetchone()
        if lease is None:
            raise StorageError(f"item {item_id!r} is not the item shown to you; here is your current item")
        if json.loads(lease["display_order"]) != order:
            raise StorageError(f"the answer names another order of item {item_id!r} than the one shown to you")
        if lease["expires_at"] <= now:
            held = self._db.execute(
                "SELECT i.vote_count + (SELECT COUNT(*) FROM leases l WHERE l.item_id = i.id AND l.annotator != ? "
                "AND l.expires_at > ?) FROM items i WHERE i.id = ?", (annotator, now, item_id)).fetchone()[0]
            if held >= self.overlap:
                raise StorageError(f"your time on item {item_id!r} ran out ({self.lease_seconds:.0f} s) and another "
                                   "annotator is labelling it now")
        return lease

    def _append_audit(self, record: dict) -> None:
        self._audit.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._audit.flush()
        os.fsync(self._audit.fileno())

    # -- reading ---------------------------------------------------------------------------
    def _count_votes(self, annotator: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM votes WHERE annotator = ?", (annotator,)).fetchone()[0]

    def progress(self, annotator: str) -> tuple[int, int]:
        """(done, assigned): assigned = done + items still open to this annotator."""
        with self._lock:
            now = self.clock()
            done = self._count_votes(annotator)
            # open items, less those this annotator answered or skipped, less those that
            # others' live leases fill up; each term is an index count, not a scan of items
            mine = "SELECT item_id FROM votes WHERE annotator = :me UNION SELECT item_id FROM skips WHERE annotator = :me"
            args = {"me": annotator, "now": now, "overlap": self.overlap}
            open_total = self._db.execute("SELECT COUNT(*) FROM items WHERE full = 0 AND active = 1").fetchone()[0]
            open_mine = self._db.execute(
                f"SELECT COUNT(*) FROM ({mine}) m JOIN items i ON i.id = m.item_id WHERE i.full = 0 AND i.active = 1",
                args).fetchone()[0]
            blocked = self._db.execute(
                "SELECT COUNT(*) FROM (SELECT l.item_id FROM leases l JOIN items i ON i.id = l.item_id "
                "WHERE l.annotator != :me AND l.expires_at > :now AND i.full = 0 AND i.active = 1 "
                f"AND l.item_id NOT IN ({mine}) GROUP BY l.item_id HAVING MAX(i.vote_count) + COUNT(*) >= :overlap)",
                args).fetchone()[0]
            assigned = done + open_total - open_mine - blocked
            if self.per_annotator is not None:
                assigned = min(assigned, self.per_annotator)
            return done, assigned

    def votes(self, annotator: str | None = None) -> list[dict]:
        """Stored votes (all, or one annotator's), oldest first, with ranks decoded."""
        with self._lock:
            if annotator is None:
                rows = self._db.execute("SELECT * FROM votes ORDER BY id").fetchall()
            else:
                rows = self._db.execute("SELECT * FROM votes WHERE annotator = ? ORDER BY id", (annotator,)).fetchall()
        return [decode_vote(r) for r in rows]

    def votes_after(self, after_id: int, limit: int) -> list[dict]:
        """At most `limit` votes with ids above `after_id`, oldest first: a reader that
        remembers the last id it saw gets each vote exactly once."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM votes WHERE id > ? ORDER BY id LIMIT ?",
                                    (after_id, limit)).fetchall()
        return [decode_vote(r) for r in rows]

    def counts(self) -> dict:
        """Progress in numbers: items (in the project), open (still short of the
        overlap), votes, the last vote id and the distinct annotators who voted."""
        with self._lock:
            items, open_items = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(full = 0), 0) FROM items WHERE active = 1").fetchone()
            votes, last_id, annotators = self._db.execute(
                "SELECT COUNT(*), COALESCE(MAX(id), 0), COUNT(DISTINCT annotator) FROM votes").fetchone()
        return {"items": items, "open": open_items, "votes": votes, "last_vote_id": last_id,
                "annotators": annotators}

    def skips(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute("SELECT * FROM skips ORDER BY at")]

    # -- heartbeats of the loop's parts ------------------------------------------------------
    def record_heartbeat(self, part: str, state: dict) -> None:
        """Keep the latest state a loop part reported (one row per part)."""
        state_json = json.dumps(state)
        with self._lock:  # one statement: its own short transaction
            self._db.execute("INSERT INTO heartbeats (part, state, at) VALUES (?,?,?) ON CONFLICT(part) DO UPDATE "
                             "SET state=excluded.state, at=excluded.at", (part, state_json, self.clock()))

    def heartbeats(self) -> dict[str, dict]:
        """{part: {"state": {...}, "at": unix time}}, parts in name order."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM heartbeats ORDER BY part").fetchall()
        return {r["part"]: {"state": json.loads(r["state"]), "at": r["at"]} for r in rows}


def decode_vote(row: sqlite3.Row) -> dict:
    vote = dict(row)
    vote["ranks"] = json.loads(vote["ranks"]) if vote["ranks"] else None
    vote["display_order"] = json.loads(vote["display_order"])
    return vote


class VotesReader:
    """A project's items and votes, only read (never written): safe to use while the
    server runs, e.g. for `python -m labeling_app.export`."""

    def __init__(self, db_path: str | os.PathLike):
        self._db = sqlite3.connect(db_path, timeout=30)
        self._db.row_factory = sqlite3.Row
        try:
            self._items = {r["id"]: Item.from_json(json.loads(r["data"]))
                           for r in self._db.execute("SELECT id, data FROM items")}
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise StorageError(f"{db_path}: not a labelling database ({err})") from None

    def item(self, item_id: str) -> Item:
        return self._items[item_id]

    def votes(self) -> list[dict]:
        return [decode_vote(r) for r in self._db.execute("SELECT * FROM votes ORDER BY id")]

    def close(self) -> None:
        self._db.close()


def open_storage(config) -> Storage:
    return Storage(config.db_path, config.audit_path, overlap=config.overlap, lease_seconds=config.lease_seconds,
                   per_annotator=config.per_annotator, seed=config.seed, shuffle=config.shuffle)
