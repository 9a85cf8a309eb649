"""What a scheduler reads: exit codes, runs/<run>/last-run.json (also on failure), `--json` on stdout,
JSON log lines on stderr, the resolved config copy, and the exit codes in `--help`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from instructforge.config import load_config
from instructforge.errors import ExitCode

CLI = [sys.executable, "-m", "instructforge.cli"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _write(tmp_path: Path, seeds: str) -> Path:
    (tmp_path / "seeds.jsonl").write_text(seeds, encoding="utf-8")
    cfg = {"run": {"name": "s"}, "ingest": {"seeds": [{"path": "seeds.jsonl"}]},
           "filters": {"steps": [{"type": "exact_dedup"}]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return tmp_path / "c.yaml"


SEED = '{"id": "s%d", "name": "t%d", "instruction": "Say hello to person number %d.", "instances": ' \
       '[{"input": "", "output": "Hello, person %d."}], "is_classification": false}\n'


def test_summary_on_success_and_on_failure(tmp_path):
    _write(tmp_path, "".join(SEED % (i, i, i, i) for i in range(3)) + SEED % (3, 3, 0, 0))  # 3 repeats 0
    ok = _cli("run", "c.yaml", "--json", "--log-format", "json", cwd=tmp_path)
    assert ok.returncode == ExitCode.OK, ok.stderr
    printed = json.loads(ok.stdout)  # stdout is the summary and nothing else
    logs = [json.loads(line) for line in ok.stderr.splitlines() if line.strip()]  # every line is JSON
    assert {"stage_done", "run"} <= {entry.get("event") for entry in logs}
    last = json.loads((tmp_path / "runs" / "s" / "last-run.json").read_text(encoding="utf-8"))
    assert printed == last
    assert last["status"] == "ok" and last["exit_code"] == 0 and last["error"] is None
    assert last["started"] <= last["finished"] and last["seconds"] >= 0
    assert {"instructforge", "python", "pyarrow"} <= set(last["versions"]) and "export_version" in last
    ingest, filter_ = last["stages"]
    assert (ingest["stage"], ingest["status"], ingest["ran_because"]) == ("ingest", "ran", "not run before")
    assert (filter_["rows_in"], filter_["rows_out"], filter_["rows_rejected"]) == (4, 3, 1)  # one duplicate
    resolved = load_config(tmp_path / "runs" / "s" / "instructforge.yaml")  # the resolved config, reloadable
    assert resolved.filters.steps[0].type == "exact_dedup" and resolved.run.name == "s"

    again = _cli("run", "c.yaml", "--json", cwd=tmp_path)
    assert [s["status"] for s in json.loads(again.stdout)["stages"]] == ["cached", "cached"]
    assert "run s: ok" in again.stderr  # the table at the end

    (tmp_path / "seeds.jsonl").write_text('{"id": "s9", "instruction": 5}\n', encoding="utf-8")  # bad input
    bad = _cli("run", "c.yaml", "--json", cwd=tmp_path)
    assert bad.returncode == ExitCode.INPUT
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "seeds.jsonl:1" in errors[0]  # one line, naming file and line
    last = json.loads((tmp_path / "runs" / "s" / "last-run.json").read_text(encoding="utf-8"))
    assert last["status"] == "failed" and last["exit_code"] == ExitCode.INPUT and "seeds.jsonl" in last["error"]
    assert last["current_stage"] == "ingest" and json.loads(bad.stdout) == last

    config_error = _cli("run", "missing.yaml", "--json", cwd=tmp_path)
    assert config_error.returncode == ExitCode.CONFIG
    assert json.loads(config_error.stdout) == {"status": "failed", "exit_code": ExitCode.CONFIG,
                                               "error": "missing.yaml: config file not found"}


def test_help_documents_the_exit_codes(tmp_path):
    out = _cli("--help", cwd=tmp_path).stdout
    for code in (0, 1, 2, 3, 4, 5, 74, 75, 130):
        assert re.search(rf"^\s+{code}\s+\w", out, re.MULTILINE), code
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "## Exit codes" in readme and "## Scheduled runs" in readme
