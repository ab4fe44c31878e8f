"""The live loop's HTTP API: the reward and policy parts add items and read votes while
annotators label (documented in docs/loop.md; `http_client.AdminClient` is its client).

    POST /loop/api/items      {"items": [ITEM, ...], "priorities": {id: float}} -> {"added", "existing"}
    GET  /loop/api/votes?after=<vote id>&limit=<n>                           -> {"votes", "last_id"}
    GET  /loop/api/status                                                    -> counts and heartbeats
    POST /loop/api/heartbeat  {"part": name, "state": {...}}                 -> {"ok": true}

The routes exist only when the project config sets `api_token_file`; `add_loop_api`
adds them to Gradio's FastAPI app after launch (no Gradio route matches /loop/...).
Every request needs ``Authorization: Bearer <token>``; the token is compared in constant
time. Annotator logins do not reach this API, and the token does not reach the pages.

Why it works this way:
- Text items are checked by the same function as the project's JSONL sources
  (`sources._text_item`), so an item is valid here exactly when it would be in a file.
- Bodies are read in chunks and refused past `MAX_BODY_BYTES`, so a runaway upload cannot
  fill the server's memory.
- The work (SQLite commits with fsync, clip files) runs in a worker thread, not on the
  event loop that serves the annotators' pages.
- One lock around an upload: writing an item's clips and storing the item is one step,
  so two uploads of the same id cannot interleave their files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .config import ProjectConfig, read_api_token
from .export import vote_to_comparison
from .handlers import LabelingService
from .sources import API_SOURCE, CLIP_NAMES, Item, SourceError, _text_item
from .storage import StorageError

PREFIX = "/loop/api"
MAX_BODY_BYTES = 50 * 2**20  # a batch of clips is a few MB; anything near this is a mistake
MAX_VOTES_PER_READ = 10_000
WEBM_MAGIC = b"\x1a\x45\xdf\xa3"  # the EBML header every WebM file starts with


class ApiRequestError(Exception):
    """A request the API refuses: answered with `status` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def bad_request(message: str) -> ApiRequestError:
    return ApiRequestError(400, message)


# =====================================================================================
# Items: JSON -> Item, with the same checks as the sources
# =====================================================================================

def clip_folder(clips_path: Path, item_id: str) -> Path:
    """Where an item's uploaded clips live: one folder per item, named by a hash of its
    id (any text may be an id, not every text may be a folder name)."""
    return clips_path / hashlib.sha256(item_id.encode()).hexdigest()[:16]


def _item_id(row: dict, where: str) -> str:
    value = row.get("id")
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise bad_request(f"{where}, field 'id': expected a text or integer id, got {value!r}")
    return str(value)


def _decode_clip(data: Any, where: str) -> bytes:
    try:
        clip = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
    except (binascii.Error, ValueError):
        clip = b""
    if not clip.startswith(WEBM_MAGIC):
        raise bad_request(f"{where}: expected a base64-encoded WebM file")
    return clip


def _clip_upload(row: dict, item_id: str, where: str, clips_path: Path) -> tuple[Item, list[bytes]]:
    """A clip pair: the Item (its clips are where `clip_folder` puts them) and the bytes."""
    segments, clip_data = row.get("segments"), row.get("clip_data")
    if not isinstance(segments, list) or len(segments) != 2 or any(
            not isinstance(s, (str, int)) or isinstance(s, bool) or s == "" for s in segments):
        raise bad_request(f"{where}, field 'segments': expected two segment ids, got {segments!r}")
    if segments[0] == segments[1]:
        raise bad_request(f"{where}, field 'segments': the two segments are the same segment")
    if not isinstance(clip_data, list) or len(clip_data) != 2:
        raise bad_request(f"{where}, field 'clip_data': expected two base64 WebM files (A, then B)")
    clips = [_decode_clip(data, f"{where}, field 'clip_data[{i}]'") for i, data in enumerate(clip_data)]
    folder = clip_folder(clips_path, item_id)
    item = Item(item_id, "clip", list(segments), None, [str(folder / name) for name in CLIP_NAMES], API_SOURCE)
    return item, clips


def _text_upload(row: dict, where: str, task: str) -> Item:
    try:
        item = _text_item(row, row["completions"], "completions", where, None, task)
    except SourceError as err:
        raise bad_request(str(err)) from None
    return replace(item, source=API_SOURCE)  # the same item whatever its place in the batch


def parse_items(body: Any, task: str, clips_path: Path) -> tuple[list[Item], dict[str, list[bytes]], dict]:
    """The items of a POST /items body, their clips' bytes by item id, and the priorities."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise bad_request("body: expected {\"items\": [...], \"priorities\": {item id: number}}")
    items, clips = [], {}
    for i, row in enumerate(body["items"]):
        if not isinstance(row, dict):
            raise bad_request(f"items[{i}]: expected an object")
        item_id = _item_id(row, f"items[{i}]")
        where = f"items[{i}] (id {item_id!r})"
        if item_id in {item.id for item in items}:
            raise bad_request(f"{where}, field 'id': the id appears twice in this request")
        if "completions" in row:
            items.append(_text_upload(row, where, task))
        elif "segments" in row:
            item, clips[item_id] = _clip_upload(row, item_id, where, clips_path)
            items.append(item)
        else:
            raise bad_request(f"{where}: expected 'prompt' and 'completions' (text) or 'segments' and 'clip_data' "
                              "(clip pair)")
    return items, clips, _priorities(body.get("priorities") or {}, {item.id for item in items})


def _priorities(raw: Any, ids: set[str]) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise bad_request("field 'priorities': expected {item id: number}")
    for item_id, value in raw.items():
        if item_id not in ids:
            raise bad_request(f"field 'priorities': {item_id!r} is not an item of this request")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise bad_request(f"field 'priorities', item {item_id!r}: expected a finite number, got {value!r}")
    return {item_id: float(value) for item_id, value in raw.items()}


def _write_file(path: Path, data: bytes) -> None:
    """Write whole or not at all: a reader never sees half a clip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _same_files(paths: list[str], clips: list[bytes]) -> bool:
    return all(Path(p).is_file() and Path(p).read_bytes() == data for p, data in zip(paths, clips))


