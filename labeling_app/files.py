"""The only files the app serves besides its page: the clips the items name (to logged-in
annotators, as video) and the exports (to admins, as downloads).

Why not Gradio's file routes: Gradio serves whole folders (`allowed_paths`), so any other
file next to the clips (a stray .html, the manifest) would be served too, and a file an
event returns is copied to Gradio's cache under a URL any logged-in user may fetch. Here
each request is looked up instead: a clip URL must name a clip of a stored item, and an
export is made for the admin who asks, in an owner-only temporary folder removed at once.

    GET /labeling/clip/<clip key>/<file name>   -> the clip (handlers.clip_url makes these)
    GET /labeling/export/<core|trl|ranked>      -> the votes as a JSONL download (admins)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from .config import ProjectConfig
from .export import FORMATS, comparisons_from_storage, write_export
from .guard import logged_in_user
from .handlers import CLIP_URL, LabelingService, clip_key
from .sources import Item

VIDEO_TYPES = {".webm": "video/webm", ".mp4": "video/mp4"}  # the clip suffixes sources.py accepts


def find_clip(items: list[Item], key: str, name: str) -> Path | None:
    """The clip of an item whose URL is .../<key>/<name>, or None."""
    for item in items:
        for clip in item.clips:
            if clip_key(clip) == key and Path(clip).name == name:
                return Path(clip)
    return None


def export_bytes(service: LabelingService, config: ProjectConfig, fmt: str) -> bytes:
    """The export as bytes, written owner-only in a temporary folder that is then removed."""
    comparisons = comparisons_from_storage(service.storage, config.ties, config.cant_tell)
    with tempfile.TemporaryDirectory(prefix="labeling-export-") as folder:  # mode 0700
        path, _ = write_export(comparisons, fmt, Path(folder) / f"export-{fmt}.jsonl")
        os.chmod(path, 0o600)
        return path.read_bytes()


def add_file_routes(app: FastAPI, service: LabelingService, config: ProjectConfig) -> None:
    """Serve the clips and the exports on a launched app."""

    async def clip(key: str, name: str, request: Request) -> Response:
        if logged_in_user(request) is None:
            return PlainTextResponse("log in first", status_code=401)
        path = find_clip(await run_in_threadpool(service.storage.items), key, name)
        if path is None or path.suffix.lower() not in VIDEO_TYPES or not path.is_file():
            return PlainTextResponse("no such clip", status_code=404)
        return FileResponse(path, media_type=VIDEO_TYPES[path.suffix.lower()],
                            headers={"X-Content-Type-Options": "nosniff", "Content-Disposition": "inline"})

    async def export(fmt: str, request: Request) -> Response:
        user = logged_in_user(request)
        if user is None:
            return PlainTextResponse("log in first", status_code=401)
        if not service.is_admin(user):
            return PlainTextResponse("admins only", status_code=403)
        if fmt not in FORMATS:
            return PlainTextResponse(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}",
                                     status_code=404)
        data = await run_in_threadpool(export_bytes, service, config, fmt)
        filename = f"{config.name}-{fmt}.jsonl"
        return Response(data, media_type="application/x-ndjson",
                        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})

    app.add_api_route(f"/{CLIP_URL}/{{key}}/{{name}}", clip, methods=["GET"], include_in_schema=False)
    app.add_api_route("/labeling/export/{fmt}", export, methods=["GET"], include_in_schema=False)
