"""Helpers for the labelling-app tests: tiny projects written to a temp folder, users with
cheap password hashes, clips made with imageio-ffmpeg, and in-process servers bound to free
ports on 127.0.0.1. (A module, not conftest.py, because pytest runs in importlib mode.)"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="gradio-tests-"))

from labeling_app.http_client import HttpSession as BaseHttpSession  # noqa: E402
from labeling_app.users import add_user  # noqa: E402

PASSWORD = "correct-horse"
FAST_N = 2**10  # scrypt cost for tests; the real default is 2**14
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "labeling_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clip(path: Path, shade: int, frames: int = 6) -> Path:
    """A tiny VP9 WebM (48x32, 6 frames), playable by Chromium."""
    import imageio
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(str(path), fps=6, codec="libvpx-vp9", macro_block_size=16,
                                output_params=["-deadline", "realtime", "-cpu-used", "8"],
                                ffmpeg_log_level="error")
    for i in range(frames):
        frame = np.zeros((32, 48, 3), dtype=np.uint8)
        frame[..., 0] = shade
        frame[:, : 8 * (i + 1) % 48, 1] = 255  # a moving bar, so the clip visibly plays
        writer.append_data(frame)
    writer.close()
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pair_rows(n: int, prefix: str = "p") -> list[dict]:
    return [{"id": f"{prefix}{i}", "prompt": f"Question {i}?", "completions": [f"good answer {i}", f"bad answer {i}"]}
            for i in range(n)]


def make_project(root: Path, rows: list[dict] | None = None, overlap: int = 1, users=("alice", "bob"),
                 admins=("admin",), task: str = "ranking", clips: int = 0, extra: str = "") -> Path:
    """Write a project folder (sources, users, config) and return the config path."""
    root.mkdir(parents=True, exist_ok=True)
    sources = []
    if rows:
        write_jsonl(root / "items.jsonl", rows)
        sources.append("  - {type: jsonl, path: items.jsonl}")
    if clips:
        pairs = []
        for i in range(clips):
            make_clip(root / "clips" / f"seg{i}a.webm", 40)
            make_clip(root / "clips" / f"seg{i}b.webm", 200)
            pairs.append({"id": f"clip{i}", "clip_a": f"seg{i}a.webm", "clip_b": f"seg{i}b.webm",
                          "segment_a": f"seg{i}a", "segment_b": f"seg{i}b"})
        (root / "clips" / "manifest.json").write_text(json.dumps({"pairs": pairs}))
        sources.append("  - {type: clips, path: clips/manifest.json}")
    for name in users:
        add_user(root / "users.json", name, PASSWORD, n=FAST_N)
    for name in admins:
        add_user(root / "users.json", name, PASSWORD, admin=True, n=FAST_N)
    config = root / "project.yaml"
    config.write_text(
        f"name: test-project\ntask: {task}\nsources:\n" + "\n".join(sources) + "\n"
        f"overlap: {overlap}\nstorage: store\nusers: users.json\nlease_seconds: 300\n{extra}",
        encoding="utf-8")
    return config


class Server:
    """An in-process app on a free loopback port; `close()` stops it."""

    def __init__(self, config_path: Path, concurrency: int = 8):
        from labeling_app.app import launch
        from labeling_app.config import load_config

        self.config = load_config(config_path)
        self.demo, self.service, self.url = launch(self.config, port=free_port(), block=False, quiet=True,
                                                   concurrency=concurrency)

    def client(self, user: str, password: str = PASSWORD):
        from gradio_client import Client

        # ssl_verify=False: plain HTTP on loopback anyway, and it spares a CA-bundle load per request
        return Client(self.url, auth=(user, password), verbose=False, analytics_enabled=False, ssl_verify=False)

    def close(self):
        self.demo.close()
        self.service.storage.close()


class HttpSession(BaseHttpSession):
    """`labeling_app.http_client.HttpSession` with the tests' password by default."""

    def __init__(self, url: str, user: str, password: str = PASSWORD, timeout: float = 20):
        super().__init__(url, user, password, timeout)
