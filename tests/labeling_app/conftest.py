"""Fixtures for the labelling-app tests; the helpers live in labeling_testkit.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make labeling_testkit importable

from labeling_testkit import Server  # noqa: E402


@pytest.fixture
def server_factory():
    servers = []

    def start(config_path: Path, **kwargs) -> Server:
        server = Server(config_path, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
