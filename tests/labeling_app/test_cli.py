"""The commands: bad input fails with a clear message before any server starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from labeling_testkit import make_project, pair_rows

import labeling_app.app
from labeling_app.__main__ import main
from labeling_app.config import load_config
from labeling_app.sources import load_items
from rlhf.config import run_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_server(monkeypatch):
    """Replace the launcher: these tests must never reach it unless they say so."""
    calls = []

    def fake_launch(config, **kwargs):
        calls.append((config, kwargs))
        kwargs["service"].storage.close()

    monkeypatch.setattr(labeling_app.app, "launch", fake_launch)
    return calls


def test_check_accepts_a_good_project(tmp_path, capsys, no_server):
    config = make_project(tmp_path / "p", pair_rows(3), clips=1)
    assert main(["--config", str(config), "--check"]) == 0
    assert "OK (4 items, overlap 1)" in capsys.readouterr().out
    assert no_server == []


@pytest.mark.parametrize("problem, expected", [
    ("config", "field 'overlap'"),
    ("source", "items.jsonl, line 2, field 'completions'"),
    ("users", "no users"),
    ("missing", "config file not found"),
])
def test_bad_input_fails_before_the_server(tmp_path, capsys, no_server, problem, expected):
    config = make_project(tmp_path / "p", pair_rows(3))
    if problem == "config":
        config.write_text(config.read_text().replace("overlap: 1", "overlap: many"))
    elif problem == "source":
        (tmp_path / "p" / "items.jsonl").write_text('{"prompt": "a", "completions": ["x", "y"]}\n'
                                                    '{"prompt": "b", "completions": "xy"}\n')
    elif problem == "users":
        (tmp_path / "p" / "users.json").unlink()
    else:
        config = tmp_path / "nope.yaml"
    assert run_main(main, ["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert no_server == []


def test_serves_on_loopback_unless_told_and_warns(tmp_path, capsys, no_server):
    config = make_project(tmp_path / "p", pair_rows(2))
    assert main(["--config", str(config)]) == 0
    assert no_server[-1][1]["host"] == "127.0.0.1"
    assert "warning" not in capsys.readouterr().err
    assert main(["--config", str(config), "--host", "0.0.0.0", "--port", "8123"]) == 0
    assert no_server[-1][1]["host"] == "0.0.0.0" and no_server[-1][1]["port"] == 8123
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err


def test_help_texts(capsys):
    from labeling_app.export import main as export_main
    from labeling_app.users import main as users_main

    for command in (main, export_main, users_main):
        with pytest.raises(SystemExit) as exit_info:
            command(["--help"])
        assert exit_info.value.code == 0
    assert "--format {core,trl,ranked}" in capsys.readouterr().out


def test_shipped_demo_config_loads():
    config = load_config(REPO / "configs" / "labeling" / "demo.yaml")
    items = load_items(config)
    assert {item.mode for item in items} == {"pair", "ranking"}
    assert config.users.name == "users.json" and "runs" in config.users.parts  # never in the repo
    for name in ("reward_model_demo.yaml", "robot_clips.yaml"):
        assert load_config(REPO / "configs" / "labeling" / name, check_sources=False).overlap == 3


def test_launch_never_shares(monkeypatch, tmp_path):
    """The real launcher passes share=False, 127.0.0.1 by default, and analytics off."""
    import gradio as gr

    seen = {}

    def fake_launch(self, **kwargs):
        seen.update(kwargs)
        return None, "http://127.0.0.1:1/", None

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    from labeling_app.app import launch as real_launch

    demo, service, _ = real_launch(load_config(make_project(tmp_path / "p", pair_rows(2))), block=False)
    service.storage.close()
    assert seen["share"] is False and seen["server_name"] == "127.0.0.1"
    config = load_config(tmp_path / "p" / "project.yaml")
    # the storage's files one by one: uploaded clips live in the storage folder (api.py)
    for private in (config.db_path, f"{config.db_path}-wal", config.audit_path, config.users):
        assert str(private) in seen["blocked_paths"]
    assert demo.analytics_enabled is False
