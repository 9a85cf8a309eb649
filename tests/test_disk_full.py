"""A full disk or a read-only run directory: a one-line error naming the path (exit code 74), never a
traceback; once space is freed the same command completes with nothing corrupted.

ENOSPC is injected at the writes (`INSTRUCTFORGE_ENOSPC_AT`, instructforge.faults), which works
anywhere; where the machine lets tests mount a small tmpfs, the same is checked on a real full and
a real read-only file system, including torch's checkpoint writer and SQLite.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instructforge.config import parse_config
from instructforge.engines.base import GenerationRequest, GenerationResult
from instructforge.engines.cache import RequestCache
from instructforge.errors import ExitCode, StorageError, storage_error
from instructforge.faults import ENOSPC_AT
from instructforge.pipeline import BY_NAME, Pipeline
from instructforge.runs import read_table

INGEST = {"collections": [{"path": "bundled:flan_mini.yaml", "tasks": ["antonyms"]}],
          "seeds": [{"path": "bundled:seed_tasks.jsonl"}]}


def _ingest(root: Path):
    cfg = parse_config({"run": {"name": "t", "root": str(root)}, "ingest": INGEST})
    return Pipeline(cfg).run_stage(BY_NAME["ingest"])[0]


def _cli(root: Path, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"run": {"name": "t", "root": str(root)}, "ingest": INGEST}), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "instructforge.cli", "ingest", str(cfg)], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, **(env or {})})


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == ExitCode.STORAGE, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return "".join(line for line in proc.stderr.splitlines() if "error" in line.lower() or "cannot" in line)


@pytest.mark.parametrize("point", ["write@1", "write@2", "write@3"])
def test_injected_full_disk_names_the_file_and_the_rerun_completes(tmp_path, monkeypatch, point):
    clean = read_table(_ingest(tmp_path / "clean").data).column("id").to_pylist()
    monkeypatch.setenv(ENOSPC_AT, point)
    with pytest.raises(StorageError) as e:
        _ingest(tmp_path / "runs")
    msg = str(e.value)
    assert msg.endswith(": cannot write: no space left on device") and str(tmp_path / "runs") in msg
    assert "\n" not in msg
    stage = tmp_path / "runs" / "t" / "01-ingest"
    assert not stage.exists()  # nothing half-done looks finished
    assert not [p for p in (tmp_path / "runs").rglob("*") if ".tmp-" in p.name]  # partial file removed
    monkeypatch.delenv(ENOSPC_AT)
    assert read_table(_ingest(tmp_path / "runs").data).column("id").to_pylist() == clean


def test_cli_full_disk_is_one_line_with_its_exit_code(tmp_path):
    proc = _cli(tmp_path / "runs", tmp_path, {ENOSPC_AT: "write@1"})
    line = _one_line_error(proc)
    assert "01-ingest" in line and "no space left on device" in line
    assert _cli(tmp_path / "runs", tmp_path).returncode == 0


def test_request_cache_full_names_the_database_not_the_rollback(tmp_path):
    cache = RequestCache(tmp_path / "cache.sqlite")
    item = GenerationResult(texts=["x" * 4000], finish_reasons=["stop"])
    keys = cache.keys("m", [GenerationRequest(prompt=f"p{i}") for i in range(64)])
    cache.put_many("m", [(keys[0], item)])
    conn = cache._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages + 2}")  # the disk fills up
    with pytest.raises(StorageError) as e:
        cache.put_many("m", [(k, item) for k in keys[1:]])
    assert str(e.value) == f"{tmp_path / 'cache.sqlite'}: cannot write: no space left on device"
    assert "rollback" not in str(e.value) and isinstance(e.value.__cause__, sqlite3.OperationalError)
    assert not conn.in_transaction
    conn.execute("PRAGMA max_page_count=1073741823")  # space freed: the same call works, nothing lost
    cache.put_many("m", [(k, item) for k in keys[1:]])
    assert len(cache) == 64 and cache.get_many(keys[:1])[0].texts == item.texts


@pytest.mark.parametrize("exc, expected", [
    (OSError(errno.ENOSPC, "No space left on device", "/r/x"), "/r/x: cannot write: no space left on device"),
    (OSError(errno.EROFS, "Read-only file system"), "/given: cannot write: read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied", "/r/y"), "/r/y: cannot write: permission denied"),
    (OSError("IOError: [Errno 28] Error writing bytes to file"), "/given: cannot write: no space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4480 vs 4374"),
     "/given: cannot write: no space left on device (a write stopped short)"),
    (sqlite3.OperationalError("database or disk is full"), "/given: cannot write: no space left on device"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "/given: cannot write: read-only file system"),
])
def test_storage_failures_read_as_one_line(exc, expected):
    given = "/given" if getattr(exc, "filename", None) is None else None
    assert str(storage_error(exc, given)) == expected


def test_storage_cause_found_behind_another_error_and_others_left_alone():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active") from inner
    except sqlite3.OperationalError as outer:
        assert str(storage_error(outer, "/db")) == "/db: cannot write: no space left on device"
    assert storage_error(ValueError("bad value")) is None
    assert storage_error(OSError(errno.ENOENT, "No such file")) is None
    assert storage_error(RuntimeError("shape mismatch")) is None


# -- a real small file system (skipped where tests may not mount one) ------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    ballast = folder / "ballast"
    with ballast.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # the last few bytes too, so any new file fails
        try:
            with ballast.open("ab") as f:
                while True:
                    f.write(b"\0" * size)
                    f.flush()
        except OSError:
            pass
    return ballast


def test_real_full_disk_then_space_freed(tmpfs, tmp_path):
    clean = read_table(_ingest(tmp_path / "clean").data).column("id").to_pylist()
    root = tmpfs / "runs"
    root.mkdir()
    ballast = _fill(tmpfs)
    line = _one_line_error(_cli(root, tmp_path))
    assert str(tmpfs) in line and "no space left on device" in line
    ballast.unlink()
    assert _cli(root, tmp_path).returncode == 0
    assert read_table(root / "t" / "01-ingest" / "data").column("id").to_pylist() == clean


def test_real_read_only_run_directory(tmpfs, tmp_path):
    (tmpfs / "runs").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    line = _one_line_error(_cli(tmpfs / "runs", tmp_path))
    assert str(tmpfs / "runs") in line and "read-only file system" in line
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert _cli(tmpfs / "runs", tmp_path).returncode == 0


def test_real_full_disk_in_torch_checkpoint_writer(tmpfs):
    import torch

    _fill(tmpfs)
    with pytest.raises(RuntimeError) as e:
        torch.save({"w": torch.zeros(50_000)}, tmpfs / "optimizer.pt")
    assert str(storage_error(e.value, tmpfs)) in (f"{tmpfs}: cannot write: no space left on device",
                                                 f"{tmpfs}: cannot write: no space left on device (a write stopped short)")
