"""The ingest stage end to end: bundled defaults, cache skip and rerun, record mode, CLI summary."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from instructforge.config import parse_config
from instructforge.errors import InputError
from instructforge.pipeline import Pipeline
from instructforge.runs import read_table


def _pipeline(tmp_path, ingest: dict | None = None, **run) -> Pipeline:
    data = {"run": {"name": "t", "root": str(tmp_path / "runs"), **run}}
    if ingest is not None:
        data["ingest"] = ingest
    return Pipeline(parse_config(data, base_dir=tmp_path))


def test_bundled_defaults_then_cached_then_rerun_on_change(tmp_path):
    out, skipped = _pipeline(tmp_path).run_stage(_stage())
    assert not skipped
    rows = out.table().to_pylist()
    ids = [r["id"] for r in rows]
    seeds = [r for r in rows if r["source"] == "seeds:seed_tasks.jsonl"]
    flan = [r for r in rows if r["source"] == "collection:flan_mini.yaml"]
    assert len({dict(r["meta"])["seed_id"] for r in seeds}) >= 60 and len({r["task"] for r in flan}) >= 24
    assert len({r["id"] for r in rows}) == len(rows)
    st = out.stats()
    assert st["bad_input"] == 0 and st["rows_rejected"] == 0
    assert sum(st["per_template"].values()) == len(rows) == st["rows_out"]

    again, skipped = _pipeline(tmp_path).run_stage(_stage())
    assert skipped and again.fingerprint == out.fingerprint
    changed, skipped = _pipeline(tmp_path, {"collections": [{"path": "bundled:flan_mini.yaml"}],
                                            "render": {"shots": [1]}}).run_stage(_stage())
    assert not skipped and changed.fingerprint != out.fingerprint
    assert {r["template"].split("+")[0] for r in changed.table().to_pylist()} == {"1-shot"}
    # same config and seed on a fresh run directory: the same ids (stable across runs)
    fresh, _ = _pipeline(tmp_path / "other").run_stage(_stage())
    assert fresh.table().column("id").to_pylist() == ids


def _stage():
    from instructforge.pipeline import BY_NAME

    return BY_NAME["ingest"]


def _bad_sources(tmp_path) -> dict:
    (tmp_path / "seeds.jsonl").write_text(
        json.dumps({"id": "a", "name": "n", "instruction": "Do it.", "instances": [{"input": "", "output": "ok"}],
                    "is_classification": False}) + "\n{broken\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"tasks": [{
        "name": "t", "templates": [["Say {word}", "{word}"]], "rows": [{"word": "hi"}, {"other": "x"}]}]}),
        encoding="utf-8")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    return {"collections": [{"path": "c.yaml"}], "seeds": [{"path": "seeds.jsonl"}],
            "files": [{"path": "empty.csv"}]}


def test_strict_mode_stops_at_the_first_bad_input(tmp_path):
    pipe = _pipeline(tmp_path, _bad_sources(tmp_path))
    try:
        pipe.run_stage(_stage())
    except InputError as e:
        assert str(e).startswith(f"{tmp_path / 'c.yaml'}:") and "field 'tasks[0].rows[1].word'" in str(e)
    else:
        raise AssertionError("strict mode accepted bad input")
    assert pipe.run_dir.finished(1, "ingest") is None


def test_record_mode_keeps_good_rows_and_rejects_bad_ones_with_reasons(tmp_path):
    out, _ = _pipeline(tmp_path, _bad_sources(tmp_path), on_error="record").run_stage(_stage())
    assert sorted(r["output"] for r in out.table().to_pylist()) == ["hi", "ok"]
    rejected = read_table(out.rejected).to_pylist()
    assert {r["filter"] for r in rejected} == {"bad_input"} and {r["stage"] for r in rejected} == {"ingest"}
    reasons = sorted(r["reason"] for r in rejected)
    assert any(r.startswith(f"{tmp_path / 'c.yaml'}:") and "rows[1].word" in r for r in reasons)
    assert any(r.startswith(f"{tmp_path / 'seeds.jsonl'}:2: malformed JSON") for r in reasons)
    assert any(r == f"{tmp_path / 'empty.csv'}: empty file" for r in reasons)
    seed_bad = next(r for r in rejected if "seeds.jsonl" in r["reason"])
    assert seed_bad["input"] == "{broken" and dict(seed_bad["evidence"])["line"] == "2"
    assert out.stats()["bad_input"] == 3


def test_mixing_rejections_land_in_rejected(tmp_path):
    out, _ = _pipeline(tmp_path, {"collections": [{"path": "bundled:flan_mini.yaml"}],
                                  "mixing": {"max_per_task": 5, "total": 60}}).run_stage(_stage())
    assert out.stats()["rows_out"] == 60
    rejected = read_table(out.rejected).to_pylist()
    assert {r["filter"] for r in rejected} == {"task_cap", "mixture"}
    assert len(rejected) + 60 == out.stats()["funnel"][0]["rows_in"]  # nothing lost
    assert [f["filter"] for f in out.stats()["funnel"]] == ["task_cap", "mixture"]


def test_cli_prints_summary_and_skips_when_cached(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"run": {"name": "cli", "root": "runs"},
                                   "ingest": {"collections": [{"path": "bundled:flan_mini.yaml",
                                                               "tasks": ["antonyms", "entailment"]}],
                                              "seeds": [{"path": "bundled:seed_tasks.jsonl"}]}}), encoding="utf-8")
    cmd = [sys.executable, "-m", "instructforge.cli", "ingest", str(cfg)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "antonyms" in first.stderr and "seed tasks (65)" in first.stderr and "rows per template kind" in first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert (tmp_path / "runs" / "cli" / "01-ingest" / "manifest.json").exists()  # run.root: from the cwd
    assert second.returncode == 0 and "cached, skipped" in second.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"ingest": {"seeds": [{"path": "missing.jsonl"}]}}), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "instructforge.cli", "ingest", str(bad)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr  # ExitCode.INPUT
    assert "missing.jsonl: file not found" in "".join(proc.stderr.split("\n"))  # rich wraps long lines


def test_input_fingerprint_follows_file_contents(tmp_path):
    from instructforge.ingest.stage import input_fingerprint

    (tmp_path / "s.jsonl").write_text("{}\n", encoding="utf-8")
    cfg = parse_config({"ingest": {"seeds": [{"path": "s.jsonl"}],
                                   "collections": [{"path": "bundled:flan_mini.yaml"}]}}, base_dir=tmp_path)
    before = input_fingerprint(cfg.ingest, cfg.context())
    assert len(before) == 2 and str(tmp_path / "s.jsonl") in before
    assert any(k.endswith("ingest/data/flan_mini.yaml") for k in before)
    (tmp_path / "s.jsonl").write_text("{}\n{}\n", encoding="utf-8")
    assert input_fingerprint(cfg.ingest, cfg.context()) != before
