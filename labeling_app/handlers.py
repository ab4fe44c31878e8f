"""What the page does, as plain functions and one service class: no Gradio in here, so
every rule is testable without a server.

The flow for one annotator:
    service.current(user)             -> View of the item leased to them (or "all done")
    service.answer(user, shown, key)  -> stores the vote in true order, returns the next View

Every answer names what it answers: `shown` is the token of the view it was given on
(the item id and the display order, see `shown_token`). The storage accepts it only for
the item leased to that annotator, in that order, so a re-sent or late answer can never
land on an item the annotator has not seen; a re-sent vote is stored once.

Answers arrive in *display* terms (A = the left completion, rank 1 for the third slot
shown, ...). `answer_from_display` turns them into *true* item order using the display
order the answer names, so exports never depend on what was shown where.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .sources import Item
from .storage import Lease, Storage, StorageError

PAIR_KEYS = ("A", "B", "tie", "cant_tell")
SLOT_LETTERS = "ABCDEFGHI"
MAX_COMMENT = 2000  # characters: a note on one item, not an essay


class AnswerError(ValueError):
    """An answer the page should refuse (and explain to the annotator)."""


# =====================================================================================
# Rendering: all text is escaped, so markup or script inside a completion stays text.
# =====================================================================================

def escape_markdown(text: str) -> str:
    """Text shown literally in Markdown: HTML escaped and Markdown's marks backslashed,
    since item ids, project names and a loop part's state come from files and the API."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", html.escape(str(text), quote=False))


def render_text(text: Any) -> str:
    """Text or chat messages as inert HTML (escaped, whitespace kept)."""
    if isinstance(text, list):  # chat turns
        turns = []
        for message in text:
            role = html.escape(str(message.get("role", "")))
            turns.append(f'<div class="turn turn-{role}"><div class="role">{role}</div>'
                         f'<div class="content">{html.escape(str(message.get("content", "")))}</div></div>')
        return '<div class="chat">' + "".join(turns) + "</div>"
    return f'<div class="content">{html.escape(str(text))}</div>'


def render_completion(text: Any, title: str) -> str:
    return f'<div class="completion"><div class="slot-title">{html.escape(title)}</div>{render_text(text)}</div>'


def render_prompt(prompt: Any) -> str:
    if prompt is None:
        return ""
    return f'<div class="prompt"><div class="slot-title">Prompt</div>{render_text(prompt)}</div>'


# =====================================================================================
# The view of one item, in display order
# =====================================================================================

CLIP_URL = "labeling/clip"  # where files.py serves the items' clips (login required)


def clip_key(path: str) -> str:
    """A clip's name in its URL: a hash of its path, so the URL reveals no folder."""
    return hashlib.sha256(path.encode()).hexdigest()[:24]


def clip_url(path: str) -> str:
    """The clip's URL, ending in its file name (the bots read uploaded clips' true slot from it)."""
    return f"{CLIP_URL}/{clip_key(path)}/{quote(Path(path).name)}"


def shown_token(item_id: str, order: list[int]) -> str:
    """What a view shows, as the page sends it back with an answer: item and display order."""
    return json.dumps({"item": item_id, "order": order}, ensure_ascii=False)


def parse_shown(token: Any) -> tuple[str, list[int]]:
    """(item id, display order) of an answer's `shown` token; AnswerError when it names none."""
    try:
        shown = json.loads(token)
        item_id, order = shown["item"], shown["order"]
    except (TypeError, ValueError, KeyError):
        raise AnswerError("the answer does not say which item it answers; reload the page") from None
    if not isinstance(item_id, str) or not isinstance(order, list) or not all(
            isinstance(slot, int) and not isinstance(slot, bool) for slot in order):
        raise AnswerError("the answer does not say which item it answers; reload the page")
    return item_id, order


