"""The stage cache tells the truth: a stage reruns when something it reads changed (a data file, a
model, the code it imports, an engine setting that changes outputs) and only then; a damaged
cached output is rerun, never trusted; `instructforge verify` checks a whole run directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from instructforge import fingerprints
from instructforge.cli import app
from instructforge.config import parse_config
from instructforge.engines.model import model_identity
from instructforge.fingerprints import code_digests, model_digest
from instructforge.integrity import verify_run
from instructforge.pipeline import STAGES, Pipeline

DATA = Path(__file__).resolve().parents[1] / "ingest" / "data"
REPO = Path(__file__).resolve().parents[1]


def _setup(tmp_path: Path) -> None:
    seeds = (DATA / "seed_tasks.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    (tmp_path / "seeds.jsonl").write_text("\n".join(seeds) + "\n", encoding="utf-8")
    shutil.copy(DATA / "benchmark_sample.jsonl", tmp_path / "bench.jsonl")
    (tmp_path / "ref.jsonl").write_text('{"instruction": "Name three primary colours."}\n', encoding="utf-8")


def _config(tmp_path: Path, engine: dict | None = None, judge: bool = False, export: bool = False) -> dict:
    steps = [{"type": "exact_dedup"}, {"type": "heuristics"},
             {"type": "decontamination", "benchmarks": [{"path": "bench.jsonl"}]},
             {"type": "novelty", "reference": [{"path": "ref.jsonl"}]}]
    if judge:
        steps.append({"type": "judge", "min_score": 1, "max_tokens": 8})
    return {"run": {"name": "t", "root": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache")},
            "engine": engine or {}, "ingest": {"seeds": [{"path": "seeds.jsonl"}]}, "filters": {"steps": steps},
            "export": {"formats": ["messages"], "chat_template": "chatml"} if export else None}


def _run(tmp_path: Path, engine_instance=None, **kw) -> dict[str, tuple[bool, str | None]]:
    """{stage: (cached, why it ran)} for one pipeline run."""
    pipe = Pipeline(parse_config(_config(tmp_path, **kw), base_dir=tmp_path))
    pipe._engine = engine_instance  # the session's model, never a second copy
    seen: dict[str, tuple[bool, str | None]] = {}
    pipe.run(on_stage=lambda stage, out, skipped: seen.__setitem__(
        stage.name, (skipped, None if skipped else out.manifest["ran_because"])))
    return seen


@pytest.fixture(autouse=True)
def source_copy(tmp_path, monkeypatch):
    """A copy of the project's source that the code fingerprint reads instead of the real files: a
    test edits it freely, and an edit to the real tree meanwhile changes nothing here."""
    roots = {"instructforge": "instructforge", "instructforge.ingest": "ingest", "instructforge.filters": "filters",
             "instructforge.selfinstruct": "selfinstruct", "instructforge.export": "export",
             "instructforge.train": "train"}
    for folder in roots.values():
        shutil.copytree(REPO / folder, tmp_path / "src" / folder, ignore=shutil.ignore_patterns("__pycache__", "data"))
    monkeypatch.setattr(fingerprints, "SOURCE_ROOTS", {k: tmp_path / "src" / v for k, v in roots.items()})
    return tmp_path / "src"


def test_data_files_each_rerun_only_their_stage_and_what_follows(tmp_path):
    _setup(tmp_path)
    first = _run(tmp_path, export=True)
    assert set(first.values()) == {(False, "not run before")} and len(first) == 3
    assert set(_run(tmp_path, export=True).values()) == {(True, None)}

    with (tmp_path / "bench.jsonl").open("a", encoding="utf-8") as f:  # a benchmark file decontamination reads
        f.write('{"id": "new", "question": "Which planet has the longest day in the solar system?"}\n')
    after = _run(tmp_path, export=True)
    assert after["ingest"] == (True, None)
    assert not after["filter"][0] and "bench.jsonl" in after["filter"][1]
    assert after["export"] == (False, "changed: input 03-filter")

    (tmp_path / "ref.jsonl").write_text('{"instruction": "Name three colours."}\n', encoding="utf-8")
    after = _run(tmp_path, export=True)
    assert after["ingest"] == (True, None) and "ref.jsonl" in after["filter"][1] and not after["export"][0]

    lines = (tmp_path / "seeds.jsonl").read_text(encoding="utf-8").splitlines()  # a seed/source file
    (tmp_path / "seeds.jsonl").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    after = _run(tmp_path, export=True)
    assert not after["ingest"][0] and "seeds.jsonl" in after["ingest"][1]
    assert after["filter"] == (False, "changed: input 01-ingest") and not after["export"][0]


def _digests() -> dict[str, dict[str, str]]:
    return {s.name: code_digests(s.module) for s in STAGES}


def test_code_fingerprint_is_the_import_closure(source_copy):
    before = _digests()
    assert "instructforge.report" not in {m for d in before.values() for m in d}
    with (source_copy / "instructforge" / "report.py").open("a", encoding="utf-8") as f:
        f.write("\n# edited\n")
    assert _digests() == before  # nobody's stage imports the report

    with (source_copy / "filters" / "novelty.py").open("a", encoding="utf-8") as f:
        f.write("\n# edited\n")
    after = _digests()
    changed = {name for name in before if after[name] != before[name]}
    assert {"generate", "filter"} <= changed  # Self-Instruct's bootstrap imports the novelty index
    assert "ingest" not in changed  # ingest imports nothing that imports it

    # a lazy import inside a function counts too: filters/stage.py imports heuristics inside build_filter
    with (source_copy / "filters" / "heuristics.py").open("a", encoding="utf-8") as f:
        f.write("\n# edited\n")
    assert _digests()["filter"] != after["filter"]


def test_a_library_upgrade_reruns_the_stages_that_import_it(monkeypatch):
    before = _digests()
    real = fingerprints._version
    monkeypatch.setattr(fingerprints, "_version", lambda dist: "99.0" if dist == "datasketch" else real(dist))
    after = _digests()
    assert after["filter"]["lib:datasketch"] == "99.0" and after["filter"] != before["filter"]
    assert after["ingest"] == before["ingest"]  # ingest does not use MinHash
    monkeypatch.setattr(fingerprints, "_version", lambda dist: "99.0" if dist == "rich" else real(dist))
    assert _digests() == before  # terminal output only


def test_edited_code_reruns_its_stage_in_a_pipeline(tmp_path, source_copy):
    _setup(tmp_path)
    _run(tmp_path)
    with (source_copy / "filters" / "heuristics.py").open("a", encoding="utf-8") as f:
        f.write("\n# edited\n")
    after = _run(tmp_path)
    assert after["ingest"] == (True, None)
    assert after["filter"] == (False, "changed: code.instructforge.filters.heuristics")


@pytest.mark.slow
def test_speed_settings_never_rerun_and_engine_settings_only_rerun_engine_stages(tmp_path, hf_engine):
    _setup(tmp_path)
    _run(tmp_path)  # no judge: the filter stage does not use the engine
    assert _run(tmp_path, engine={"seed": 7, "timeout_s": 5}) == {"ingest": (True, None), "filter": (True, None)}

    first = _run(tmp_path, hf_engine, judge=True)
    assert not first["filter"][0]
    speed = {"timeout_s": 3, "max_retries": 0, "backoff_s": 9, "concurrency": 1, "batch_size": 2,
             "cpu_threads": 2, "gpu_memory_utilization": 0.5, "enforce_eager": True, "cpu_kvcache_gib": 1,
             "tensor_parallel_size": 2, "backend": "transformers"}
    assert _run(tmp_path, hf_engine, engine=speed, judge=True) == {"ingest": (True, None), "filter": (True, None)}
    after = _run(tmp_path, hf_engine, engine={"seed": 7}, judge=True)
    assert after["ingest"] == (True, None) and after["filter"] == (False, "changed: config.engine.seed")


def _shard(run: Path, stage: str, folder: str = "data") -> Path:
    return min((run / stage / folder).glob("part-*.parquet"))


def test_damaged_cached_output_is_rerun_with_the_reason(tmp_path):
    _setup(tmp_path)
    _run(tmp_path)
    run = tmp_path / "runs" / "t"
    shard = _shard(run, "03-filter")
    rows = pq.read_metadata(shard).num_rows
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated
    after = _run(tmp_path)
    assert after["ingest"] == (True, None)
    assert after["filter"][1].startswith("cached output damaged: data/part-00000.parquet is truncated")
    assert pq.read_metadata(_shard(run, "03-filter")).num_rows == rows

    _shard(run, "01-ingest", "rejected").unlink()  # missing
    after = _run(tmp_path)
    assert "rejected/part-00000.parquet is missing" in after["ingest"][1]

    stats = run / "03-filter" / "stats.json"  # same size, altered
    stats.write_text(stats.read_text(encoding="utf-8").replace('"', "'", 1), encoding="utf-8")
    assert "stats.json is altered" in _run(tmp_path)["filter"][1]

    shutil.copy(_shard(run, "03-filter"), run / "03-filter" / "data" / "part-00009.parquet")  # an extra shard
    assert "part-00009.parquet is not in the manifest" in _run(tmp_path)["filter"][1]

    (run / "03-filter" / "manifest.json").write_text("{not json", encoding="utf-8")
    assert _run(tmp_path)["filter"][1].startswith("cached output unusable: manifest.json unreadable")
    assert _run(tmp_path) == {"ingest": (True, None), "filter": (True, None)}


def test_incremental_runs_never_build_on_a_damaged_stage(tmp_path):
    _setup(tmp_path)
    data = _config(tmp_path)
    data["run"]["incremental"] = True
    Pipeline(parse_config(data, base_dir=tmp_path)).run()
    run = tmp_path / "runs" / "t"
    shard = _shard(run, "03-filter")
    shard.write_bytes(shard.read_bytes()[:64])
    pipe = Pipeline(parse_config(data, base_dir=tmp_path))
    outputs = pipe.run()  # nothing new in the sources, but the damaged filter output is rebuilt
    assert outputs["filter"].manifest["ran_because"].startswith("cached output damaged")
    assert [s["status"] for s in pipe.summary.data["stages"]] == ["cached", "ran"]
    assert verify_run(run) == {"01-ingest": [], "03-filter": []}


def test_verify_command_checks_a_whole_run(tmp_path):
    _setup(tmp_path)
    _run(tmp_path)
    run = tmp_path / "runs" / "t"
    cli = CliRunner()
    ok = cli.invoke(app, ["verify", str(run)])
    assert ok.exit_code == 0, ok.output

    shard = _shard(run, "01-ingest")
    shard.write_bytes(shard.read_bytes()[:100])
    bad = cli.invoke(app, ["verify", str(run)])
    assert bad.exit_code != 0 and "01-ingest" in bad.output and "truncated" in bad.output

    _run(tmp_path)  # repaired by rerunning; then an upstream rerun leaves the filter stage stale
    assert cli.invoke(app, ["verify", str(run)]).exit_code == 0
    Pipeline(parse_config({**_config(tmp_path), "ingest": {"seeds": [{"path": "seeds.jsonl"}],
                                                           "render": {"shots": [1]}}}, base_dir=tmp_path)).run("ingest")
    stale = cli.invoke(app, ["verify", str(run)])
    assert stale.exit_code != 0 and "03-filter" in stale.output and "01-ingest" in stale.output


def test_hub_model_ids_are_identified_by_their_cached_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--org--tiny"
    for rev, weights in (("a" * 40, b"v1"), ("b" * 40, b"v2")):
        (repo / "snapshots" / rev).mkdir(parents=True)
        (repo / "snapshots" / rev / "model.safetensors").write_bytes(weights)
    (repo / "refs").mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (repo / "refs" / "main").write_text("a" * 40, encoding="utf-8")
    first = model_digest("org/tiny", cache_dir=tmp_path / "cache")
    assert first.startswith("content:")
    (repo / "refs" / "main").write_text("b" * 40, encoding="utf-8")  # the cache now holds a newer revision
    assert model_digest("org/tiny", cache_dir=tmp_path / "cache") not in (first, "name:org/tiny")


def test_model_folders_are_identified_by_content(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}', encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"\0" * 4096)
    first = model_digest(str(model), cache_dir=tmp_path / "cache")
    identity = model_identity(str(model))  # the request cache's key: must follow the content too
    assert model_digest(str(model), cache_dir=tmp_path / "cache") == first
    assert (tmp_path / "cache" / "file-digests.json").exists()  # big folders are read once
    (model / "model.safetensors").write_bytes(b"\1" * 4096)  # same size, same name: retrained weights
    assert model_digest(str(model), cache_dir=tmp_path / "cache") != first
    assert model_identity(str(model)) != identity
    assert model_digest("some-org/some-model") == "name:some-org/some-model"  # a served name, not cached
    assert model_digest(None, cache_dir=tmp_path / "cache").startswith("bundled:")

    from instructforge.export.stage import input_fingerprint as export_files
    from instructforge.train.stage import input_fingerprint as train_files

    cfg = parse_config({"export": {"template_model": str(model)}, "train": {"base_model": str(model)}},
                       base_dir=tmp_path)
    assert export_files(cfg.export, cfg.context()) == {"template_model": model_digest(str(model))}
    assert train_files(cfg.train, cfg.context())["base_model"] == model_digest(str(model))
    cfg = parse_config({"export": {"template_model": str(model), "formats": ["messages"]}}, base_dir=tmp_path)
    assert export_files(cfg.export, cfg.context()) == {}  # no chat template rendered: the model is not read
