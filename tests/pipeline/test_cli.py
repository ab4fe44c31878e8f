"""The `rlhf` command, `rlhf convert` and `rlhf demo` (on the tiny model)."""

import json
import pytest

from pipeline.cli import SUBCOMMANDS, main
from rlhf.preferences import load_comparisons


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_subcommand_has_help(name, capsys):
    """In this process: one fresh interpreter per subcommand took ~100 s of the suite. Each
    subcommand's module is still imported here; fresh-process runs of the stages are in
    tests/pipeline/test_offline.py and tests/test_install.py."""
    with pytest.raises(SystemExit) as exit_info:  # argparse exits after printing the help
        code = main([name, "--help"])
        raise SystemExit(code)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_convert_ranked_to_trl(tmp_path, capsys):
    source = tmp_path / "ranked.jsonl"
    source.write_text(json.dumps({"prompt": "p", "completions": ["a", "b", "c"], "ranks": [0, 1, 1]}) + "\n"  # b = c tied
                      + json.dumps({"prompt": "q", "completions": ["x", "y"], "ranks": [0, 0]}) + "\n")
    out = tmp_path / "trl.jsonl"
    assert main(["convert", str(source), str(out), "--to", "trl"]) == 2  # the tie cannot be a TRL row
    assert "ties cannot be written" in capsys.readouterr().err
    assert main(["convert", str(source), str(out), "--to", "trl", "--ties", "drop"]) == 0
    assert "2 pairs, dropped 2 ties" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("a", "b"), ("a", "c")]


def test_convert_keeps_what_is_there_unless_told(tmp_path, capsys):
    """An existing output, the input itself included, is refused without --overwrite; with
    it the file is replaced whole; no temporary file is ever left behind."""
    source = tmp_path / "ranked.jsonl"
    source.write_text(json.dumps({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1]}) + "\n")
    original = source.read_bytes()
    assert main(["convert", str(source), str(source), "--to", "trl"]) == 2
    assert "already exists" in capsys.readouterr().err and source.read_bytes() == original
    assert main(["convert", str(source), str(tmp_path), "--to", "trl"]) == 2  # a folder is not an output file
    assert "is a folder" in capsys.readouterr().err
    assert main(["convert", str(source), str(source), "--to", "trl", "--overwrite", "true"]) == 0
    assert json.loads(source.read_text()) == {"prompt": "p", "chosen": "a", "rejected": "b"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ranked.jsonl"]


def test_demo_on_tiny_model(tmp_path, capsys):
    code = main(["sample-demo", "--policy_model", "tiny-random-llama", "--num_prompts", "3", "--k", "3",
                 "--max_new_tokens", "6", "--out", str(tmp_path)])
    assert code == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps lines at the terminal width
    assert "3 prompts x 3 completions" in out and "teacher rankings equal the gold order" in out
    comparisons = load_comparisons(tmp_path / "comparisons.jsonl")
    assert len(comparisons) == 3
    assert all(c.kind == "ranking" and c.k == 3 and c.annotator == "mistake" for c in comparisons)
