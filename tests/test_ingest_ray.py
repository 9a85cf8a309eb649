"""Ingest through the executor: the shard planner (without Ray), and the same ingest output on
`local` and `ray` for sharded JSONL and Parquet files, a folder, a collection, strict mode and an
incremental run over a grown file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instructforge.config import parse_config
from instructforge.errors import InputError
from instructforge.ingest import shards
from instructforge.ingest import stage as ingest_stage
from instructforge.ingest.readers import READ_FROM, BadInput, read_rows
from instructforge.ingest.shards import Shard, line_spans, plan_source, read_shard
from instructforge.pipeline import BY_NAME, Pipeline
from instructforge.runs import read_table


def _row(i: int) -> dict[str, str]:
    return {"instruction": f"Describe item number {i} in one sentence.", "input": "x" * (i % 7),
            "output": f"Item {i} is a small thing."}


def _jsonl(path: Path, n: int, bad: dict[int, str]) -> Path:
    """`n` lines, line k (1-based) a good row unless `bad` gives its text."""
    path.write_text("".join(bad.get(k, json.dumps(_row(k))) + "\n" for k in range(1, n + 1)), encoding="utf-8")
    return path


BAD_LINES = {40: "{not json", 100: "", 101: "   ", 150: json.dumps({**_row(150), "instruction": "a\u0000b"}),
             220: "[1, 2]", 260: "", 280: json.dumps({"instruction": "No output here."})}


# --- the planner, without Ray ------------------------------------------------------------------------

def _check_spans(data: bytes, spans: list[tuple[int, int, int]], start: int, end: int) -> None:
    assert spans[0][0] == start and spans[-1][2] == end
    for (first, before, stop), nxt in zip(spans, spans[1:] + [(end, None, None)], strict=True):
        assert stop == nxt[0] and first < stop  # contiguous, none empty: every byte once
        assert first == start or data[first - 1:first] == b"\n"  # from a line start
        assert before == data.count(b"\n", 0, first)


@pytest.mark.parametrize("scan", [16, 1 << 22])  # cuts across read chunks, and within one
def test_line_spans_cover_the_range_once_from_line_starts(tmp_path, monkeypatch, scan):
    monkeypatch.setattr(shards, "SCAN_BYTES", scan)
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(b"\r\n" if i % 9 == 0 else (b"{}" * (i % 13) + b"\n") for i in range(200)) + b"{}")
    data = path.read_bytes()
    for size in (1, 5, 64, 700, len(data) + 1):
        spans = line_spans(path, 0, 0, len(data), size)
        _check_spans(data, spans, 0, len(data))
        assert len(spans) > 1 or size > len(data) // 2
    middle = data.index(b"\n", 300) + 1
    _check_spans(data, line_spans(path, middle, data.count(b"\n", 0, middle), len(data) - 2, 50), middle,
                 len(data) - 2)


def test_plan_honours_read_from_skip_and_span(tmp_path, monkeypatch):
    path = _jsonl(tmp_path / "a.jsonl", 300, {})
    data = path.read_bytes()
    monkeypatch.setattr(shards, "SHARD_BYTES", len(data) // 5)
    whole = plan_source(path)
    assert len(whole) >= 3 and all(s.part for s in whole)
    _check_spans(data, [s.span for s in whole], 0, len(data))
    mark = data.index(b"\n", len(data) // 2) + 1
    lines = data.count(b"\n", 0, mark)
    token = READ_FROM.set({str(path): (mark, lines, len(data) - 10), str(tmp_path / "b.csv"): "skip"})
    try:
        grown = plan_source(path)
        # first n rows: one item, the span in it (workers do not see READ_FROM)
        assert plan_source(path, max_rows=10) == [Shard(path, (mark, lines, len(data) - 10))]
        assert plan_source(tmp_path / "b.csv") == []  # not even looked at: the file does not exist
        csv_span = (0, 0, 5)
        READ_FROM.set({str(tmp_path / "c.csv"): csv_span})
        (tmp_path / "c.csv").write_text("a,b\n1,2\n" * 100)
        assert plan_source(tmp_path / "c.csv") == [Shard(tmp_path / "c.csv", csv_span)]  # CSV: never split
    finally:
        READ_FROM.reset(token)
    assert len(grown) >= 2
    _check_spans(data, [s.span for s in grown], mark, len(data) - 10)
    assert plan_source(path, max_rows=10) == [Shard(path)]
    assert plan_source(tmp_path, max_rows=10) == [Shard(tmp_path, source=True)]  # a folder: read_rows reads it


def _read(plan: list[Shard]) -> tuple[list, list]:
    """(line, field, data) of every row the shards give, and their bad rows (record mode)."""
    bad = BadInput(strict=False)
    return [(r.line, r.field, r.data) for s in plan for r in read_shard(s, bad)], bad.rows


def test_shards_read_what_the_whole_file_reads(tmp_path, monkeypatch):
    """JSONL cut so that its first shard is only blank lines (not an "empty file"), Parquet cut into
    row groups, a folder with an unsupported file: the shards' rows and bad rows, in order, are
    those of reading each source whole."""
    jsonl = _jsonl(tmp_path / "a.jsonl", 300, {**BAD_LINES, **{k: "" for k in range(1, 31)}})
    table = pa.Table.from_pylist([_row(i) if i != 70 else {**_row(i), "output": "bad\x07"} for i in range(100)])
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=10)
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.csv").write_text('instruction,output\n"Two\nlines",ok\n', encoding="utf-8")
    (folder / "b.txt").write_text("notes")
    _jsonl(folder / "c.jsonl", 5, {3: "{"})
    monkeypatch.setattr(shards, "SHARD_BYTES", 20)
    assert not jsonl.read_bytes()[:plan_source(jsonl)[0].span[2]].strip()
    for source in (jsonl, tmp_path / "p.parquet", folder):
        plan = plan_source(source)
        assert len(plan) >= 3
        whole = BadInput(strict=False)
        assert _read(plan) == ([(r.line, r.field, r.data) for r in read_rows(source, whole)], whole.rows)
    names = [s.path.name for s in plan_source(folder)]  # sorted; a CSV whole, a JSONL split
    assert names[:2] == ["a.csv", "b.txt"] and set(names[2:]) == {"c.jsonl"} and len(names) > 3
    assert plan_source(tmp_path / "p.parquet")[2].rows == (20, 30)
    assert _read(plan_source(jsonl))[1][0]["evidence"] == {"file": str(jsonl), "line": "40"}
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n  \n" * 100)  # many shard sizes of nothing: still one "empty file", never skipped
    assert len(plan_source(blank)) == 1
    assert [r["reason"] for r in _read(plan_source(blank))[1]] == [f"{blank}: empty file"]


# --- local and Ray ----------------------------------------------------------------------------------

def _sources(tmp_path: Path) -> dict:
    jsonl = _jsonl(tmp_path / "big.jsonl", 300, BAD_LINES)
    rows = [_row(i) for i in range(120)]
    rows[70] = {**rows[70], "instruction": "bell \x07 here"}
    rows[95] = {**rows[95], "output": None}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "groups.parquet", row_group_size=30)
    folder = tmp_path / "mixed"
    folder.mkdir(exist_ok=True)
    (folder / "a.csv").write_text('instruction,input,output\n"Join\nthese",,ok\nOne more,,"cells",x\nLast,,z\n',
                                  encoding="utf-8")
    (folder / "b.txt").write_text("stray notes")
    sni = tmp_path / "sni"
    sni.mkdir(exist_ok=True)
    (sni / "task001_a.json").write_text(json.dumps({"Definition": ["Answer."], "Instances": [
        {"id": "a-0", "input": "q1", "output": ["a1"]}, {"input": "bad\u0000", "output": ["x"]}]}))
    (sni / "task002_b.json").write_text(json.dumps({"Definition": "Say it.",
                                                    "Instances": [{"input": "q", "output": "o"}]}))
    return {"collections": [{"path": "bundled:flan_mini.yaml"}],
            "sni": [{"path": str(sni)}],
            "files": [{"path": str(jsonl)}, {"path": str(tmp_path / "groups.parquet")}, {"path": str(folder)}]}


def _ingest(tmp_path: Path, executor: str, ingest: dict, **run):
    cfg = {"run": {"name": executor, "root": str(tmp_path / "runs"), "executor": executor, **run}, "ingest": ingest}
    out, _ = Pipeline(parse_config(cfg, base_dir=tmp_path)).run_stage(BY_NAME["ingest"])
    return out


def _stats(out) -> dict:
    return {k: v for k, v in out.stats().items() if k not in ("seconds", "finished")}


def test_ingest_same_on_local_and_ray(tmp_path, ray_cluster, monkeypatch):
    ingest = _sources(tmp_path)
    monkeypatch.setattr(shards, "SHARD_BYTES", 4000)  # ~9 shards of 300 lines, 2 of 4 row groups
    monkeypatch.setattr(ingest_stage, "RENDER_ROWS", 5)  # a collection task per item
    plan = plan_source(tmp_path / "big.jsonl")
    assert len(plan) >= 3 and len(plan_source(tmp_path / "groups.parquet")) == 2
    shard_of = [sum(1 for s in plan if s.span[1] < line) for line in (40, 150, 260, 280)]
    assert len(set(shard_of)) >= 3  # the bad and blank lines fall in different shards

    local = _ingest(tmp_path, "local", ingest, on_error="record")
    on_ray = _ingest(tmp_path, "ray", ingest, on_error="record")
    assert local.table().equals(on_ray.table())
    rejected = read_table(local.rejected)
    assert rejected.equals(read_table(on_ray.rejected))
    assert _stats(local) == _stats(on_ray)
    located = [(dict(r["evidence"]).get("line") or dict(r["evidence"]).get("field"), r["reason"].split(": ", 1)[1])
               for r in rejected.to_pylist()]
    assert [loc for loc, _ in located] == ["Instances[1].input", "40", "150", "220", "280", "row 70.instruction",
                                           "row 95.output", "4", None]
    assert located[-1][1].startswith("unsupported file type in the folder")
    rows = local.table().to_pylist()
    big = [r for r in rows if r["source"] == "file:big.jsonl"]
    assert len(big) == 300 - len(BAD_LINES) and dict(big[-1]["meta"])["row"] == "300"
    assert [dict(r["meta"])["row"] for r in rows if r["source"] == "file:mixed"] == ["3", "5"]
    assert len({r["source"] for r in rows}) == 6  # sni: one source per task file


def test_strict_mode_on_ray_raises_the_local_error(tmp_path, ray_cluster, monkeypatch):
    ingest = {**_sources(tmp_path), "sni": []}
    ingest["files"] = ingest["files"][:1]
    _jsonl(tmp_path / "big.jsonl", 300, {150: BAD_LINES[150], 220: BAD_LINES[220]})
    monkeypatch.setattr(shards, "SHARD_BYTES", (tmp_path / "big.jsonl").stat().st_size // 4)
    errors = []
    for executor in ("local", "ray"):
        with pytest.raises(InputError) as e:
            _ingest(tmp_path, executor, ingest)
        errors.append(e.value)
    assert type(errors[1]) is InputError and str(errors[0]) == str(errors[1])
    assert str(errors[1]) == (f"{tmp_path / 'big.jsonl'}:150: field 'instruction': control character U+0000 "
                              "at character 1")


def test_incremental_run_on_ray_reads_only_the_new_lines(tmp_path, ray_cluster, monkeypatch):
    path = _jsonl(tmp_path / "grows.jsonl", 100, {})
    old = path.stat().st_size
    ingest = {"files": [{"path": str(path), "task": "t"}]}
    for executor in ("local", "ray"):
        _ingest(tmp_path, executor, ingest, incremental=True, on_error="record")
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(BAD_LINES.get(k, json.dumps(_row(k))) + "\n" for k in range(101, 301)))
    monkeypatch.setattr(shards, "SHARD_BYTES", (path.stat().st_size - old) // 3)
    runs = [_ingest(tmp_path, executor, ingest, incremental=True, on_error="record") for executor in ("local", "ray")]
    new = read_table(runs[1].path / "data", versions=[2])
    assert new.equals(read_table(runs[0].path / "data", versions=[2]))
    assert read_table(runs[1].path / "rejected", versions=[2]).equals(read_table(runs[0].path / "rejected",
                                                                                   versions=[2]))
    good = 200 - sum(1 for k in BAD_LINES if k > 100)
    stats = runs[1].stats()
    assert stats["files_read_from"] == {str(path): old}
    assert stats["sources"][f"file:{path.name}"]["rows"] == good  # nothing before the old end was read
    assert [dict(m)["row"] for m in new.column("meta").to_pylist()][:2] == ["102", "103"]
    assert new.num_rows == good
