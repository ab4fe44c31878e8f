"""Simulated annotators ("bots") for the live loop: they label in a running app exactly as
people do, so the loop can run end to end without people.

    rlhf annotate --url URL --accounts out/app/bots.json --bots 2 --teacher mistake --teacher_kwargs '{eps: 0.1}'
                  [--think_time 0.2] [--seed 0] [--returns out/policy/returns.jsonl] [--max_votes N]
                  [--max_seconds S] [--log FILE]

Each bot is a thread that logs in over HTTP like a browser (`HttpSession`, its own
account), reads the shown item from the page's HTML, scores what it sees with the gold
(text: `rlhf.rubric.gold_score(completion, prompt)`; clips: the true returns from the
`--returns` JSONL), asks its B-Pref teacher (`rlhf.labelers.make_teacher`, seeded
``seed + i``) and presses the answer. Going through the page rather than the storage
means the bots see what annotators see (display order, leases, overlap) and their votes
travel the same way, so their round-trip times are the page's.

It stops at --max_votes (all bots together), at --max_seconds or on SIGTERM / Ctrl-C,
and prints the votes and the p50 / p95 round trip of a vote (from sending the answer to
receiving the next item).
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np

from rlhf.config import ConfigError, parse_config, run_main
from rlhf.labelers import TEACHERS, Teacher, make_teacher
from rlhf.rubric import gold_score

from .http_client import HttpSession
from .sources import CLIP_NAMES
from .users import add_user, write_private_json

POLL_SECONDS = 0.5  # how often a bot with nothing to label asks again
HTML_OUTPUT = 2  # a view's outputs: shown token, status, item HTML, comment (app.build_demo)


# =====================================================================================
# Settings and accounts
# =====================================================================================

@dataclass
class AnnotateConfig:
    """Simulated annotators labelling in a running labelling app (the live loop's bots)."""

    url: str = field(metadata={"help": "the labelling app, e.g. http://127.0.0.1:7860/"})
    accounts: str = field(metadata={"help": "the bots' accounts (JSON made by make_bot_accounts, "
                                            "e.g. out/app/bots.json)"})
    bots: int = field(default=2, metadata={"help": "bots labelling at once (the first BOTS accounts)"})
    teacher: str = field(default="mistake", metadata={
        "help": f"B-Pref teacher of every bot: {', '.join(sorted(TEACHERS))}"})
    teacher_kwargs: dict = field(default_factory=dict, metadata={
        "help": "the teacher's arguments as a YAML mapping, e.g. '{eps: 0.1}' (not its seed: see --seed)"})
    think_time: float = field(default=0.2, metadata={"help": "seconds a bot waits before answering"})
    seed: int = field(default=0, metadata={"help": "bot i's teacher is seeded seed + i"})
    returns: str | None = field(default=None, metadata={
        "help": "JSONL of clip items' true returns, {\"item_id\", \"returns\": [a, b]} (needed for clip items)"})
    max_votes: int | None = field(default=None, metadata={"help": "stop after this many votes (all bots)"})
    max_seconds: float | None = field(default=None, metadata={"help": "stop after this many seconds"})
    log: str | None = field(default=None, metadata={"help": "write every vote and its round trip here (JSONL)"})

    def __post_init__(self):
        if self.bots < 1:
            raise ConfigError("bots", f"expected an integer >= 1, got {self.bots}")
        if self.think_time < 0:
            raise ConfigError("think_time", f"expected seconds >= 0, got {self.think_time}")
        if self.max_votes is not None and self.max_votes < 1:
            raise ConfigError("max_votes", f"expected an integer >= 1, got {self.max_votes}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError("max_seconds", f"expected seconds > 0, got {self.max_seconds}")
        if "seed" in self.teacher_kwargs:
            raise ConfigError("teacher_kwargs", "no 'seed' (bot i's teacher is seeded --seed + i)")
        self.make_teacher(0)  # a bad teacher or argument fails now, before any bot starts

    def make_teacher(self, bot: int) -> Teacher:
        try:
            return make_teacher(self.teacher, seed=self.seed + bot, **self.teacher_kwargs)
        except ValueError as err:
            raise ConfigError("teacher_kwargs" if self.teacher in TEACHERS else "teacher", str(err)) from None


@dataclass
class Account:
    user: str
    password: str


def make_bot_accounts(users_path: str | Path, accounts_path: str | Path, n: int) -> list[Account]:
    """Create the annotator accounts bot-1 .. bot-n with fresh random passwords in the
    app's users file, and write them to `accounts_path` (owner-only) for --accounts."""
    accounts = [Account(f"bot-{i}", secrets.token_urlsafe(18)) for i in range(1, n + 1)]
    for account in accounts:
        add_user(users_path, account.user, account.password)
    write_private_json(accounts_path, {"accounts": [vars(account) for account in accounts]})
    return accounts


def read_accounts(path: Path, bots: int) -> list[Account]:
    """The first `bots` accounts of an accounts file."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["accounts"]
        accounts = [Account(str(row["user"]), str(row["password"])) for row in rows]
    except FileNotFoundError:
        raise ConfigError("--accounts", f"file not found: {path} (expected the bots' accounts)") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError("--accounts", f"{path}: expected {{\"accounts\": [{{\"user\", \"password\"}}, ...]}}") \
            from None
    if len(accounts) < bots:
        raise ConfigError("--bots", f"at most {len(accounts)} (the accounts in {path}), got {bots}")
    return accounts[:bots]


# =====================================================================================
# Reading the page
# =====================================================================================

@dataclass
class ShownItem:
    """The item on a bot's page, in display order (what an annotator sees)."""

    item_id: str | None  # None: nothing to label now
    mode: str  # pair | clip | ranking | best_of_k | done
    shown: str = ""  # the token an answer sends back: item and display order (handlers.shown_token)
    prompt: str | None = None
    completions: list[str] = field(default_factory=list)  # texts by display slot
    clip_urls: list[str] = field(default_factory=list)  # video sources by display slot


class ItemPageParser(HTMLParser):
    """Collects the item from `handlers.render_item`'s HTML: the attributes of the
    ``.item-view`` div, the text of each ``.prompt .content`` and ``.completion
    .content`` (chat turns joined by new lines) and the videos' sources."""

    def __init__(self):
        super().__init__()  # convert_charrefs: the escaped text comes back as written
        self.attributes: dict[str, str | None] = {}
        self.videos: list[str] = []
        self.blocks: list[tuple[str, list[str]]] = []  # ("prompt" | "completion", its content texts)
        self._open_divs: list[set[str]] = []  # classes of each open <div>

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "video":
            self.videos.append(attributes.get("src") or "")
        if tag != "div":
            return
        classes = set((attributes.get("class") or "").split())
        if "item-view" in classes:
            self.attributes = attributes
        for kind in ("prompt", "completion"):
            if kind in classes:
                self.blocks.append((kind, []))
        if "content" in classes and self.blocks:
            self.blocks[-1][1].append("")
        self._open_divs.append(classes)

    def handle_endtag(self, tag):
        if tag == "div" and self._open_divs:
            self._open_divs.pop()

    def handle_data(self, data):
        if self.blocks and any("content" in classes for classes in self._open_divs):
            self.blocks[-1][1][-1] += data


def parse_item(page_html: str) -> ShownItem:
    parser = ItemPageParser()
    parser.feed(page_html)
    parser.close()
    texts = {"prompt": [], "completion": []}
    for kind, contents in parser.blocks:
        texts[kind].append("\n".join(contents))
    return ShownItem(parser.attributes.get("data-item"), parser.attributes.get("data-mode") or "done",
                     parser.attributes.get("data-shown") or "", texts["prompt"][0] if texts["prompt"] else None,
                     texts["completion"], parser.videos)


# =====================================================================================
# The gold and the answer
# =====================================================================================

class ReturnsTable:
    """True returns of clip items from the policy's JSONL, ``{"item_id", "returns": [a, b]}``
    in true order. The file grows while the loop runs, so it is read again whenever an
    item is unknown; a line still being written (no final new line) waits for the next read."""

    def __init__(self, path: Path | None):
        self.path = path
        self.returns: dict[str, list[float]] = {}

    def lookup(self, item_id: str) -> list[float] | None:
        if self.path is None:
            raise ConfigError("--returns", "a clip item was shown: give the returns file of its segments")
        if item_id not in self.returns:
            self._read()
        return self.returns.get(item_id)

    def _read(self) -> None:
        if not self.path.is_file():
            return
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(keepends=True), 1):
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                row = json.loads(line)
                self.returns[str(row["item_id"])] = [float(r) for r in row["returns"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise ConfigError(f"{self.path}:{number}", "expected {\"item_id\", \"returns\": [a, b]}") from None


def true_slot(clip_url: str) -> int:
    """Uploaded clips are named by their true slot (api.py), whatever side shows them."""
    name = clip_url.rsplit("/", 1)[-1]
    if name not in CLIP_NAMES:
        raise ConfigError("--returns", f"clip {clip_url} was not uploaded through the loop API "
                                       f"(expected files named {' and '.join(CLIP_NAMES)})")
    return CLIP_NAMES.index(name)


def display_gold(shown: ShownItem, returns: ReturnsTable) -> list[float] | None:
    """The gold of each display slot (None: clip returns not known, so the bot skips)."""
    if shown.mode != "clip":
        return [gold_score(text, shown.prompt or "") for text in shown.completions]
    true_returns = returns.lookup(shown.item_id)
    if true_returns is None:
        return None
    return [true_returns[true_slot(url)] for url in shown.clip_urls]


PAIR_BUTTONS = {1.0: "vote_a", 0.0: "vote_b", 0.5: "vote_tie"}
SKIP = ("skip", ("",))


def choose_answer(teacher: Teacher, mode: str, gold: list[float] | None) -> tuple[str, tuple]:
    """The teacher's answer to the shown item as (endpoint, its trailing inputs)."""
    if gold is None:
        return SKIP
    if mode in ("pair", "clip"):
        (answer,) = teacher.label_pairs([gold[0]], [gold[1]])
        return SKIP if answer is None else (PAIR_BUTTONS[answer.label], ("",))
    if mode == "ranking":
        (answer,) = teacher.label_rankings([gold])
        return SKIP if answer is None else ("rank", (",".join(str(rank + 1) for rank in answer.ranks), ""))
    (answer,) = teacher.label_best_of_k([gold])
    if answer is None:
        return SKIP
    if answer.kind == "ranking":  # several items tied for best: the page has no "tied best" button
        return "cant_tell", ("",)
    return f"best_{answer.choice + 1}", ("",)


# =====================================================================================
# The bots
# =====================================================================================

class Tally:
    """Shared by the bots: the vote budget, the stop signal, the deadline, every vote's
    record and the first error (which stops every bot)."""

    def __init__(self, max_votes: int | None, max_seconds: float | None):
        self.max_votes = max_votes
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.stop = threading.Event()
        self.records: list[dict] = []
        self.errors: list[BaseException] = []
        self._claimed = 0
        self._lock = threading.Lock()

    def finished(self) -> bool:
        """Stopped, out of time, or the whole vote budget claimed. Only the first two
        set `stop`: a bot holding the last claimed vote must still cast it."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop.set()
        with self._lock:
            budget_spent = self.max_votes is not None and self._claimed >= self.max_votes
        return budget_spent or self.stop.is_set()

    def claim_vote(self) -> bool:
        """Reserve one vote of the budget before casting it, so bots together never
        cast more than --max_votes."""
        with self._lock:
            if self.stop.is_set() or (self.max_votes is not None and self._claimed >= self.max_votes):
                return False
            self._claimed += 1
            return True

    def record(self, record: dict) -> None:
        with self._lock:
            self.records.append(record)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self.errors.append(error)
        self.stop.set()


def login(url: str, account: Account) -> HttpSession:
    try:
        return HttpSession(url, account.user, account.password)
    except httpx.HTTPStatusError as err:
        raise ConfigError("--accounts", f"{account.user}: the app at {url} refused the login "
                                        f"(HTTP {err.response.status_code})") from None
    except httpx.TransportError as err:
        raise ConfigError("--url", f"cannot reach the labelling app at {url} ({err})") from None


def run_bot(account: Account, teacher: Teacher, config: AnnotateConfig, tally: Tally) -> None:
    """Label until the tally says stop: read the item, wait, answer, time the answer."""
    returns = ReturnsTable(Path(config.returns) if config.returns else None)
    session = login(config.url, account)
    try:
        shown = parse_item(session.call("current")[HTML_OUTPUT])
        while not tally.finished():
            if shown.item_id is None:  # nothing to label now: ask again shortly
                if not tally.stop.wait(POLL_SECONDS):
                    shown = parse_item(session.call("current")[HTML_OUTPUT])
                continue
            gold = display_gold(shown, returns)
            if gold is None:
                print(f"warning: {account.user}: no returns for clip item {shown.item_id!r} in {config.returns}; "
                      "skipped", file=sys.stderr)
            endpoint, inputs = choose_answer(teacher, shown.mode, gold)
            is_vote = endpoint != "skip"
            if (is_vote and not tally.claim_vote()) or tally.stop.wait(config.think_time):
                break
            started = time.monotonic()
            outputs = session.call(endpoint, shown.shown, *inputs)
            round_trip = time.monotonic() - started
            if is_vote:
                tally.record({"bot": account.user, "item_id": shown.item_id, "answer": endpoint,
                              "ranks": inputs[0] if endpoint == "rank" else None,
                              "round_trip_ms": round(1000 * round_trip, 2), "at": time.time()})
            shown = parse_item(outputs[HTML_OUTPUT])
    finally:
        session.close()


def run_bots(config: AnnotateConfig, accounts: list[Account]) -> Tally:
    """One thread per bot; returns when they all stopped (or raises the first error)."""
    tally = Tally(config.max_votes, config.max_seconds)

    def guarded(account: Account, teacher: Teacher) -> None:
        try:
            run_bot(account, teacher, config, tally)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread, which raises it
            tally.fail(err)

    threads = [threading.Thread(target=guarded, args=(account, config.make_teacher(i)), name=account.user)
               for i, account in enumerate(accounts)]
    with stop_on_sigterm(tally.stop):
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            tally.stop.set()
            for thread in threads:
                thread.join()
    if tally.errors:
        raise tally.errors[0]
    return tally


@contextmanager
def stop_on_sigterm(stop: threading.Event):
    """While active, SIGTERM sets `stop` (the bots finish their request and end, and the
    summary is printed) instead of killing the process. Only the main thread may handle
    signals; called from another thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# =====================================================================================
# Summary and command line
# =====================================================================================

def summary(records: list[dict], bots: int, seconds: float) -> str:
    if not records:
        return f"annotate: no votes by {bots} bot(s) in {seconds:.1f} s"
    p50, p95 = np.percentile([r["round_trip_ms"] for r in records], [50, 95])
    return (f"annotate: {len(records)} votes by {bots} bot(s) in {seconds:.1f} s; "
            f"vote round trip p50 {p50:.0f} ms, p95 {p95:.0f} ms")


def write_log(records: list[dict], path: Path) -> None:
    """Appended, so bots restarted on the same log (the live loop does) keep the earlier votes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in records))


def main(argv: list[str] | None = None) -> int:
    config = parse_config(AnnotateConfig, argv, prog="rlhf annotate")
    accounts = read_accounts(Path(config.accounts), config.bots)
    started = time.monotonic()
    tally = run_bots(config, accounts)
    print(summary(tally.records, config.bots, time.monotonic() - started), flush=True)
    if config.log:
        write_log(tally.records, Path(config.log))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