@dataclass
class View:
    """Everything the page shows for the current item, already in display order."""

    item_id: str | None  # None: nothing left for this annotator
    mode: str = "done"  # pair | clip | ranking | best_of_k | done
    k: int = 0
    html: str = ""  # the item as inert HTML (see render_item)
    done: int = 0
    assigned: int = 0
    message: str = ""  # a note for the annotator (e.g. why a vote was refused)
    order: list[int] | None = None  # display slot -> true index
    comment: str = ""  # put back in the comment box (a refused answer keeps its comment)

    @property
    def shown(self) -> str:
        """The token an answer to this view sends back ("" when nothing is shown)."""
        return shown_token(self.item_id, self.order) if self.item_id else ""

    @property
    def progress(self) -> str:
        return f"Progress: {self.done} / {self.assigned} done"

    @property
    def status(self) -> str:
        """One line of Markdown for the page: item, progress and any note, each escaped
        (an item id or a message naming one is text from a project file)."""
        parts = [f"Item {escape_markdown(self.item_id)}" if self.item_id else "", self.progress]
        if self.message:
            parts.append(f"**{escape_markdown(self.message)}**")
        return " · ".join(p for p in parts if p)


def render_item(item: Item, order: list[int]) -> str:
    """The item as HTML. The wrapper's data-mode / data-k attributes tell the page script
    which buttons to show (data-item names the item for scripted annotators, annotate.py).
    Rankings get one native <select> per completion (keyboard and mouse work without any
    script); clips are native looping, muted videos."""
    head = (f'<div class="item-view mode-{item.mode}" data-mode="{item.mode}" data-k="{item.k}" '
            f'data-item="{html.escape(item.id, quote=True)}" '
            f'data-shown="{html.escape(shown_token(item.id, order), quote=True)}">')
    if item.mode == "clip":
        videos = []
        for slot, true in enumerate(order):
            url = html.escape(clip_url(item.clips[true]), quote=True)
            videos.append(f'<div class="clip"><div class="slot-title">{"AB"[slot]}</div>'
                          f'<video class="clip-video" id="clip-{"ab"[slot]}" src="{url}" autoplay loop muted '
                          f'playsinline controls></video></div>')
        return head + '<div class="side-by-side">' + "".join(videos) + "</div></div>"
    body = render_prompt(item.prompt)
    if item.mode == "pair":
        slots = [render_completion(item.completions[true], "AB"[slot]) for slot, true in enumerate(order)]
        return head + body + '<div class="side-by-side">' + "".join(slots) + "</div></div>"
    slots = []
    for slot, true in enumerate(order):
        picker = ""
        if item.mode == "ranking":
            options = '<option value="">rank…</option>' + "".join(
                f'<option value="{r}">{r}</option>' for r in range(1, item.k + 1))
            picker = (f'<label class="rank-pick">Rank <select class="rank-select" data-slot="{slot + 1}" '
                      f'aria-label="Rank of completion {slot + 1}">{options}</select></label>')
        slots.append(f'<div class="kway-slot">{picker}{render_completion(item.completions[true], str(slot + 1))}</div>')
    return head + body + '<div class="kway-list">' + "".join(slots) + "</div></div>"


def build_view(lease: Lease | None, done: int, assigned: int, message: str = "", comment: str = "") -> View:
    if lease is None:
        note = message or "Nothing left to label for you in this project. Thank you!"
        return View(None, html='<div class="item-view" data-mode="done" data-k="0"></div>', done=done,
                    assigned=assigned, message=note)
    item = lease.item
    return View(item.id, item.mode, item.k, render_item(item, lease.display_order), done, assigned, message,
                lease.display_order, comment)


# =====================================================================================
# Answers: display terms -> true order
# =====================================================================================

def dense_ranks(display_ranks: list[Any], k: int) -> list[int]:
    """Rank choices per display slot (1 = best, equal = tie, gaps allowed) -> dense 0-based
    ranks. Every slot must be ranked."""
    if isinstance(display_ranks, str):  # "1,2,2,4" from the page or the API
        display_ranks = [r.strip() for r in display_ranks.split(",")]
    if not isinstance(display_ranks, (list, tuple)) or len(display_ranks) != k:
        raise AnswerError(f"expected {k} ranks")
    values = []
    for slot, value in enumerate(display_ranks[:k]):
        if value in (None, ""):
            raise AnswerError(f"give completion {slot + 1} a rank (equal ranks mean a tie)")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise AnswerError(f"rank of completion {slot + 1} must be a number, got {value!r}") from None
        if not 1 <= number <= k:
            raise AnswerError(f"rank of completion {slot + 1} must be between 1 and {k}, got {number}")
        values.append(number)
    position = {v: i for i, v in enumerate(sorted(set(values)))}
    return [position[v] for v in values]


