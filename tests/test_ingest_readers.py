"""Every reader (seeds, SNI, tabular presets, datasets) and every bad-input case, strict and record."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instructforge.config import ConfigError, parse_config
from instructforge.errors import InputError
from instructforge.ingest.config import FileSource, SniSource
from instructforge.ingest.readers import BadInput, read_rows
from instructforge.ingest.seeds import read_seeds
from instructforge.ingest.sni import read_sni
from instructforge.ingest.tabular import read_file_source

SEED = {"id": "s1", "name": "capitals", "instruction": "Name the capital.", "is_classification": False,
        "instances": [{"input": "France", "output": "Paris"}, {"input": "Peru", "output": "Lima"}]}


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_seeds_one_example_per_instance(tmp_path):
    path = _jsonl(tmp_path / "seeds.jsonl", [SEED, {**SEED, "id": "s2", "name": "yes_no", "is_classification": True,
                                                    "instances": [{"output": "yes"}]}])
    rows = list(read_seeds(path, BadInput(strict=True)))
    assert [(r["task"], r["input"], r["output"]) for r in rows] == [
        ("capitals", "France", "Paris"), ("capitals", "Peru", "Lima"), ("yes_no", "", "yes")]
    assert rows[0]["source"] == "seeds:seeds.jsonl" and rows[0]["template"] == "seed"
    assert rows[0]["meta"]["seed_id"] == "s1" and rows[0]["meta"]["is_classification"] == "false"
    assert rows[2]["meta"]["is_classification"] == "true"


@pytest.mark.parametrize("line, where", [
    ('{"id": "s1", "name": "x", ', "line 2: malformed JSON"),
    (json.dumps({k: v for k, v in SEED.items() if k != "instruction"}), "field 'instruction': missing"),
    (json.dumps({**SEED, "instruction": 7}), "field 'instruction': expected a string, got int"),
    (json.dumps({**SEED, "is_classification": "no"}), "field 'is_classification': expected true or false"),
    (json.dumps({**SEED, "instances": [{"input": "a"}]}), "field 'instances[0].output': missing"),
    (json.dumps({**SEED, "instances": []}), "field 'instances'"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_seed_lines(tmp_path, line, where):
    path = _jsonl(tmp_path / "s.jsonl", [{**SEED, "id": "first"}, line])
    with pytest.raises(InputError) as e:
        list(read_seeds(path, BadInput(strict=True)))
    msg = str(e.value)
    assert msg.startswith(f"{path}:2: ") and where.removeprefix("line 2: ") in msg
    lenient = BadInput(strict=False)
    rows = list(read_seeds(path, lenient))
    assert len(rows) == 2 and len(lenient.rows) == 1  # the good line is kept, the bad one recorded
    bad = lenient.rows[0]
    assert bad["evidence"]["line"] == "2" and bad["reason"] == msg and bad["evidence"]["file"] == str(path)


def test_duplicate_seed_ids(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [SEED, SEED])
    with pytest.raises(InputError, match=r"s\.jsonl:2: field 'id': duplicate seed id 's1' \(first on line 1\)"):
        list(read_seeds(path, BadInput(strict=True)))


def test_empty_and_non_utf8_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="empty.jsonl: empty file"):
        list(read_seeds(empty, BadInput(strict=True)))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(SEED).encode() + b"\n" + '{"id": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(InputError, match=r"latin.jsonl:2: not UTF-8 text \(byte 0xe9\)"):
        list(read_seeds(latin, BadInput(strict=True)))
    lenient = BadInput(strict=False)
    assert len(list(read_seeds(latin, lenient))) == 2 and "not UTF-8" in lenient.rows[0]["reason"]
    csv_latin = tmp_path / "x.csv"
    csv_latin.write_bytes(b"instruction,output\nok,fine\n" + "caf\xe9,x\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"x.csv:3: not UTF-8"):
        list(read_rows(csv_latin, BadInput(strict=True)))
    with pytest.raises(InputError, match="file not found"):
        list(read_seeds(tmp_path / "nope.jsonl", BadInput(strict=False)))


NEW_SNI = {
    "Contributors": ["someone"], "Source": ["made up"], "Categories": ["Question Answering"],
    "Definition": ["Answer the question about the sentence.", "Use one word."],
    "Positive Examples": [{"input": "The cat sat. Who sat?", "output": "cat", "explanation": "The cat sat."}],
    "Negative Examples": [{"input": "x", "output": "y", "explanation": "wrong"}],
    "Instances": [{"id": "task999-1", "input": "Ann ran. Who ran?", "output": ["Ann", "ann"]},
                  {"id": "task999-2", "input": "Bo ate. Who ate?", "output": ["Bo"]}],
}
OLD_SNI = {"Definition": "Answer the question.", "Positive Examples": [{"input": "1+1?", "output": "2"}],
           "Instances": [{"input": "2+2?", "output": "4"}, {"input": "3+3?", "output": ["6"]}]}


def test_sni_final_and_old_schema(tmp_path):
    (tmp_path / "task999_who.json").write_text(json.dumps(NEW_SNI), encoding="utf-8")
    (tmp_path / "task001_sums.json").write_text(json.dumps(OLD_SNI), encoding="utf-8")
    rows = list(read_sni(tmp_path, SniSource(path="x"), BadInput(strict=True)))
    assert [(r["task"], r["input"], r["output"]) for r in rows] == [
        ("task001_sums", "2+2?", "4"), ("task001_sums", "3+3?", "6"),
        ("task999_who", "Ann ran. Who ran?", "Ann"), ("task999_who", "Bo ate. Who ate?", "Bo")]
    assert rows[2]["instruction"] == "Answer the question about the sentence.\nUse one word."
    assert rows[2]["meta"]["instance_id"] == "task999-1" and rows[0]["meta"]["instance_id"] == "task001_sums-0"
    assert json.loads(rows[2]["meta"]["categories"]) == ["Question Answering"]
    assert rows[0]["source"] == "sni:task001_sums.json" and rows[0]["template"] == "sni"

    cfg = SniSource(path="x", positive_examples=1, outputs="all", max_instances=1)
    rows = list(read_sni(tmp_path / "task999_who.json", cfg, BadInput(strict=True)))
    assert [r["output"] for r in rows] == ["Ann", "ann"]
    assert rows[0]["instruction"].endswith("Positive Example 1 -\nInput: The cat sat. Who sat?\nOutput: cat")
    assert rows[0]["template"] == "sni+1pos"


@pytest.mark.parametrize("doc, where", [
    ({**NEW_SNI, "Definition": None}, "field 'Definition': missing"),
    ({**NEW_SNI, "Definition": 3}, "field 'Definition': expected a string"),
    ({**NEW_SNI, "Instances": [{"id": "a", "input": "q"}]}, "field 'Instances[0].output': missing"),
    ({**NEW_SNI, "Instances": [{"id": "a", "input": 5, "output": ["x"]}]}, "field 'Instances[0].input': expected"),
    ({**NEW_SNI, "Instances": []}, "field 'Instances'"),
])
def test_bad_sni_files(tmp_path, doc, where):
    path = tmp_path / "task1_x.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError) as e:
        list(read_sni(path, SniSource(path="x"), BadInput(strict=True)))
    assert str(e.value).startswith(f"{path}: {where}")
    lenient = BadInput(strict=False)
    list(read_sni(path, SniSource(path="x"), lenient))
    assert len(lenient.rows) == 1 and where in lenient.rows[0]["reason"]


def test_sni_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "task2_x.json"
    path.write_text('{\n  "Definition": "d",\n  "Instances": [,]\n}', encoding="utf-8")
    with pytest.raises(InputError, match=r"task2_x\.json:3: malformed JSON"):
        list(read_sni(path, SniSource(path="x"), BadInput(strict=True)))


def _read(cfg: FileSource, path=None, strict=True):
    return list(read_file_source(cfg, path, BadInput(strict=strict)))


def test_alpaca_jsonl_and_json(tmp_path):
    rows = [{"instruction": "Add.", "input": "2 and 3", "output": "5"}, {"instruction": "Greet.", "output": "Hi"}]
    path = _jsonl(tmp_path / "alpaca.jsonl", rows)
    out = _read(FileSource(path=str(path)), path)
    assert [(r["instruction"], r["input"], r["output"]) for r in out] == [("Add.", "2 and 3", "5"), ("Greet.", "", "Hi")]
    assert out[0]["task"] == "alpaca" and out[0]["source"] == "file:alpaca.jsonl" and out[0]["template"] == "alpaca"
    js = tmp_path / "alpaca.json"
    js.write_text(json.dumps(rows), encoding="utf-8")
    assert [r["id"] for r in _read(FileSource(path=str(js), task="alpaca"), js)] == [r["id"] for r in out]


def test_dolly_csv(tmp_path):
    path = tmp_path / "dolly.csv"
    path.write_text('instruction,context,response,category\n"Who wrote it?","A book by Ann.","Ann",closed_qa\n'
                    'Name a fruit.,,Apple,brainstorming\n', encoding="utf-8")
    out = _read(FileSource(path=str(path), preset="dolly"), path)
    assert [(r["task"], r["input"], r["output"]) for r in out] == [("closed_qa", "A book by Ann.", "Ann"),
                                                                   ("brainstorming", "", "Apple")]
    assert out[1]["meta"]["row"] == "3"


def test_sharegpt_and_messages(tmp_path):
    conv = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]
    path = tmp_path / "share.json"
    path.write_text(json.dumps([{"conversations": conv}]), encoding="utf-8")
    first = _read(FileSource(path=str(path), preset="sharegpt"), path)
    assert [(r["instruction"], r["input"], r["output"]) for r in first] == [("Hi", "", "Hello")]
    assert first[0]["meta"]["system"] == "Be brief."
    every = _read(FileSource(path=str(path), preset="sharegpt", turns="all"), path)
    assert [(r["instruction"], r["input"], r["output"]) for r in every] == [
        ("Hi", "", "Hello"), ("2+2?", "User: Hi\n\nAssistant: Hello", "4")]
    msgs = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Teal."}]
    pq.write_table(pa.Table.from_pylist([{"messages": msgs}]), tmp_path / "m.parquet")
    out = _read(FileSource(path=str(tmp_path / "m.parquet"), preset="messages"), tmp_path / "m.parquet")
    assert [(r["instruction"], r["output"], r["template"]) for r in out] == [("Name a colour.", "Teal.", "messages")]


def test_columns_preset_arrow_and_folder(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    table = pa.Table.from_pylist([{"q": "Capital of Peru?", "a": "Lima"}, {"q": "Capital of Chad?", "a": "N'Djamena"}])
    with pa.ipc.new_file(folder / "a.arrow", table.schema) as w:
        w.write_table(table)
    pq.write_table(table, folder / "b.parquet")
    cfg = FileSource(path=str(folder), preset="columns", columns={"instruction": "q", "output": "a"}, task="geo")
    out = _read(cfg, folder)
    assert [r["output"] for r in out] == ["Lima", "N'Djamena"] * 2 and {r["task"] for r in out} == {"geo"}
    assert [r["meta"]["row"] for r in out[:2]] == ["row 0", "row 1"]
    assert len(_read(FileSource(path=str(folder), preset="columns", columns={"instruction": "q", "output": "a"},
                                max_rows=3), folder)) == 3


def test_datasets_load_dataset_offline_from_local_folder_and_saved_dataset(tmp_path):
    import datasets

    folder = tmp_path / "hub_like"
    folder.mkdir()
    _jsonl(folder / "train.jsonl", [{"instruction": "Say hi.", "input": "", "output": "hi"}])
    out = _read(FileSource(dataset=str(folder)))
    assert [(r["instruction"], r["output"]) for r in out] == [("Say hi.", "hi")]
    assert out[0]["source"] == f"hf:{folder}" and out[0]["task"] == "hub_like"
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"instruction": "x", "output": "y"}])}).save_to_disk(saved)
    assert [r["output"] for r in _read(FileSource(dataset=str(saved)))] == ["y"]
    with pytest.raises(InputError, match="cannot load dataset"):
        _read(FileSource(dataset=str(tmp_path / "no-such-dataset-here")))


@pytest.mark.parametrize("row, where", [
    ({"input": "x", "output": "y"}, "field 'instruction': missing"),
    ({"instruction": ["a"], "output": "y"}, "field 'instruction': expected a string, got list"),
    ({"instruction": "a"}, "field 'output': missing"),
    ({"instruction": " ", "output": "y"}, "field 'instruction': empty"),
])
def test_bad_tabular_rows(tmp_path, row, where):
    path = _jsonl(tmp_path / "a.jsonl", [{"instruction": "ok", "output": "fine"}, row])
    with pytest.raises(InputError) as e:
        _read(FileSource(path=str(path)), path)
    assert str(e.value) == f"{path}:2: {where}"
    lenient = BadInput(strict=False)
    assert len(list(read_file_source(FileSource(path=str(path)), path, lenient))) == 1
    assert where in lenient.rows[0]["reason"]


def test_bad_conversations(tmp_path):
    path = tmp_path / "c.jsonl"
    _jsonl(path, [{"conversations": [{"from": "robot", "value": "x"}]}, {"conversations": [{"from": "gpt", "value": "a"}]}])
    lenient = BadInput(strict=False)
    assert list(read_file_source(FileSource(path=str(path), preset="sharegpt"), path, lenient)) == []
    assert "field 'conversations[0].from': unknown role 'robot'" in lenient.rows[0]["reason"]
    assert "no user turn followed by an assistant reply" in lenient.rows[1]["reason"]


def test_unsupported_and_bad_json_files(tmp_path):
    with pytest.raises(InputError, match="unsupported file type .txt"):
        list(read_rows(tmp_path / "x.txt", BadInput(strict=True)))
    bad = tmp_path / "x.json"
    bad.write_text('[{"a": 1},\n {"a": }]', encoding="utf-8")
    with pytest.raises(InputError, match=r"x\.json:2: malformed JSON"):
        list(read_rows(bad, BadInput(strict=True)))
    notlist = tmp_path / "y.json"
    notlist.write_text('[{"a": 1}, 5]', encoding="utf-8")
    with pytest.raises(InputError, match=r"y\.json: field '\[1\]': expected an object"):
        list(read_rows(notlist, BadInput(strict=True)))


@pytest.mark.parametrize("files, message", [
    ([{"path": "a.jsonl", "preset": "oasst"}], "ingest.files.0.preset: Input should be 'alpaca'"),
    ([{"preset": "alpaca"}], "give exactly one of path"),
    ([{"path": "a.csv", "preset": "columns"}], "needs columns.instruction"),
    ([{"path": "a.csv", "columns": {"prompt": "q"}}], "ingest.files.0.columns.prompt"),
])
def test_bad_file_config_names_the_key(files, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"ingest": {"files": files}}, source="c.yaml")
