"""Run directory and stage cache: skip on same fingerprint, atomic shards, crash safety, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instructforge.records import Example, PreferencePair, example_id, rejected_schema
from instructforge.runs import RunDir, ShardWriter, read_table


def _rows(n: int, start: int = 0) -> list[dict]:
    return [Example(instruction=f"task {i}", output=str(i), task="t").model_dump() for i in range(start, start + n)]


def test_example_id_is_stable_content_hash():
    a = Example(instruction="Add 2 and 3.", output="5", task="math")
    b = Example(instruction="Add 2 and 3.", output="5", task="math", meta={"x": "y"})
    assert a.id == b.id == example_id("math", "Add 2 and 3.", "", "5")
    assert Example(instruction="Add 2 and 3", output="5", task="math").id != a.id
    # field boundaries matter: ("ab", "c") and ("a", "bc") differ
    assert example_id("t", "ab", "c", "") != example_id("t", "a", "bc", "")


def test_example_id_does_not_change_between_runs():
    # a literal, so a change to the hashing scheme (which would break cross-run ids) fails here
    assert example_id("", "hi", "", "x") == Example(instruction="hi", output="x").id == "f269efa374a070b3"


def test_arrow_schemas_are_derived_from_models():
    s = Example.arrow_schema()
    assert s.names == ["id", "instruction", "input", "output", "task", "source", "template", "meta"]
    assert s.field("meta").type == pa.map_(pa.string(), pa.string())
    assert PreferencePair.arrow_schema().field("scores").type == pa.map_(pa.string(), pa.float64())
    assert rejected_schema(s).names[-5:] == ["stage", "filter", "reason", "evidence", "event_id"]


def test_stage_runs_once_then_is_cached(tmp_path):
    run = RunDir(tmp_path / "r")
    calls = []

    def stage(ctx):
        calls.append(1)
        rows = _rows(5)
        ctx.write(rows[:3])
        ctx.reject(rows[3:], filter="too_short", reason="fewer than 3 words",
                   evidence=[{"words": "2"}, {"words": "1"}])
        return {"extra": 7}

    out, skipped = run.run_stage(1, "ingest", config={"a": 1}, inputs=[], code="v1", fn=stage)
    assert not skipped and len(calls) == 1
    assert out.table().num_rows == 3
    rej = read_table(out.rejected).to_pylist()
    assert [r["reason"] for r in rej] == ["fewer than 3 words"] * 2
    assert [dict(r["evidence"]) for r in rej] == [{"words": "2"}, {"words": "1"}]
    assert {r["stage"] for r in rej} == {"ingest"}
    stats = out.stats()
    assert stats["rows_out"] == 3 and stats["rows_rejected"] == 2 and stats["extra"] == 7

    out2, skipped = run.run_stage(1, "ingest", config={"a": 1}, inputs=[], code="v1", fn=stage)
    assert skipped and len(calls) == 1 and out2.fingerprint == out.fingerprint

    # a config change, a code change, or an upstream change reruns it
    run.run_stage(1, "ingest", config={"a": 2}, inputs=[], code="v1", fn=stage)
    run.run_stage(1, "ingest", config={"a": 2}, inputs=[], code="v2", fn=stage)
    assert len(calls) == 3
    down = lambda ctx: ctx.write(ctx.inputs[0].table())
    first, _ = run.run_stage(2, "filter", config={}, inputs=[out], code="v1", fn=down)
    upstream, _ = run.run_stage(1, "ingest", config={"a": 3}, inputs=[], code="v1", fn=stage)
    second, skipped = run.run_stage(2, "filter", config={}, inputs=[upstream], code="v1", fn=down)
    assert not skipped and second.fingerprint != first.fingerprint


def test_crashed_stage_is_never_taken_as_done(tmp_path):
    run = RunDir(tmp_path / "r")

    def crashing(ctx):
        ctx.write(_rows(3))
        ctx.out.flush()
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run.run_stage(1, "ingest", config={}, inputs=[], code="v", fn=crashing)
    assert run.finished(1, "ingest") is None
    assert not run.stage_path(1, "ingest").exists()

    # a non-resumable stage starts over: no rows from the crashed attempt leak in
    out, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="v", fn=lambda ctx: ctx.write(_rows(2)))
    assert out.table().num_rows == 2


def test_resumable_stage_keeps_checkpointed_shards(tmp_path):
    run = RunDir(tmp_path / "r")
    attempts = []

    def generate(ctx):
        attempts.append(ctx.rows_out)
        done = ctx.rows_out  # rows already checkpointed by an earlier attempt
        for start in range(done, 6, 2):
            ctx.write(_rows(2, start))
            ctx.checkpoint()
            if start == 2 and len(attempts) == 1:
                raise KeyboardInterrupt  # killed after two checkpoints

    with pytest.raises(KeyboardInterrupt):
        run.run_stage(2, "generate", config={}, inputs=[], code="v", fn=generate, resumable=True)
    out, _ = run.run_stage(2, "generate", config={}, inputs=[], code="v", fn=generate, resumable=True)
    assert attempts == [0, 4]
    ids = out.table().column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 6


def test_crash_between_completion_and_rename_is_promoted(tmp_path):
    run = RunDir(tmp_path / "r")
    out, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="v", fn=lambda ctx: ctx.write(_rows(2)))
    work = run.root / f".01-ingest.{out.fingerprint}.work"
    out.path.rename(work)  # as if the process died right before the final rename
    again, skipped = run.run_stage(1, "ingest", config={}, inputs=[], code="v",
                                   fn=lambda ctx: pytest.fail("must not rerun"))
    assert again.table().num_rows == 2 and not work.exists() and not skipped


def test_shards_are_written_atomically(tmp_path, monkeypatch):
    writer = ShardWriter(tmp_path / "data", Example.arrow_schema(), shard_rows=2)
    writer.write(_rows(2))
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["part-00000.parquet"]

    def boom(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half")  # a partial file at the temporary name
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        writer.write(_rows(2, 2))
    monkeypatch.undo()
    assert read_table(tmp_path / "data").num_rows == 2  # the half-written shard is invisible
    assert sorted(p.name for p in (tmp_path / "data").glob("part-*")) == ["part-00000.parquet"]


def test_empty_stage_has_typed_empty_shard(tmp_path):
    run = RunDir(tmp_path / "r")
    out, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="v", fn=lambda ctx: None)
    assert out.table().schema.equals(Example.arrow_schema())
    assert read_table(out.rejected).num_rows == 0
    manifest = json.loads((out.path / "manifest.json").read_text())
    assert manifest["fingerprint"] == out.fingerprint and manifest["stage"] == "ingest"
