"""One run at a time per run directory, with real processes: a second run is refused at once naming
the holder (exit 75), a lock left by a killed run is taken over, SIGTERM ends a run as interrupted
(exit 130, last-run.json says so), and two processes share one request cache without losing rows."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from instructforge.errors import ExitCode

CLI = [sys.executable, "-m", "instructforge.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, env=ENV, timeout=300)


def _config(tmp_path: Path, rows: int = 0) -> Path:
    ingest = {"seeds": [{"path": "bundled:seed_tasks.jsonl"}]}
    if rows:  # a source big enough that ingest takes a few seconds
        with (tmp_path / "big.jsonl").open("w", encoding="utf-8") as f:
            for i in range(rows):
                f.write(json.dumps({"instruction": f"Write sentence number {i} about the sea.", "input": "",
                                    "output": f"The sea, number {i}, is calm today."}) + "\n")
        ingest["files"] = [{"path": "big.jsonl"}]
    cfg = {"run": {"name": "locked", "root": str(tmp_path / "runs")}, "ingest": ingest}
    (tmp_path / "c.yaml").write_text(json.dumps(cfg), encoding="utf-8")
    return tmp_path / "c.yaml"


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run directory's lock through the project's own RunLock."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom instructforge.lock import RunLock\n"
            f"with RunLock(Path({str(run_dir)!r})):\n    print('held', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_then_a_killed_holders_lock_is_taken_over(tmp_path):
    config = _config(tmp_path)
    run_dir = tmp_path / "runs" / "locked"
    holder = _holder(run_dir)
    try:
        started = time.time()
        refused = _cli("run", str(config), "--json")
        assert refused.returncode == ExitCode.LOCKED, refused.stderr
        assert time.time() - started < 60  # refused at once, not after waiting
        error = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(error) == 1 and f"pid {holder.pid}" in error[0] and "in use" in error[0]
        assert json.loads(refused.stdout)["status"] == "locked"
        assert not (run_dir / "last-run.json").exists()  # the holder's summary is not ours to write
        push = _cli("push", str(run_dir), "--repo-id", "me/data", "--dry-run")  # never publish mid-run
        assert push.returncode == ExitCode.LOCKED and f"pid {holder.pid}" in push.stderr, push.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    taken = _cli("run", str(config))
    assert taken.returncode == 0, taken.stderr
    assert f"took over the lock of {run_dir} left by pid {holder.pid}" in " ".join(taken.stderr.split())
    last = json.loads((run_dir / "last-run.json").read_text(encoding="utf-8"))
    assert last["status"] == "ok" and last["exit_code"] == 0
    assert not (run_dir / "run.lock.json").exists()  # released at the end


def test_concurrent_run_refused_and_sigterm_ends_a_run_as_interrupted(tmp_path):
    config = _config(tmp_path, rows=250_000)  # ingest runs for seconds: time to start a second run
    run_dir = tmp_path / "runs" / "locked"
    proc = subprocess.Popen([*CLI, "run", str(config), "--log-format", "json"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=ENV)
    for line in proc.stderr:  # JSON log lines; ingest announces that it runs
        if json.loads(line).get("event") == "run":
            break
    second = _cli("run", str(config))  # two real `instructforge run`s on one run directory
    assert second.returncode == ExitCode.LOCKED and f"pid {proc.pid}" in second.stderr, second.stderr
    assert proc.poll() is None  # the first run is still going, untouched
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == ExitCode.INTERRUPTED, rest
    assert any(json.loads(line).get("event") == "interrupted" for line in rest.splitlines())
    last = json.loads((run_dir / "last-run.json").read_text(encoding="utf-8"))
    assert last["status"] == "interrupted" and last["exit_code"] == 130 and last["current_stage"] == "ingest"
    assert not (run_dir / "01-ingest").exists()  # nothing half-written looks done

    again = _cli("run", str(config), "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["stages"][0]["status"] == "ran" and summary["stages"][0]["rows_out"] >= 250_000


WRITER = """
import sys
from instructforge.engines.base import GenerationResult
from instructforge.engines.cache import RequestCache
cache = RequestCache(sys.argv[1])
me = sys.argv[2]
for batch in range(40):
    items = [(f"{me}-{batch}-{i}", GenerationResult(texts=[f"{me} {batch} {i}"])) for i in range(25)]
    items += [(f"shared-{batch}-{i}", GenerationResult(texts=[f"shared {batch} {i}"])) for i in range(5)]
    cache.put_many("model", items)
    got = cache.get_many([k for k, _ in items])
    assert all(g is not None for g in got), "a row written a moment ago is gone"
cache.close()
"""


def test_two_processes_share_one_request_cache(tmp_path):
    path = tmp_path / "cache" / "request-cache.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], env=ENV, stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    keys = {k for (k,) in conn.execute("SELECT key FROM results")}
    assert len(keys) == 2 * 40 * 25 + 40 * 5
    assert {k for k in keys if k.startswith("a-")} and {k for k in keys if k.startswith("b-")}