def answer_from_display(item: Item, order: list[int], key: str, ranks: list[Any] | None = None) -> dict:
    """Turn what was pressed into a judgement in true item order.

    key: ``A`` / ``B`` / ``tie`` / ``cant_tell`` (pairs and clips), ``best:<slot>``
    (best-of-K, slot 1-based as shown), ``rank`` with `ranks` per display slot, or
    ``cant_tell`` for any item."""
    if sorted(order) != list(range(item.k)):
        raise AnswerError(f"the answer names a display order that is not one of the item's {item.k} completions")
    if key == "cant_tell":
        return {"kind": "not_comparable"}
    if item.mode in ("pair", "clip"):
        if key == "tie":
            return {"kind": "pair", "label": 0.5}
        if key not in ("A", "B"):
            raise AnswerError(f"this item takes A, B, tie or can't tell, not {key!r}")
        preferred = order[0] if key == "A" else order[1]
        return {"kind": "pair", "label": 1.0 if preferred == 0 else 0.0}
    if item.mode == "best_of_k":
        if not key.startswith("best:"):
            raise AnswerError("pick the best completion (keys 1-9) or can't tell")
        try:
            slot = int(key.split(":", 1)[1]) - 1
        except ValueError:
            raise AnswerError(f"bad choice {key!r}") from None
        if not 0 <= slot < item.k:
            raise AnswerError(f"choose a completion between 1 and {item.k}")
        return {"kind": "best_of_k", "choice": order[slot]}
    if item.mode == "ranking":
        if key != "rank":
            raise AnswerError("rank the completions (equal ranks are ties), then submit")
        shown = dense_ranks(ranks, item.k)
        true_ranks = [0] * item.k
        for slot, true in enumerate(order):
            true_ranks[true] = shown[slot]
        return {"kind": "ranking", "ranks": true_ranks}
    raise AnswerError(f"unknown item mode {item.mode!r}")


# =====================================================================================
# The service: one per server, shared by all sessions
# =====================================================================================

class LabelingService:
    def __init__(self, storage: Storage, users=None):
        self.storage = storage
        self.users = users  # a users.UserStore, or None in tests that skip auth

    def _view(self, annotator: str, message: str = "", comment: str = "") -> View:
        lease = self.storage.next_item(annotator)
        done, assigned = self.storage.progress(annotator)
        return build_view(lease, done, assigned, message, comment)

    def current(self, annotator: str) -> View:
        """The item this annotator should see now (leased to them)."""
        _require_user(annotator)
        return self._view(annotator)

    def answer(self, annotator: str, shown: str, key: str, ranks: list[Any] | None = None,
               comment: str = "") -> View:
        """Store an answer (or a skip) to the view whose token is `shown`; return the next
        view. A refusal (not the item shown, a lease another annotator now holds, an
        incomplete ranking, a long comment) comes back as a message on the view of the
        annotator's current item, with the comment kept, rather than as an exception."""
        _require_user(annotator)
        comment = (comment or "").strip()
        try:
            item_id, order = parse_shown(shown)
            if len(comment) > MAX_COMMENT:
                raise AnswerError(f"the comment has {len(comment)} characters; at most {MAX_COMMENT}, "
                                  "please shorten it")
            if key == "skip":
                self.storage.record_skip(annotator, item_id, order)
            else:
                self._record_vote(annotator, item_id, order, key, ranks, comment)
        except (AnswerError, StorageError) as err:
            return self._view(annotator, f"Not saved: {err}.", comment)
        return self._view(annotator)

    def _record_vote(self, annotator: str, item_id: str, order: list[int], key: str, ranks, comment: str) -> None:
        if not self.storage.has_item(item_id):
            raise StorageError(f"there is no item {item_id!r}")
        item = self.storage.item(item_id)
        answer = answer_from_display(item, order, key, ranks)
        pressed = key if key != "rank" else "rank:" + ",".join(str(r + 1) for r in dense_ranks(ranks, item.k))
        self.storage.record_vote(annotator, item_id, order, answer, pressed, comment)

    def is_admin(self, annotator: str | None) -> bool:
        return self.users is not None and self.users.is_admin(annotator)


def _require_user(annotator: str | None) -> None:
    if not annotator:
        raise PermissionError("log in first")
