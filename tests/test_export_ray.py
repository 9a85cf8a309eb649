"""The export's Hub shards, rendered and written as Ray tasks, are the local executor's files byte
for byte (SFT formats, the chat-template `text`, preference pairs), also when a Ray worker is
killed while writing a shard; and every shard holds the rows it should.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_export import ScriptedEngine
from test_ray import files

from instructforge.config import parse_config
from instructforge.export import shards
from instructforge.export import stage as export_stage
from instructforge.export.chat_templates import load_chat_template
from instructforge.records import Example
from instructforge.runs import RunDir, StageOutput, read_table

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers do not import tests/

EXAMPLES = [Example(instruction=f"Name the word number {i}.", input="in French" if i % 2 else "",
                    output=f"mot {i}", task=f"task{i % 3}", source="seeds:seed_tasks.jsonl") for i in range(48)]
# every SFT format (`text` through a chat template) and every preference format, 3 rows a shard:
# >= 3 shards per split, and KTO's two rows per pair cut across shards
SECTION = {"formats": ["messages", "prompt_completion", "alpaca", "sharegpt", "text"], "chat_template": "chatml",
           "splits": {"train": 0.5, "validation": 0.25, "test": 0.25, "stratify_by_task": True},
           "prompt": {"system": "Be brief."},
           "shard_rows": 3, "preference": {"k": 3, "temperatures": [0.0, 0.1, 0.2], "judge": "length",
                                           "formats": ["preference", "kto", "ranking", "ranked"]}}


def _engine() -> ScriptedEngine:
    """Three answers per prompt of different lengths (the `length` judge); one prompt in six ties."""
    answers = {}
    for i, e in enumerate(EXAMPLES):
        user = f"{e.instruction}\n\n{e.input}" if e.input else e.instruction
        answers[user] = ["same length", "equal words", "two words"] if i % 6 == 0 else \
            [f"a long answer {i}", f"short {i}", f"a middling {i}"]
    return ScriptedEngine(answers, {})


def export(root: Path, executor: str) -> StageOutput:
    cfg = parse_config({"run": {"name": "t", "root": str(root), "executor": executor}, "export": SECTION})
    run = RunDir(root / "t")
    ingest, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="test",
                              fn=lambda ctx: ctx.write([e.model_dump() for e in EXAMPLES]))
    out, _ = run.run_stage(4, "export", config=SECTION, inputs=[ingest], code="test", fn=export_stage.run,
                           section=cfg.export, run=cfg.context(), engine_factory=_engine)
    return out


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> StageOutput:
    return export(tmp_path_factory.mktemp("local"), "local")


def assert_same_export(local: StageOutput, on_ray: StageOutput) -> None:
    hub_local, hub_ray = files(local.path / "hub"), files(on_ray.path / "hub")
    assert hub_local.keys() == hub_ray.keys() and len(hub_local) > 100
    for name, content in hub_local.items():
        assert content == hub_ray[name], name
    for folder in ("data", "pairs", "rejected"):
        assert read_table(local.path / folder).equals(read_table(on_ray.path / folder)), folder
    for key in ("configs", "preference"):
        assert local.stats()[key] == on_ray.stats()[key]


def test_shards_hold_every_row_in_order(local):
    """Each split of each config is cut every 3 rows, in the order of its examples (SFT) or pairs
    (preference; KTO: chosen then rejected row of each pair, a pair may straddle two shards)."""
    examples = local.table().to_pylist()
    pairs = read_table(local.path / "pairs").to_pylist()
    configs = local.stats()["configs"]
    assert len(configs) == 9 and len(pairs) == 40
    for config, counts in configs.items():
        for split, n in counts.items():
            paths = sorted((local.path / "hub" / "data" / config).glob(f"{split}-*.parquet"))
            tables = [pq.read_table(p) for p in paths]
            assert len(paths) >= 3 and [t.num_rows for t in tables] == [3] * (n // 3) + ([n % 3] if n % 3 else [])
            ids = [i for t in tables for i in t.column("id").to_pylist()]
            if config.startswith("sft"):
                expected = [r["id"] for r in examples if dict(r["meta"])["split"] == split]
            else:
                expected = [p["id"] for p in pairs if dict(p["meta"])["split"] == split]
            if config == "preference_kto":
                expected = [i for i in expected for _ in range(2)]
                assert [label for t in tables for label in t.column("label").to_pylist()] == [True, False] * (n // 2)
            assert ids == expected, (config, split)


def test_export_on_ray_writes_the_same_files(local, tmp_path, ray_cluster):
    assert_same_export(local, export(tmp_path, "ray"))


def write_or_die(marker: Path, driver: int, hub: Path, prompt, template, shard: shards.Shard) -> shards.Written:
    """The first second shard a Ray worker writes: half a file at write_table_atomic's temporary
    name, then SIGKILL (once: `marker` names the worker)."""
    if os.getpid() != driver and shard.index == 1:
        try:
            with marker.open("x") as f:
                f.write(str(os.getpid()))
        except FileExistsError:
            pass
        else:
            path = hub / shard.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(f".{path.name}.tmp-{os.getpid()}").write_bytes(b"PAR1 half a shard")
            os.kill(os.getpid(), signal.SIGKILL)
    return shards.write_shard(hub, prompt, template, shard)


def test_worker_killed_while_writing_a_shard_is_retried_and_export_unchanged(local, tmp_path, ray_cluster,
                                                                             monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setattr(export_stage, "write_shard", partial(write_or_die, marker, os.getpid()))
    on_ray = export(tmp_path, "ray")
    assert marker.exists() and int(marker.read_text()) != os.getpid()
    assert_same_export(local, on_ray)  # the dead worker's partial file is gone too


def test_chat_templates_pickle_as_what_builds_them_once_per_process(bundled_model_dir):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    for template in (load_chat_template("chatml"), load_chat_template("tokenizer", bundled_model_dir)):
        data = pickle.dumps(template)
        assert len(data) < 1000  # a name and a path or template text, never the tokenizer
        copy = pickle.loads(data)
        assert copy is pickle.loads(data) and type(copy) is type(template)
        assert (copy.name, copy.source, copy.training_text(conv)) == (template.name, template.source,
                                                                      template.training_text(conv))
