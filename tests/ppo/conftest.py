import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make ppo_test_utils importable

from ppo_test_utils import SHORT_PROMPTS  # noqa: E402


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join('{"prompt": "%s"}\n' % p for p in SHORT_PROMPTS))
    return path
