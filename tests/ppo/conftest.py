import pytest

from ppo_test_utils import SHORT_PROMPTS


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join('{"prompt": "%s"}\n' % p for p in SHORT_PROMPTS))
    return path
