"""Persistent request cache: a resumed or repeated run never pays twice for the same generation.

Keyed by hash(model identity, the whole request: messages/prompt, sampling incl. seed, structured
spec). Identical requests inside one batch are asked for distinct samples, so the k-th copy gets
its own key (the occurrence number is hashed in) and a rerun gives back each copy's own answer.

SQLite in WAL mode: each write is one transaction (atomic), readers never block the writer, and
several threads or processes can share a file (one connection per thread, busy timeout).
Only successful results are stored; errors are asked again next time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

from instructforge.engines.base import GenerationRequest, GenerationResult
from instructforge.errors import storage_error

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(model_identity: str, request: GenerationRequest, occurrence: int = 0) -> str:
    payload = {"model": model_identity, "request": request.model_dump(mode="json"), "occurrence": occurrence}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


BUSY_TIMEOUT_S = 60


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Two processes opening a new cache at once can get "database is locked" here
    without SQLite's busy handler being consulted, so the switch is retried up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RequestCache:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn().execute(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # used by this thread only; check_same_thread off so close() may run from another thread
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            _wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def keys(self, model_identity: str, requests: list[GenerationRequest]) -> list[str]:
        seen: Counter[str] = Counter()
        out = []
        for request in requests:  # one serialisation per request unless it repeats
            first = request_key(model_identity, request)
            copies = seen[first]
            seen[first] += 1
            out.append(first if copies == 0 else request_key(model_identity, request, copies))
        return out

    def get_many(self, keys: list[str]) -> list[GenerationResult | None]:
        found: dict[str, str] = {}
        conn = self._conn()
        for start in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT key, result FROM results WHERE key IN ({marks})", chunk))
        return [GenerationResult.model_validate_json(found[k]).model_copy(update={"cached": True})
                if k in found else None for k in keys]

    def put_many(self, model_identity: str, items: list[tuple[str, GenerationResult]]) -> None:
        if not items:
            return
        now = time.time()
        rows = [(k, model_identity, r.model_copy(update={"cached": False}).model_dump_json(), now) for k, r in items]
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO results (key, model, result, created) VALUES (?,?,?,?)",
                             rows)
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:  # on "database or disk is full" SQLite has rolled back already
                conn.execute("ROLLBACK")
            err = storage_error(e, self.path)
            if err is not None:
                raise err from e
            raise

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()
