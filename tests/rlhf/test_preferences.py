"""Loaders, exports and round trips of the preference data model, and every bad input."""

import json

import pytest

from rlhf.preferences import (
    Comparison,
    PreferenceDataError,
    iter_rows,
    load_comparisons,
    read_jsonl,
    save_comparisons,
    scores_to_ranks,
    split_hh_transcript,
    to_ranked_row,
    to_trl_row,
    to_trl_rows,
)

TRL_ROWS = [
    {"prompt": "What is 2+2?", "chosen": " 4.", "rejected": " 5.", "id": 7},
    {"prompt": "Name a colour.", "chosen": " Blue.", "rejected": " Seven.", "margin": 1.5, "source": "x"},
    {"chosen": "The sky is blue.", "rejected": "The sky is green."},  # implicit prompt
    {  # conversational
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello! How can I help?"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    },
]

HH_ROWS = [
    {
        "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 8 minutes.",
        "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Eggs are birds.",
    },
    {  # multi-turn: the shared prefix includes the earlier turns
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Capital of Italy?\n\nAssistant: Rome.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Capital of Italy?\n\nAssistant: Paris.",
    },
    {  # completions that share their first word: the split is still at the Assistant turn
        "chosen": "\n\nHuman: Say hi\n\nAssistant: Hi there friend",
        "rejected": "\n\nHuman: Say hi\n\nAssistant: Hi",
    },
]

RANKED_ROWS = [
    {"prompt": "Write a haiku.", "completions": ["a", "b", "c", "d"], "ranks": [2, 0, 1, 1], "id": "r1"},
    {"prompt": "Rate these.", "completions": ["x", "y", "z"], "scores": [3, 5, 3], "annotator": "ann1"},
    {"prompt": "Pick one.", "completions": ["p", "q", "r"], "best": 1, "weight": 2.0},
    {"prompt": "Top two.", "completions": ["u", "v", "w", "t"], "ranks": [1, None, 0, None]},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ loaders
def test_trl_loader(tmp_path):
    comps = load_comparisons(write_jsonl(tmp_path / "trl.jsonl", TRL_ROWS), format="trl")
    assert [c.kind for c in comps] == ["pair"] * 4
    assert [c.label for c in comps] == [1.0] * 4
    assert comps[0].prompt == "What is 2+2?" and comps[0].items == [" 4.", " 5."] and comps[0].id == "7"
    assert comps[1].margin == 1.5 and comps[1].meta == {"source": "x"}
    assert comps[2].prompt is None
    assert comps[3].items[0][0]["role"] == "assistant"


def test_auto_detection_and_file_types(tmp_path):
    rows = TRL_ROWS + HH_ROWS + RANKED_ROWS
    jsonl = load_comparisons(write_jsonl(tmp_path / "mixed.jsonl", rows))
    assert [c.kind for c in jsonl] == ["pair"] * 7 + ["ranking", "ranking", "best_of_k", "ranking"]
    (tmp_path / "mixed.json").write_text(json.dumps(rows))
    assert [c.to_dict() for c in load_comparisons(tmp_path / "mixed.json")] == [c.to_dict() for c in jsonl]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(RANKED_ROWS[:1]), tmp_path / "r.parquet")
    assert load_comparisons(tmp_path / "r.parquet")[0].ranks == [2, 0, 1, 1]


def test_datasets_input():
    from datasets import Dataset

    comps = load_comparisons(Dataset.from_list(TRL_ROWS[:2]))
    assert [c.items for c in comps] == [[" 4.", " 5."], [" Blue.", " Seven."]]


def test_hh_loader_splits_shared_prefix(tmp_path):
    comps = load_comparisons(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS), format="hh")
    assert comps[0].prompt == "\n\nHuman: How do I boil an egg?\n\nAssistant:"
    assert comps[0].items == [" Put it in boiling water for 8 minutes.", " Eggs are birds."]
    assert comps[1].prompt.endswith("Capital of Italy?\n\nAssistant:")
    assert comps[1].items == [" Rome.", " Paris."]
    assert comps[2].items == [" Hi there friend", " Hi"]
    assert split_hh_transcript(HH_ROWS[0]["chosen"], HH_ROWS[0]["rejected"])[0].count("Human") == 1


