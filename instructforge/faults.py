"""Named points where the kill and full-disk tests make a process die or a write fail.

    INSTRUCTFORGE_KILL_AT=NAME[@N]     SIGKILL this process the N-th time (default 1) it reaches NAME
    INSTRUCTFORGE_ENOSPC_AT=NAME[@N]   raise OSError(ENOSPC) there instead: a full disk

A point costs two environment lookups when neither variable is set (always, outside tests). Names:
`STAGE:start|closed|stats|done` (RunDir.run_stage), `write` / `written` (every Parquet shard and
JSON file written atomically), `generate:batch|round`, `export:card`, `train:step|save`.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter
from pathlib import Path

KILL_AT = "INSTRUCTFORGE_KILL_AT"
ENOSPC_AT = "INSTRUCTFORGE_ENOSPC_AT"
_hits: Counter[tuple[str, str]] = Counter()


def point(name: str, path: Path | str | None = None) -> None:
    for var in (KILL_AT, ENOSPC_AT):
        spec = os.environ.get(var)
        if not spec:
            continue
        target, _, nth = spec.partition("@")
        if target != name:
            continue
        _hits[var, name] += 1
        if _hits[var, name] != int(nth or 1):
            continue
        if var == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))
