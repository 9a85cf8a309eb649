"""Errors a user can act on. The CLI prints them as one line (no traceback unless --debug)."""

from __future__ import annotations

import errno
import os
import sqlite3
from functools import partial


class ExitCode:
    """Documented exit codes of the CLI (README "Exit codes"; `instructforge --help`).

    A scheduler can tell "try again later" (locked), "nothing to do" and real failures apart.
    """

    OK = 0
    ERROR = 1  # an unexpected failure (a bug): the traceback is shown with --debug
    CONFIG = 2  # bad config file, bad option or usage
    INPUT = 3  # bad input data (file, line and field named)
    ENGINE = 4  # the LLM engine failed after its retries; rerun resumes
    NOTHING_NEW = 5  # incremental run: no new rows in the sources, nothing was done
    STORAGE = 74  # disk full, read-only or not writable (EX_IOERR): free space and rerun to resume
    LOCKED = 75  # another run holds the run directory (EX_TEMPFAIL: try again later)
    INTERRUPTED = 130  # SIGINT/SIGTERM; finished shards are kept, rerun resumes


class InstructforgeError(Exception):
    """Base for every error that is the user's input or environment, not a bug."""

    exit_code = ExitCode.ERROR


class ConfigError(InstructforgeError):
    exit_code = ExitCode.CONFIG


class EngineError(InstructforgeError):
    """The engine failed for some requests after every retry; the stage is left incomplete."""

    exit_code = ExitCode.ENGINE


class RunLocked(InstructforgeError):
    exit_code = ExitCode.LOCKED


class NothingNew(InstructforgeError):
    """Not a failure: an incremental run found no new rows (its own exit code for schedulers)."""

    exit_code = ExitCode.NOTHING_NEW


class InputError(InstructforgeError):
    """Bad input data, located as precisely as we can: file, line (or row), field."""

    exit_code = ExitCode.INPUT

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.detail = file, line, field, message
        where = ":".join(str(p) for p in (file, line) if p is not None)
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}" if where else f"{what}{message}")

    def __reduce__(self):  # pickled whole (raised in a Ray task, re-raised on the driver)
        return partial(InputError, self.detail, file=self.file, line=self.line, field=self.field), ()

    def location(self) -> dict[str, str]:
        """The error as evidence for a rejected row (lenient mode)."""
        loc = {"file": self.file, "line": self.line, "field": self.field}
        return {k: str(v) for k, v in loc.items() if v is not None}


class StorageError(InstructforgeError):
    """The run directory or a cache cannot be written (disk full, read-only, no permission).

    Finished stages and checkpoints are kept; once space is freed the same command resumes."""

    exit_code = ExitCode.STORAGE


STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted", errno.EFBIG: "file too large"}
# how libraries word a failed write when they drop the errno (pyarrow, torch's zip writer, SQLite)
STORAGE_MESSAGES = {"no space left on device": "no space left on device", "[errno 28]": "no space left on device",
                    "database or disk is full": "no space left on device",
                    "unexpected pos": "no space left on device (a write stopped short)",
                    "file write failed": "no space left on device (a write stopped short)",
                    "read-only file system": "read-only file system",
                    "attempt to write a readonly database": "read-only file system"}


def storage_error(e: BaseException, path: os.PathLike | str | None = None) -> StorageError | None:
    """`e` (or an exception it was raised from) as a one-line StorageError naming the path, or None
    when it is not a storage failure."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageError):
            return e
        why = STORAGE_ERRNOS.get(e.errno) if isinstance(e, OSError) else None
        if why is None and isinstance(e, OSError | RuntimeError | sqlite3.Error):
            text = str(e).lower()
            why = next((w for m, w in STORAGE_MESSAGES.items() if m in text), None)
        if why is not None:
            where = path or getattr(e, "filename", None)
            return StorageError(f"{where}: cannot write: {why}" if where else f"cannot write: {why}")
        e = e.__cause__ or e.__context__
    return None
