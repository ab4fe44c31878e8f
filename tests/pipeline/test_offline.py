"""Offline by default in every entry point, not at import of the core."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest

from pipeline.cli import main
from rlhf.config import run_main

ROOT = Path(__file__).resolve().parents[2]
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


# Each entry point's smoke config, run as `python -m` with every socket connection failing
# (and reported): huggingface_hub, or anything else, reaching for the network is a failure.
NO_NETWORK = """
import runpy, socket, sys
def refuse(*args, **kwargs):
    print("NETWORK ATTEMPT", args[1:2] or args[:1], file=sys.stderr)
    raise OSError("network disabled by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = refuse
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
SMOKE_RUNS = [  # in order: PPO scores with the reward model trained first
    ("reward_model.train", ["--config", "configs/reward_model/smoke.yaml", "--output_dir", "{tmp}/rm"]),
    ("ppo.train", ["--config", "configs/ppo/smoke.yaml", "--reward_models", "{tmp}/rm", "--output_dir", "{tmp}/ppo",
                   "--total_episodes", "8", "--disable_tqdm", "true"]),
]


@pytest.mark.slow
def test_smoke_configs_run_with_the_network_cut(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(ROOT)
    for module, argv in SMOKE_RUNS:
        argv = [token.replace("{tmp}", str(tmp_path)) for token in argv]
        result = subprocess.run([sys.executable, "-c", NO_NETWORK, module, *argv], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (module, result.stderr[-2000:])
        assert "NETWORK ATTEMPT" not in result.stderr, (module, result.stderr[-2000:])