def test_ranked_loader(tmp_path):
    comps = load_comparisons(write_jsonl(tmp_path / "ranked.jsonl", RANKED_ROWS), format="ranked")
    assert comps[0].ranks == [2, 0, 1, 1] and comps[0].id == "r1"
    assert comps[1].ranks == [1, 0, 1] and comps[1].annotator == "ann1"  # scores -> ranking with ties
    assert comps[2].kind == "best_of_k" and comps[2].choice == 1 and comps[2].weight == 2.0
    assert comps[3].ranks == [1, None, 0, None]
    assert scores_to_ranks([3, 5, 5, 1]) == [1, 0, 0, 2]


# ------------------------------------------------------------------ round trips
def test_trl_round_trip_is_lossless(tmp_path):
    comps = load_comparisons(write_jsonl(tmp_path / "trl.jsonl", TRL_ROWS))
    out = save_comparisons(comps, tmp_path / "out.jsonl", format="trl")
    assert [json.loads(line) for line in out.read_text().splitlines()] == TRL_ROWS


def test_hh_round_trip_is_lossless(tmp_path):
    comps = load_comparisons(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS))
    assert [to_trl_row(c) for c in comps] == HH_ROWS


def test_ranked_round_trip_is_lossless(tmp_path):
    comps = load_comparisons(write_jsonl(tmp_path / "ranked.jsonl", RANKED_ROWS))
    out = save_comparisons(comps, tmp_path / "out.jsonl", format="ranked")
    assert [json.loads(line) for line in out.read_text().splitlines()] == RANKED_ROWS


def test_core_round_trip_keeps_everything(tmp_path):
    comps = [
        Comparison(items=["a", "b"], kind="pair", label=0.5, prompt="p", annotator="ann", weight=0.5, id="1"),
        Comparison(items=["seg-1", "seg-2"], kind="not_comparable", annotator="ann2", meta={"clip": "c.webm"}),
        Comparison(items=["a", "b", "c"], kind="ranking", ranks=[0, 0, None], prompt=[{"role": "user", "content": "q"}]),
        Comparison(items=["a", "b"], kind="pair", label=0.0, margin=2.0),
    ]
    path = save_comparisons(comps, tmp_path / "core.jsonl")
    again = load_comparisons(path)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in comps]
    assert [c.trainable for c in again] == [True, False, True, True]


def test_exports_of_kway_and_ties():
    ranking = Comparison(items=["a", "b", "c"], kind="ranking", ranks=[1, 0, 1], prompt="p", id="q")
    with pytest.raises(PreferenceDataError, match="ties cannot be written"):
        to_trl_rows([ranking])
    rows, dropped = to_trl_rows([ranking], ties="drop")
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("b", "a"), ("b", "c")]  # the tie a=c is no TRL row
    assert dropped == {"ties": 1, "not_comparable": 0}
    tie = Comparison(items=["a", "b"], kind="pair", label=0.5)
    with pytest.raises(PreferenceDataError, match="ties cannot be written"):
        to_trl_rows([tie])
    rows, dropped = to_trl_rows([tie, Comparison(items=["a", "b"], kind="not_comparable")], ties="drop")
    assert rows == [] and dropped == {"ties": 1, "not_comparable": 1}
    b_better = Comparison(items=["a", "b"], kind="pair", label=0.0, prompt="p")
    assert to_trl_row(b_better) == {"prompt": "p", "chosen": "b", "rejected": "a"}
    assert to_ranked_row(b_better)["ranks"] == [1, 0]
    assert to_ranked_row(tie)["ranks"] == [0, 0]


