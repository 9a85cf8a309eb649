"""Bad input, class by class: every case is a clear error naming file, line and field (strict) or a
recorded rejection (record), never a traceback. Classes: encodings, odd characters, compression,
pathological structure, empty turns, ambiguous configs, wrong types, empty files, mixed folders,
huge lines, Windows line endings; the end-to-end cases write the rejected rows to Parquet."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from instructforge.config import load_config
from instructforge.errors import ConfigError, InputError
from instructforge.filters.config import DatasetSource
from instructforge.filters.sources import read_texts
from instructforge.ingest.collection import load_collection
from instructforge.ingest.config import FileSource, SniSource
from instructforge.ingest.readers import BadInput, read_rows
from instructforge.ingest.seeds import read_seeds
from instructforge.ingest.sni import read_sni
from instructforge.ingest.tabular import read_file_source
from instructforge.pipeline import BY_NAME, Pipeline
from instructforge.runs import read_table

ROW = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
OK = {"instruction": "Greet.", "input": "", "output": "Hi"}
SEED = {"id": "s1", "name": "n", "instruction": "Do it.", "is_classification": False,
        "instances": [{"input": "", "output": "ok"}]}
COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": lambda b: zstandard.ZstdCompressor().compress(b)}


def _lines(path, lines: list, raw: bytes | None = None):
    path.write_bytes(raw if raw is not None else
                     "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode())
    return path


def _rows(path, preset="alpaca", strict=True, **cfg):
    return list(read_file_source(FileSource(path=str(path), preset=preset, **cfg), path, BadInput(strict=strict)))


def _strict_error(fn) -> str:
    with pytest.raises(InputError) as e:
        fn(BadInput(strict=True))
    return str(e.value)


def _both(fn, *fragments):
    """Strict raises an InputError holding every fragment; record keeps exactly one rejected row for it."""
    msg = _strict_error(fn)
    assert all(f in msg for f in fragments), msg
    lenient = BadInput(strict=False)
    fn(lenient)
    assert [r["reason"] for r in lenient.rows] == [msg]
    pa.Table.from_pylist(lenient.rows)  # storable: the rejected row can be written as Parquet
    return msg


# --- encodings --------------------------------------------------------------------------------------

def test_byte_order_marks_are_dropped_in_every_format(tmp_path):
    bom = b"\xef\xbb\xbf"
    plain = _rows(_lines(tmp_path / "plain.jsonl", [ROW, OK]))
    jsonl = _lines(tmp_path / "a.jsonl", [], bom + json.dumps(ROW).encode() + b"\n" + bom + json.dumps(OK).encode())
    assert [r["id"] for r in _rows(jsonl, task="plain")] == [r["id"] for r in plain]  # per line too
    js = tmp_path / "a.json"
    js.write_bytes(bom + json.dumps([ROW, OK]).encode())
    assert [r["id"] for r in _rows(js, task="plain")] == [r["id"] for r in plain]
    csv_file = tmp_path / "a.csv"
    csv_file.write_bytes(bom + b"instruction,input,output\nGreet.,,Hi\n")
    assert [r["instruction"] for r in _rows(csv_file)] == ["Greet."]  # the first column keeps its name
    coll = tmp_path / "c.yaml"
    coll.write_bytes(bom + yaml.safe_dump({"tasks": [{"name": "t", "templates": [["{w}?", "{w}"]],
                                                     "rows": [{"w": "x"}]}]}).encode())
    assert load_collection(coll, BadInput(strict=True)).tasks[0].name == "t"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(bom + b"run: {name: bom}\n")
    assert load_config(cfg).run.name == "bom"


def test_windows_line_endings_read_like_unix(tmp_path):
    unix = tmp_path / "u.csv"
    unix.write_bytes(b'instruction,output\n"Line one\nline two",yes\nGreet.,Hi\n')
    dos = tmp_path / "d.csv"
    dos.write_bytes(unix.read_bytes().replace(b"\n", b"\r\n"))
    assert [(r["instruction"], r["output"]) for r in _rows(dos)] == [
        (r["instruction"], r["output"]) for r in _rows(unix)] == [("Line one\nline two", "yes"), ("Greet.", "Hi")]
    jsonl = _lines(tmp_path / "d.jsonl", [], (json.dumps(ROW) + "\r\n" + json.dumps(OK) + "\r\n").encode())
    assert len(_rows(jsonl)) == 2
    seeds = _lines(tmp_path / "s.jsonl", [], (json.dumps(SEED) + "\r\n").encode())
    assert [r["output"] for r in read_seeds(seeds, BadInput(strict=True))] == ["ok"]
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"run:\r\n  name: dos\r\n  seed: 4\r\n")
    assert load_config(cfg).run.seed == 4


@pytest.mark.parametrize("name, data, where", [
    ("x.csv", b"instruction,output\nok,fine\ncaf\xe9,x\n", ":3: not UTF-8 text (byte 0xe9)"),
    ("x.json", b'[{"instruction": "a",\n "output": "caf\xe9"}]', ":2: not UTF-8 text"),
    ("x.jsonl", json.dumps(ROW).encode() + b'\n{"instruction": "\xff"}\n', ":2: not UTF-8 text (byte 0xff)"),
    ("x.jsonl.gz", gzip.compress(b'{"instruction": "\xc3"}\n'), ":1: not UTF-8 text (byte 0xc3)"),
])
def test_invalid_utf8_names_the_line(tmp_path, name, data, where):
    path = tmp_path / name
    path.write_bytes(data)
    _both(lambda bad: list(read_rows(path, bad)), f"{path}{where}")


# --- odd characters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("row, field, what", [
    ('{"instruction": "bad \\ud800 here", "output": "x"}', "instruction", "lone surrogate U+D800 at character 4"),
    ('{"instruction": "ok", "output": "\\udfff"}', "output", "lone surrogate U+DFFF at character 0"),
    ('{"instruction": "a\\u0000b", "output": "x"}', "instruction", "control character U+0000 at character 1"),
    ('{"instruction": "ok", "input": "\\u001b[31mred", "output": "x"}', "input", "control character U+001B"),
    ('{"instruction": "ok", "output": "x", "extra": {"deep": ["fine", "\\u0007"]}}', "extra.deep[1]",
     "control character U+0007"),
    ('{"instruction": "ok", "output": "del\\u007f"}', "output", "control character U+007F"),
])
def test_surrogates_and_control_characters_reject_the_row(tmp_path, row, field, what):
    path = _lines(tmp_path / "a.jsonl", [OK, row])
    _both(lambda bad: list(read_file_source(FileSource(path=str(path)), path, bad)),
          f"{path}:2: field '{field}': {what}")
    assert len(_rows(path, strict=False)) == 1  # the good row is kept


def test_tabs_newlines_and_form_feeds_are_text(tmp_path):
    path = _lines(tmp_path / "a.jsonl", [{"instruction": "a\tb\nc\fd\re", "output": "ok"}])
    assert _rows(path)[0]["instruction"] == "a\tb\nc\fd\re"


def test_odd_characters_in_every_reader(tmp_path):
    js = tmp_path / "a.json"
    js.write_text('[{"instruction": "fine", "output": "x"}, {"instruction": "\\ud83d", "output": "x"}]')
    _both(lambda bad: list(read_rows(js, bad)), f"{js}: field '[1].instruction': lone surrogate U+D83D")
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("instruction,output\nok,x\nnul\x00here,y\n", encoding="utf-8")
    _both(lambda bad: list(read_rows(csv_file, bad)), f"{csv_file}:3: field 'instruction': control character U+0000")
    pq.write_table(pa.table({"instruction": ["ok", "bell\x07"], "output": ["x", "y"]}), tmp_path / "a.parquet")
    _both(lambda bad: list(read_rows(tmp_path / "a.parquet", bad)), "field 'row 1.instruction': control character")
    seeds = _lines(tmp_path / "s.jsonl", [SEED, {**SEED, "id": "s2", "name": "\\ud800"}],
                   (json.dumps(SEED) + '\n{"id": "s2", "name": "a\\ud800"}\n').encode())
    _both(lambda bad: list(read_seeds(seeds, bad)), f"{seeds}:2: field 'name': lone surrogate")
    sni = tmp_path / "task1_x.json"
    sni.write_text(json.dumps({"Definition": "Answer.", "Instances": [
        {"input": "q", "output": ["a"]}, {"input": "q\x00", "output": ["b"]}]}))
    _both(lambda bad: list(read_sni(sni, SniSource(path="x"), bad)),
          f"{sni}: field 'Instances[1].input': control character U+0000")
    sni.write_text('{"Definition": "Answer \\udc00.", "Instances": [{"input": "q", "output": ["a"]}]}')
    _both(lambda bad: list(read_sni(sni, SniSource(path="x"), bad)), "field 'Definition': lone surrogate")
    coll = tmp_path / "c.yaml"
    coll.write_text('tasks:\n- name: t\n  templates: [["{w}", "{w}"]]\n  rows: [{w: "x\\ud800"}]\n')
    with pytest.raises(InputError, match=r"c\.yaml: field 'tasks\[0\]\.rows\[0\]\.w': lone surrogate"):
        load_collection(coll, BadInput(strict=False))


def test_surrogate_row_is_recorded_end_to_end(tmp_path):
    """The case that ended in a traceback when the rejected shard was written."""
    _lines(tmp_path / "a.jsonl", [ROW, '{"instruction": "x\\ud800", "output": "y"}',
                                  '{"instruction": "nul\\u0000", "output": "y"}'])
    pipe = Pipeline(_config(tmp_path, {"files": [{"path": "a.jsonl"}]}, on_error="record"))
    out, _ = pipe.run_stage(BY_NAME["ingest"])
    rejected = read_table(out.rejected).to_pylist()
    assert out.stats()["rows_out"] == 1 and len(rejected) == 2
    assert [dict(r["evidence"])["line"] for r in rejected] == ["2", "3"]
    assert "lone surrogate U+D800" in rejected[0]["reason"] and "\\ud800" in rejected[0]["input"]


# --- compression ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", list(COMPRESS))
def test_compressed_inputs_load_like_the_plain_file(tmp_path, ext):
    plain = _lines(tmp_path / "set.jsonl", [ROW, OK])
    packed = tmp_path / "packed" / f"set.jsonl{ext}"
    packed.parent.mkdir()
    packed.write_bytes(COMPRESS[ext](plain.read_bytes()))
    assert [{**r, "source": ""} for r in _rows(packed)] == [{**r, "source": ""} for r in _rows(plain)]
    csv_file = tmp_path / f"set.csv{ext}"
    csv_file.write_bytes(COMPRESS[ext](b"instruction,output\nGreet.,Hi\n"))
    assert [r["output"] for r in _rows(csv_file)] == ["Hi"]
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([ROW]), buf)
    (tmp_path / f"p.parquet{ext}").write_bytes(COMPRESS[ext](buf.getvalue().to_pybytes()))
    assert [r["output"] for r in _rows(tmp_path / f"p.parquet{ext}")] == ["5"]
    assert len(_rows(packed.parent)) == 2  # a folder of compressed files
    seeds = tmp_path / f"seeds.jsonl{ext}"
    seeds.write_bytes(COMPRESS[ext]((json.dumps(SEED) + "\n").encode()))
    assert [r["output"] for r in read_seeds(seeds, BadInput(strict=True))] == ["ok"]
    bench = DatasetSource(path=str(packed), fields=["instruction"])
    assert read_texts(bench, lambda p: p)["instruction"] == ["Add the numbers.", "Greet."]


@pytest.mark.parametrize("ext, data", [
    (".gz", gzip.compress(b'{"instruction": "a", "output": "b"}\n' * 50)[:-12]),  # truncated
    (".gz", b"plain text, not gzip"),
    (".bz2", b"BZh9 not really"),
    (".xz", b"\xfd7zXZ\x00 broken"),
    (".zst", b"(\xb5/\xfd garbage frame"),
])
def test_corrupt_archive_is_a_named_error(tmp_path, ext, data):
    path = tmp_path / f"a.jsonl{ext}"
    path.write_bytes(data)
    _both(lambda bad: list(read_rows(path, bad)), f"{path}: corrupt {ext[1:]} archive")
    with pytest.raises(InputError, match=f"corrupt {ext[1:]} archive"):
        read_texts(DatasetSource(path=str(path)), lambda p: p)


# --- pathological structure -------------------------------------------------------------------------

def test_deep_nesting_and_huge_numbers_are_named_errors(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    jsonl = _lines(tmp_path / "a.jsonl", [OK, '{"instruction": ' + deep + "}"])
    _both(lambda bad: list(read_rows(jsonl, bad)), f"{jsonl}:2: JSON nested too deeply to read")
    js = tmp_path / "a.json"
    js.write_text(deep)
    _both(lambda bad: list(read_rows(js, bad)), f"{js}: JSON nested too deeply")
    sni = tmp_path / "task1_x.json"
    sni.write_text('{"Definition": "d", "Instances": ' + deep + "}")
    _both(lambda bad: list(read_sni(sni, SniSource(path="x"), bad)), "JSON nested too deeply")
    big = _lines(tmp_path / "b.jsonl", ['{"instruction": "ok", "output": "x", "n": ' + "9" * 5000 + "}"])
    _both(lambda bad: list(read_rows(big, bad)), f"{big}:1: Exceeds the limit (4300 digits)")
    coll = tmp_path / "c.yaml"
    coll.write_text("tasks: " + "[" * 20_000 + "]" * 20_000)
    with pytest.raises(InputError, match="nested too deeply"):
        load_collection(coll, BadInput(strict=True))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("run: " + "{a: " * 20_000 + "1" + "}" * 20_000)
    with pytest.raises(ConfigError, match=r"cfg\.yaml: YAML nested too deeply"):
        load_config(cfg)


def test_deep_but_parseable_value_is_a_type_error_with_a_preview(tmp_path):
    nested = "[" * 900 + '"x"' + "]" * 900
    path = _lines(tmp_path / "a.jsonl", ['{"instruction": ' + nested + ', "output": "y"}'])
    msg = _both(lambda bad: list(read_file_source(FileSource(path=str(path)), path, bad)),
                "field 'instruction': expected a string, got list")
    assert msg.startswith(f"{path}:1:")


# --- empty turns ------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, role, text, user, assistant", [
    ("sharegpt", "from", "value", "human", "gpt"),
    ("messages", "role", "content", "user", "assistant"),
])
@pytest.mark.parametrize("turns", ["first", "all"])
def test_empty_turns_are_rejected_in_every_conversation_preset(tmp_path, preset, role, text, user, assistant,
                                                                turns):
    column = {"sharegpt": "conversations", "messages": "messages"}[preset]

    def conv(*pairs):
        return {column: [{role: r, text: t} for r, t in pairs]}

    rows = [conv((user, "Hi"), (assistant, "Hello")),
            conv((user, ""), (assistant, "Hello")),  # empty user turn
            conv((user, "Hi"), (assistant, "  \n")),  # whitespace-only reply
            conv(("system", ""), (user, "Hi"), (assistant, "Hello"), (user, "\t"), (assistant, "ok"))]
    path = _lines(tmp_path / "c.jsonl", rows)
    lenient = BadInput(strict=False)
    kept = list(read_file_source(FileSource(path=str(path), preset=preset, turns=turns), path, lenient))
    assert [r["meta"]["row"] for r in kept] == ["1"]
    assert [r["reason"] for r in lenient.rows] == [
        f"{path}:2: field '{column}[0].{text}': empty turn",
        f"{path}:3: field '{column}[1].{text}': empty turn",
        f"{path}:4: field '{column}[3].{text}': empty turn"]
    assert "system" not in kept[0]["meta"]  # an empty system turn is no system prompt
    with pytest.raises(InputError, match=rf"c\.jsonl:2: field '{column}\[0\]\.{text}': empty turn"):
        _rows(path, preset=preset)


def test_system_prompt_of_the_wrong_type_is_named(tmp_path):
    path = _lines(tmp_path / "c.jsonl", [{"system": ["x"], "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}])
    with pytest.raises(InputError, match=r"c\.jsonl:1: field 'system': expected a string, got list"):
        _rows(path, preset="messages")


# --- ambiguous configs and collections ---------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "c.yaml: empty config file"),
    ("# only a comment\n\n", "c.yaml: empty config file"),
    ("run: {name: a}\nrun: {name: b}\n", "c.yaml:2: invalid YAML: duplicate key 'run' (first on line 1)"),
    ("run:\n  name: a\n  seed: 1\n  seed: 2\n", "c.yaml:4: invalid YAML: duplicate key 'seed' (first on line 3)"),
    ("ingest:\n  files:\n  - path: a.jsonl\n    path: b.jsonl\n", "c.yaml:4: invalid YAML: duplicate key 'path'"),
    ("run: {name: a, name: b}\n", "c.yaml:1: invalid YAML: duplicate key 'name'"),
])
def test_ambiguous_config_files_are_errors(tmp_path, text, message):
    _assert_config_error(tmp_path, text, message)


def _assert_config_error(tmp_path, text: str, message: str) -> None:
    """Loading `text` as c.yaml fails with a ConfigError that starts with file:line: message."""
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{tmp_path}/{message}"), str(e.value)


def test_yaml_merge_keys_may_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  <<: {name: a, seed: 1}\n  seed: 2\n", encoding="utf-8")
    assert load_config(path).run.seed == 2


@pytest.mark.parametrize("name, text, message", [
    ("c.yaml", "tasks:\n- name: a\n  name: b\n  templates: [['{w}', '{w}']]\n  rows: [{w: x}]\n",
     "c.yaml:3: invalid YAML: duplicate key 'name'"),
    ("c.yaml", "tasks:\n- name: a\n  templates: [['{w}', '{w}']]\n  rows: [{w: x, w: y}]\n",
     "c.yaml:4: invalid YAML: duplicate key 'w'"),
    ("c.json", '{"tasks": [{"name": "a", "name": "b", "templates": [["{w}", "{w}"]], "rows": [{"w": "x"}]}]}',
     "c.json: duplicate key 'name'"),
    ("c.yaml", "", "c.yaml: empty file"),
])
def test_ambiguous_collections_are_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_collection(path, BadInput(strict=False))
    assert str(e.value).startswith(f"{tmp_path}/{message}")


def test_duplicate_csv_column_is_named(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("instruction,output,output\nq,a,b\n", encoding="utf-8")
    _both(lambda bad: list(read_rows(path, bad)), f"{path}:1: field 'output': duplicate column in the header")


@pytest.mark.parametrize("text, where", [
    ('instruction,output\nok,fine\n"unclosed,x\nnext,y\n', ":3: malformed CSV: unexpected end of data"),
    ('instruction,output\nok,fine\n"a"b,x\n', ":3: malformed CSV: ',' expected after '\"'"),
])
def test_broken_csv_quoting_is_named_not_swallowed(tmp_path, text, where):
    path = tmp_path / "a.csv"
    path.write_text(text, encoding="utf-8")
    _both(lambda bad: list(read_rows(path, bad)), f"{path}{where}")


# --- wrong types at every level ----------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("run: 5\n", "c.yaml:1: run: Input should be a valid dictionary"),
    ("ingest: [a]\n", "c.yaml:1: ingest: Input should be a valid dictionary"),
    ("ingest:\n  files: {path: a}\n", "c.yaml:2: ingest.files: Input should be a valid list"),
    ("ingest:\n  files:\n  - preset: alpaca\n    path: 5\n", "c.yaml:4: ingest.files.0.path: Input should be"),
    ("run:\n  name: x\n  seed: [1]\n", "c.yaml:3: run.seed: Input should be a valid integer"),
])
def test_config_wrong_types_name_line_and_key(tmp_path, text, message):
    _assert_config_error(tmp_path, text, message)


@pytest.mark.parametrize("doc, message", [
    ({"tasks": {"name": "t"}}, "field 'tasks': a collection is a mapping with a non-empty `tasks` list"),
    ({"tasks": [["t"]]}, "field 'tasks[0]': a task is a mapping"),
    ({"tasks": [{"name": 5, "templates": [["a", "b"]], "rows": [{}]}]}, "field 'tasks[0].name'"),
    ({"tasks": [{"name": "t", "templates": "x", "rows": [{}]}]}, "field 'tasks[0].templates'"),
    ({"tasks": [{"name": "t", "templates": [["{w}", 3]], "rows": [{"w": "x"}]}]}, "must be strings"),
    ({"tasks": [{"name": "t", "templates": [["{w}", "{w}"]], "rows": {"w": "x"}}]}, "field 'tasks[0].rows'"),
])
def test_collection_wrong_types(tmp_path, doc, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(InputError, match="c.yaml") as e:
        load_collection(path, BadInput(strict=True))
    assert message in str(e.value)


@pytest.mark.parametrize("value, got", [(5, "int"), (2.5, "float"), (True, "bool"), ({"a": "b"}, "dict"),
                                        (["a"], "list")])
def test_row_wrong_types(tmp_path, value, got):
    path = _lines(tmp_path / "a.jsonl", [OK, {**ROW, "output": value}])
    _both(lambda bad: list(read_file_source(FileSource(path=str(path)), path, bad)),
          f"{path}:2: field 'output': expected a string, got {got}")
    pq.write_table(pa.Table.from_pylist([{"instruction": value, "output": "x"}]), tmp_path / "p.parquet")
    _both(lambda bad: list(read_file_source(FileSource(path=str(tmp_path / "p.parquet")), tmp_path / "p.parquet",
                                            bad)), f"field 'row 0.instruction': expected a string, got {got}")


# --- empty files in every format ---------------------------------------------------------------------

def _empty_parquet(path):
    pq.write_table(pa.table({"instruction": pa.array([], pa.string())}), path)


def _empty_arrow(path):
    table = pa.table({"instruction": pa.array([], pa.string())})
    with pa.ipc.new_file(path, table.schema) as w:
        w.write_table(table)


@pytest.mark.parametrize("name, write, message", [
    ("a.jsonl", lambda p: p.write_text("\n \n"), "empty file"),
    ("a.jsonl", lambda p: p.write_bytes(b"\xef\xbb\xbf\n"), "empty file"),
    ("a.json", lambda p: p.write_text(""), "empty file"),
    ("a.json", lambda p: p.write_text("[]"), "no rows (an empty array)"),
    ("a.csv", lambda p: p.write_text(""), "empty file"),
    ("a.csv", lambda p: p.write_text("instruction,output\n"), "no rows (only a header)"),
    ("a.parquet", _empty_parquet, "empty file"),
    ("a.arrow", _empty_arrow, "empty file"),
    ("a.jsonl.gz", lambda p: p.write_bytes(gzip.compress(b"")), "empty file"),
])
def test_empty_files_in_every_format(tmp_path, name, write, message):
    path = tmp_path / name
    write(path)
    _both(lambda bad: list(read_rows(path, bad)), f"{path}: {message}")


def test_empty_seeds_sni_collection_and_folder(tmp_path):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text("")
    _both(lambda bad: list(read_seeds(seeds, bad)), f"{seeds}: empty file")
    sni = tmp_path / "task1_x.json"
    sni.write_text("  ")
    _both(lambda bad: list(read_sni(sni, SniSource(path="x"), bad)), f"{sni}: empty file")
    with pytest.raises(InputError, match="no task .json files in this folder"):
        list(read_sni(_mkdir(tmp_path / "nosni"), SniSource(path="x"), BadInput(strict=True)))
    with pytest.raises(InputError, match="no .jsonl, .json, .csv, .parquet, .arrow .* files in this folder"):
        list(read_rows(_mkdir(tmp_path / "empty"), BadInput(strict=False)))


def _mkdir(path):
    path.mkdir()
    return path


# --- folders with mixed files ------------------------------------------------------------------------

def test_mixed_folder_reads_every_format_and_names_stray_files(tmp_path):
    folder = _mkdir(tmp_path / "set")
    _lines(folder / "a.jsonl", [ROW])
    (folder / "b.csv").write_text("instruction,output\nGreet.,Hi\n")
    (_mkdir(folder / "sub") / "c.json.gz").write_bytes(gzip.compress(json.dumps([OK]).encode()))
    (folder / "notes.txt").write_text("not data")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored
    _mkdir(folder / ".cache")
    (folder / ".cache" / "x.jsonl").write_text("{broken")
    msg = _both(lambda bad: list(read_rows(folder, bad)), f"{folder}/notes.txt: unsupported file type")
    assert "not read" in msg
    assert [r["output"] for r in _rows(folder, strict=False)] == ["5", "Hi", "Hi"]


# --- huge lines --------------------------------------------------------------------------------------

def test_huge_cells_and_lines_are_read(tmp_path):
    long = "word " * 100_000  # 500 KB: beyond the csv module's default field limit
    csv_file = tmp_path / "a.csv"
    csv_file.write_text(f'instruction,output\n"{long}",x\n', encoding="utf-8")
    assert _rows(csv_file)[0]["instruction"] == long
    jsonl = _lines(tmp_path / "a.jsonl", [{"instruction": "x" * 5_000_000, "output": "y"}])
    assert len(_rows(jsonl)[0]["instruction"]) == 5_000_000


# --- end to end: no traceback, the documented exit code -----------------------------------------------

def _config(tmp_path, ingest, on_error="strict"):
    from instructforge.config import parse_config

    return parse_config({"run": {"name": "t", "root": str(tmp_path / "runs"), "on_error": on_error},
                         "ingest": ingest}, base_dir=tmp_path)


def test_cli_bad_input_is_one_line_with_exit_code(tmp_path):
    _lines(tmp_path / "a.jsonl", [ROW, '{"instruction": "x\\ud800", "output": "y"}'])
    (tmp_path / "b.jsonl.gz").write_bytes(b"garbage")
    cfg = tmp_path / "c.yaml"
    runs = tmp_path / "runs"
    for files, expected in ((["a.jsonl"], "a.jsonl:2: field 'instruction': lone surrogate U+D800"),
                            (["b.jsonl.gz"], "b.jsonl.gz: corrupt gz archive")):
        cfg.write_text(yaml.safe_dump({"run": {"root": str(runs)}, "ingest": {"files": [{"path": f} for f in files]}}))
        proc = subprocess.run([sys.executable, "-m", "instructforge.cli", "ingest", str(cfg)], capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
        assert expected in "".join(proc.stderr.split("\n"))


@pytest.mark.parametrize("item, message", [("run.seed=[", "invalid YAML"), ("run.seed", "expected KEY=VALUE"),
                                           ("run.seed={a: 1, a: 2}", "duplicate key 'a'")])
def test_bad_set_override_is_a_config_error(item, message):
    from instructforge.cli import _overrides

    with pytest.raises(ConfigError, match=message):
        _overrides([item])


def test_yaml_alias_bomb_is_read_in_linear_time(tmp_path):
    """A "billion laughs" row: 9**9 strings by reference; the text check visits each list once."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
    path = tmp_path / "c.yaml"
    path.write_text("tasks:\n- name: t\n  templates: [['{w}', '{w}']]\n  rows:\n  - {w: ok, " + ", ".join(levels)
                    + "}\n", encoding="utf-8")
    collection = load_collection(path, BadInput(strict=True))
    assert collection.tasks[0].rows[0].data["w"] == "ok"


def test_rejected_alias_bomb_row_is_previewed_in_part(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
    path = tmp_path / "c.yaml"
    path.write_text("tasks:\n- name: t\n  options_field: opts\n  templates: [['{w}{options}', '{w}']]\n  rows:\n"
                    "  - {w: ok, " + ", ".join(levels) + "}\n", encoding="utf-8")
    from instructforge.ingest.collection import render_task
    from instructforge.ingest.config import RenderConfig

    bad = BadInput(strict=False)
    collection = load_collection(path, bad)
    assert list(render_task(collection.tasks[0], collection, RenderConfig(), 0, bad)) == []
    assert "field 'tasks[0].rows[0].opts': expected a non-empty list of options" in bad.rows[0]["reason"]
    assert bad.rows[0]["input"].startswith('{"w": "ok", "a": ["x"') and len(bad.rows[0]["input"]) <= 2000
