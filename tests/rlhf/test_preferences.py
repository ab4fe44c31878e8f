"""Loaders, exports and round trips of the preference data model, and every bad input."""

import json
import shutil
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from trl.data_utils import maybe_extract_prompt

from reward_model.collate import tokenize_comparisons
from reward_model.train import split_by_prompt
from rlhf.models import load_tokenizer
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
    assert (comps[2].prompt, comps[2].items) == ("The sky is", [" blue.", " green."])  # TRL's extract_prompt
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


# ------------------------------------------------------------------ implicit prompts (TRL's maybe_extract_prompt)
def _turns(*texts):
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]


IMPLICIT_ROWS = [  # (implicit row, the same row with its prompt given)
    ({"chosen": _turns("What colour is the sky?", "Blue."), "rejected": _turns("What colour is the sky?", "Green.")},
     {"prompt": _turns("What colour is the sky?"), "chosen": _turns("", "Blue.")[1:],
      "rejected": _turns("", "Green.")[1:]}),
    ({"chosen": _turns("Hi", "Hello.", "Capital of Italy?", "Rome."),  # multi-turn: the shared turns are the prompt
      "rejected": _turns("Hi", "Hello.", "Capital of Italy?", "Paris.")},
     {"prompt": _turns("Hi", "Hello.", "Capital of Italy?"), "chosen": _turns("", "Rome.")[1:],
      "rejected": _turns("", "Paris.")[1:]}),
    ({"chosen": "The sky is blue.", "rejected": "The sky is green."},  # text: a space before the cut goes with the completion
     {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}),
    ({"prompt": "What colour is the sky?",  # a text prompt beside completions that repeat it: TRL drops the column
      "chosen": _turns("What colour is the sky?", "Blue."), "rejected": _turns("What colour is the sky?", "Green.")},
     {"prompt": _turns("What colour is the sky?"), "chosen": _turns("", "Blue.")[1:],
      "rejected": _turns("", "Green.")[1:]}),
]


def _public(comparison):
    row = comparison.to_dict()
    row.pop("meta", None)
    return row


@pytest.mark.parametrize("implicit, explicit", IMPLICIT_ROWS)
def test_implicit_prompt_is_split_as_trl_does(implicit, explicit):
    trl_split = maybe_extract_prompt(dict(implicit))
    assert {k: trl_split[k] for k in ("prompt", "chosen", "rejected")} == explicit
    [from_implicit], [from_explicit] = load_comparisons([implicit]), load_comparisons([explicit])
    assert _public(from_implicit) == _public(from_explicit)
    assert from_implicit.prompt == explicit["prompt"] and from_implicit.items == [explicit["chosen"], explicit["rejected"]]
    assert to_trl_row(from_implicit) == implicit  # written back as it came


def test_implicit_prompt_gives_identical_token_sequences():
    tokenizer = load_tokenizer("tiny-random-llama")
    implicit = load_comparisons([row for row, _ in IMPLICIT_ROWS])
    explicit = load_comparisons([row for _, row in IMPLICIT_ROWS])
    assert tokenize_comparisons(implicit, tokenizer)[0] == tokenize_comparisons(explicit, tokenizer)[0]


@pytest.mark.parametrize("row", [
    {"chosen": "Yes, gladly.", "rejected": "No."},  # nothing shared: no prompt
    {"chosen": "abc ", "rejected": "xbc"},  # TRL's extract_prompt would cut rejected to "c" here
    {"chosen": _turns("Hi", "Hello."), "rejected": _turns("Hey", "Hello.")},
    {"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello.", "rejected": "Hell."},  # chat prompt, text items
    {"prompt": "Hi", "chosen": "Hello.", "rejected": "Hell."},  # explicit prompt: the items are left alone
])
def test_rows_with_nothing_to_split_are_kept_whole(row):
    [comparison] = load_comparisons([row])
    assert comparison.prompt == row.get("prompt") and comparison.items == [row["chosen"], row["rejected"]]
    assert to_trl_row(comparison) == row


def test_implicit_prompts_group_comparisons_by_prompt_for_the_held_out_split():
    rows = [{"chosen": _turns(f"Question {i}?", "Good."), "rejected": _turns(f"Question {i}?", "Bad.")}
            for i in range(8)]
    train, held_out = split_by_prompt(load_comparisons(rows), 0.25, seed=0)
    assert (len(train), len(held_out)) == (6, 2)
    assert not {json.dumps(c.prompt) for c in train} & {json.dumps(c.prompt) for c in held_out}


# ------------------------------------------------------------------ datasets: saved folders and hub ids
CONV_ROWS = [{"chosen": _turns(f"Question {i}?", f"Good {i}."), "rejected": _turns(f"Question {i}?", f"Bad {i}.")}
             for i in range(8)]