# ------------------------------------------------------------------ bad input
BAD_INPUTS = [
    ('{"chosen": "a", "rejected": "b"', "malformed JSON"),
    ('{"prompt": "p", "chosen": "a"}', "field 'rejected': missing required field"),
    ('{"prompt": "p", "chosen": "", "rejected": "b"}', "field 'chosen': field is empty"),
    ('{"prompt": "p", "chosen": "a", "rejected": "a"}', "duplicate completions"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": NaN}', "field 'margin': margin must be a finite number"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": Infinity}', "field 'margin'"),
    ('{"prompt": "p", "completions": ["a"], "ranks": [0]}', "K >= 2 completions, got 1"),
    ('{"prompt": "p", "completions": ["a", "b", "a"], "ranks": [0, 1, 2]}', "items 0 and 2 are duplicates"),
    ('{"prompt": "p", "completions": ["a", "b", "c"], "ranks": [0, 2, 2]}', "ranks must be dense"),
    ('{"prompt": "p", "completions": ["a", "b"], "ranks": [0]}', "expected a list of 2 ranks"),
    ('{"prompt": "p", "completions": ["a", "b"], "ranks": [0, -1]}', "integers >= 0"),
    ('{"prompt": "p", "completions": ["a", "b"], "scores": [1.0, NaN]}', "field 'scores': scores must be finite"),
    ('{"prompt": "p", "completions": ["a", "b"], "best": 5}', "field 'choice'"),
    ('{"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1], "best": 0}', "exactly one of"),
    ('{"items": ["a", "b"], "kind": "pair", "label": 0.7}', "field 'label': pair label must be one of {0, 0.5, 1}"),
    ('{"items": ["a", "b"], "kind": "pair", "label": NaN}', "field 'label'"),
    ('{"items": ["a", "b"], "kind": "vote"}', "unknown judgement kind"),
    ('{"items": ["a", "b"], "kind": "pair", "label": 1, "colour": 3}', "unknown fields ['colour']"),
    ('{"prompt": "p", "chosen": [{"role": "user"}], "rejected": "b"}', "message 0 must be an object with 'role' and 'content'"),
    ('{"text": "hello"}', "cannot tell the format"),
    ("[1, 2]", "expected a JSON object"),
]


@pytest.mark.parametrize("line,message", BAD_INPUTS)
def test_bad_input_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises(PreferenceDataError) as err:
        load_comparisons(path)
    assert f"{path}, line 2" in str(err.value)
    assert message in str(err.value)


def test_bad_hh_and_files(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: yo"}])
    with pytest.raises(PreferenceDataError, match=r"line 1, field 'chosen': expected an HH transcript"):
        load_comparisons(path, format="hh")
    with pytest.raises(PreferenceDataError, match="file not found"):
        load_comparisons(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(PreferenceDataError, match="unsupported file type '.csv'"):
        load_comparisons(tmp_path / "x.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PreferenceDataError, match="no rows found"):
        load_comparisons(tmp_path / "empty.jsonl")
    (tmp_path / "bad.json").write_text('[{"chosen": "a", "rejected": "b"}, {"chosen": "a"}]')
    with pytest.raises(PreferenceDataError, match=r"bad.json \(row 2\), field 'rejected'"):
        load_comparisons(tmp_path / "bad.json")
    with pytest.raises(PreferenceDataError, match="unknown format"):
        load_comparisons(path, format="csv")


def test_dataclass_validation():
    with pytest.raises(PreferenceDataError, match="K >= 2 items, got 1"):
        Comparison(items=["a"], kind="best_of_k", choice=0)
    with pytest.raises(PreferenceDataError, match="a margin is only defined for pairs"):
        Comparison(items=["a", "b", "c"], kind="best_of_k", choice=0, margin=1.0)
    with pytest.raises(PreferenceDataError, match="weight must be"):
        Comparison(items=["a", "b"], kind="pair", label=1, weight=-1)
    with pytest.raises(PreferenceDataError, match="not comparable"):
        Comparison(items=["a", "b"], kind="not_comparable").to_ranks()


def test_read_jsonl_numbers_lines_skips_blanks_and_names_the_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(PreferenceDataError, match=r"rows.jsonl, line 2: expected a JSON object, got list"):
        list(read_jsonl(path))

    class OtherError(ValueError):
        def __init__(self, reason, source, line):
            super().__init__(f"{source}@{line}: {reason}")

    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(OtherError, match=r"rows.jsonl@2: malformed JSON \(Expecting value at column 1\)"):
        list(read_jsonl(path, OtherError))


def test_iter_rows_names_rows_of_json_files(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[{"a": 1}, {"a": 2}]')
    assert list(iter_rows(path)) == [({"a": 1}, f"{path} (row 1)", None), ({"a": 2}, f"{path} (row 2)", None)]
