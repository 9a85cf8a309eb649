"""One run at a time per run directory.

`runs/<run>/run.lock` is held with an OS file lock (`filelock`: flock on POSIX) for the whole run,
and `run.lock.json` beside it names the holder (pid, host, start time, command). The OS drops the
lock when its process dies, however it dies, so a lock left by a killed run is never a deadlock:
the next run takes it and says whose it was. A second run while the first is alive is refused
at once (`RunLocked`, exit code 75) with the holder named.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Self

from filelock import FileLock, Timeout

from instructforge.errors import RunLocked, storage_error

LOCK = "run.lock"
HOLDER = "run.lock.json"
log = logging.getLogger("instructforge.lock")


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    cmd = " ".join(holder.get("command", [])[1:]) or "?"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} (`{cmd}`)"


class RunLock:
    """Context manager: the run directory's lock, or `RunLocked` naming who has it."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = FileLock(self.root / LOCK, blocking=False)
        self.took_over: dict[str, Any] | None = None  # the holder record a dead run left behind

    def holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / HOLDER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def __enter__(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunLocked(f"run directory {self.root} is in use by {describe(self.holder())}; "
                            "try again when it has finished") from None
        left = self.holder()
        if left:  # its holder ended without releasing it (killed): the OS has dropped its lock
            self.took_over = left
            log.warning("took over the lock of %s left by %s, which ended without releasing it",
                        self.root, describe(left), extra={"event": "lock_taken_over", "previous_holder": left})
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = self.root / f".{HOLDER}.tmp-{os.getpid()}"
        try:
            tmp.write_text(json.dumps(me), encoding="utf-8")
            os.replace(tmp, self.root / HOLDER)
        except OSError as e:  # a full or read-only disk: say so, naming the file, and let go of the lock
            tmp.unlink(missing_ok=True)
            self._lock.release()
            raise storage_error(e, self.root / HOLDER) or e
        return self

    def __exit__(self, *exc: object) -> None:
        (self.root / HOLDER).unlink(missing_ok=True)
        self._lock.release()