@pytest.fixture
def local_caches(tmp_path, monkeypatch):
    """Empty datasets and hub caches under tmp_path, the run offline (the toolkit's default)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub-cache"


def _hub_snapshot(cache, repo_id, files):
    """What `hf download --repo-type dataset` leaves in the hub cache."""
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    for name, rows in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(snapshot / name, rows)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def _prompts(comparisons):
    return [c.prompt[0]["content"] for c in comparisons]


def test_saved_dataset_folders(tmp_path, local_caches):
    dataset = datasets.Dataset.from_list(CONV_ROWS)
    dataset.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": dataset.select(range(6)), "test": dataset.select(range(6, 8))}).save_to_disk(
        str(tmp_path / "dict"))
    from_folder = load_comparisons(tmp_path / "one")
    assert [_public(c) for c in from_folder] == [_public(c) for c in load_comparisons(CONV_ROWS)]
    assert _prompts(load_comparisons(str(tmp_path / "dict"), split="train")) == [f"Question {i}?" for i in range(6)]
    assert _prompts(load_comparisons(str(tmp_path / "dict"))) == ["Question 6?", "Question 7?"]  # default: test
    with pytest.raises(PreferenceDataError, match=r"^--eval_data: \S+/dict has the splits \['train', 'test'\] and "
                                                  r"no 'validation'; expected one of them named"):
        load_comparisons(str(tmp_path / "dict"), split="validation", where="--eval_data")
    (tmp_path / "files").mkdir()
    write_jsonl(tmp_path / "files" / "part.jsonl", CONV_ROWS[:3])  # a folder of data files: its only split
    assert _prompts(load_comparisons(tmp_path / "files", split="test")) == ["Question 0?", "Question 1?", "Question 2?"]


def test_hub_id_from_the_local_hub_cache(local_caches):
    _hub_snapshot(local_caches, "someone/prefs", {"data/train.jsonl": CONV_ROWS[:5], "data/test.jsonl": CONV_ROWS[5:]})
    train = load_comparisons("someone/prefs", split="train")
    assert _prompts(train) == [f"Question {i}?" for i in range(5)]
    assert train[0].items == [_turns("", "Good 0.")[1:], _turns("", "Bad 0.")[1:]]
    assert _prompts(load_comparisons("someone/prefs", split="test")) == ["Question 5?", "Question 6?", "Question 7?"]


def test_hub_id_from_the_datasets_cache(tmp_path, local_caches):
    """What an earlier online `load_dataset("someone/prefs")` leaves in the datasets cache:
    the prepared arrow files under ``someone___prefs/<config>/<version>/<hash>``."""
    write_jsonl(tmp_path / "train.jsonl", CONV_ROWS[:4])
    builder = datasets.load_dataset_builder("json", data_files={"train": str(tmp_path / "train.jsonl")},
                                            cache_dir=str(tmp_path / "build"))
    builder.download_and_prepare()
    cached = Path(datasets.config.HF_DATASETS_CACHE) / "someone___prefs" / "default" / "0.0.0" / "0123456789abcdef"
    shutil.copytree(builder.cache_dir, cached)
    (cached / "json-train.arrow").rename(cached / "prefs-train.arrow")
    assert _prompts(load_comparisons("someone/prefs", split="train")) == [f"Question {i}?" for i in range(4)]


def test_dataset_dict_objects():
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(CONV_ROWS[:2]),
                                   "test": datasets.Dataset.from_list(CONV_ROWS[2:3])})
    assert _prompts(load_comparisons(splits, split="train")) == ["Question 0?", "Question 1?"]
    assert _prompts(load_comparisons(splits)) == ["Question 2?"]


def test_hub_id_not_cached_offline_is_one_clear_error(local_caches):
    with pytest.raises(PreferenceDataError) as err:
        load_comparisons("trl-lib/ultrafeedback_binarized", split="train", where="--train_data")
    assert str(err.value) == ("--train_data: trl-lib/ultrafeedback_binarized is not a file or folder, and the dataset "
                              "is not in the local cache (datasets or hub); the run is offline (HF_HUB_OFFLINE=1 is "
                              "the default): set HF_HUB_OFFLINE=0 to download it")
    with pytest.raises(PreferenceDataError, match="^someone/else: not a file or folder, and the dataset is not in"):
        load_comparisons("someone/else")  # eval-rm names no field: the id is the place
    with pytest.raises(PreferenceDataError, match="^missing.jsonl: file not found$"):
        load_comparisons("missing.jsonl", where="--train_data")  # a file name is never looked up on the hub
