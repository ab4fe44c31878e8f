"""Shared test setup: offline, deterministic, few threads (the CI machine has 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import rlhf.models  # noqa: E402
import rlhf.precision  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

PROJECT_PACKAGES = ("rlhf", "reward_model", "ppo", "robot", "labeling_app", "pipeline")


@pytest.fixture(autouse=True)
def auto_precision_is_fp32(monkeypatch):
    """``precision: auto`` resolves to fp32 in tests on every machine (the probe reports bf16
    slower): the numbers tests assert must not depend on this CPU's bf16 speed. The tests of
    auto itself (tests/rlhf/test_precision.py) patch the probe as they need."""
    monkeypatch.setattr(rlhf.precision, "measured_speeds", lambda device: {"fp32": 1.0, "bf16": 0.5})


@pytest.fixture
def forbid_model_loading(monkeypatch):
    """Any model load fails the test: a bad input must be reported before weights load.
    Patched in rlhf.models and wherever a project module bound the names at import."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")
    originals = {name: getattr(rlhf.models, name) for name in ("load_model", "build_tiny_model")}
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] in PROJECT_PACKAGES:
            for name, original in originals.items():
                if getattr(module, name, None) is original:
                    monkeypatch.setattr(module, name, forbidden)
