"""Offline by default in every entry point, not at import of the core."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants

from pipeline.cli import main
from rlhf.config import run_main

PACKAGES = ("rlhf", "reward_model", "ppo", "robot", "labeling_app", "pipeline")


def test_importing_the_core_sets_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = "import os, rlhf, rlhf.preferences; print(os.environ.get('HF_HUB_OFFLINE'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "None"


def test_run_main_turns_huggingface_hub_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert main(["--version"]) == 0 and not huggingface_hub.constants.is_offline_mode()  # no command ran yet
    assert run_main(lambda argv: 0) == 0
    assert huggingface_hub.constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"


def test_the_user_can_opt_in_to_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert run_main(lambda argv: 0) == 0 and not huggingface_hub.constants.is_offline_mode()


def test_every_python_m_entry_point_goes_through_run_main():
    """Each module runnable as `python -m ...` calls its main through run_main."""
    entry_points = []
    for package in PACKAGES:
        for path in sorted(Path(package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                    entry_points.append((str(path), ast.unparse(node)))
    assert len(entry_points) >= 10
    assert [path for path, block in entry_points if "run_main" not in block] == []
