"""Fixtures for the labelling-app tests; the helpers live in labeling_testkit.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from labeling_testkit import Server


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