# =====================================================================================
# The routes' work (plain functions of a request's JSON: testable without a server)
# =====================================================================================

class LoopApi:
    """What each route does; `add_loop_api` wires these to URLs."""

    def __init__(self, service: LabelingService, config: ProjectConfig):
        self.storage, self.config = service.storage, config
        self.clips_path = config.clips_path.resolve()
        self._upload_lock = threading.Lock()

    def add_items(self, body: Any) -> dict:
        items, clips, priorities = parse_items(body, self.config.task, self.clips_path)
        with self._upload_lock:
            for item in items:
                if item.id in clips:
                    self._store_clips(item, clips[item.id])
            try:
                added, existing = self.storage.add_items(items, priorities)
            except StorageError as err:
                raise ApiRequestError(409, str(err)) from None
        return {"added": added, "existing": existing}

    def _store_clips(self, item: Item, clips: list[bytes]) -> None:
        """A new item's clips are written (replacing leftovers of a refused upload); a
        stored item's clips must be the same bytes, as its votes are about them."""
        if not self.storage.has_item(item.id):
            for path, data in zip(item.clips, clips):
                _write_file(Path(path), data)
        elif not _same_files(item.clips, clips):
            raise ApiRequestError(409, f"item {item.id!r} is already stored with other clips; "
                                       "give the changed item a new id")

    def votes(self, query: dict) -> dict:
        after = _query_int(query, "after", 0, minimum=0)
        limit = _query_int(query, "limit", 1000, minimum=1)
        votes = self.storage.votes_after(after, min(limit, MAX_VOTES_PER_READ))
        return {"votes": [self._vote_json(vote) for vote in votes], "last_id": votes[-1]["id"] if votes else after}

    def _vote_json(self, vote: dict) -> dict:
        comparison = vote_to_comparison(vote, self.storage.item(vote["item_id"]), self.config.ties,
                                        self.config.cant_tell)
        return {"vote_id": vote["id"], "item_id": vote["item_id"], "annotator": vote["annotator"],
                "comparison": comparison.to_dict() if comparison is not None else None}

    def status(self, query: dict) -> dict:
        """Counts and heartbeats (a GET route like `votes`, but it reads no query)."""
        return {**self.storage.counts(), "parts": self.storage.heartbeats()}

    def heartbeat(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise bad_request("body: expected {\"part\": name, \"state\": {...}}")
        part, state = body.get("part"), body.get("state", {})
        if not isinstance(part, str) or not part.strip() or len(part) > 64:
            raise bad_request(f"field 'part': expected a name of 1-64 characters, got {part!r}")
        if not isinstance(state, dict):
            raise bad_request(f"field 'state': expected an object, got {type(state).__name__}")
        self.storage.record_heartbeat(part, state)
        return {"ok": True}


def _query_int(query: dict, name: str, default: int, minimum: int) -> int:
    raw = query.get(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise bad_request(f"query '{name}': expected an integer, got {raw!r}") from None
    if value < minimum:
        raise bad_request(f"query '{name}': expected an integer >= {minimum}, got {value}")
    return value


# =====================================================================================
# HTTP: the token, the body, the routes
# =====================================================================================

def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def token_matches(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def read_json(request: Request) -> Any:
    """The JSON body, refused (413) past MAX_BODY_BYTES before it is all in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiRequestError(413, f"body of {declared} bytes; at most {MAX_BODY_BYTES} bytes per request")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiRequestError(413, f"body over {MAX_BODY_BYTES} bytes; split the items over several requests")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"body: expected JSON ({err})") from None


def _route(work: Callable[[Any], dict], token: str, reads_body: bool):
    """An endpoint: check the token, read the input, do the work in a worker thread."""
    async def endpoint(request: Request) -> JSONResponse:
        if not token_matches(request.headers.get("authorization"), token):
            return error_response(401, "missing or wrong API token; send 'Authorization: Bearer <token>'")
        try:
            payload = await read_json(request) if reads_body else dict(request.query_params)
            return JSONResponse(await run_in_threadpool(work, payload))
        except ApiRequestError as err:
            return error_response(err.status, err.message)
    return endpoint


def add_loop_api(app: FastAPI, service: LabelingService, config: ProjectConfig) -> None:
    """Serve the loop API on a launched app (config.api_token_file must be set)."""
    api, token = LoopApi(service, config), read_api_token(config.api_token_file)
    for method, path, work in (("POST", "/items", api.add_items), ("GET", "/votes", api.votes),
                               ("GET", "/status", api.status), ("POST", "/heartbeat", api.heartbeat)):
        app.add_api_route(PREFIX + path, _route(work, token, reads_body=method == "POST"), methods=[method],
                          include_in_schema=False)
