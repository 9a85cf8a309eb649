"""The default executor: one process, streaming batch by batch, passes spilled to the work folder.

Key extraction (hashing, signatures) runs on a few threads: numpy, Arrow and numba release the
GIL. Results come back in input order either way.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from instructforge.executors.base import Batches, Executor, MapFn, as_schema
from instructforge.filters.base import POS, GlobalFilter, concat_keys, with_positions
from instructforge.runs import RunContext, ShardWriter, StageOutput, iter_batches

Stream = Callable[[], Iterator[pa.RecordBatch]]
_THREADS = min(2, os.cpu_count() or 1)


class LocalKeys:
    def __init__(self, table: pa.Table):
        self._table = table

    def table(self, columns: list[str]) -> pa.Table:
        return self._table.select([POS, *columns])

    def parts(self, column: str) -> list[tuple[int, Callable[[], pa.ChunkedArray]]]:
        return [(self._table.num_rows, lambda: self._table.column(column))]


class LocalExecutor(Executor):
    def __init__(self, run: RunContext, work: Path):
        super().__init__(run, work)
        self._spill = work / "passes"
        self._passes = 0
        self._batch_size = 10_000

    def read(self, inputs: list[StageOutput], schema: pa.Schema, batch_size: int) -> Stream:
        self._batch_size = batch_size

        def stream() -> Iterator[pa.RecordBatch]:
            start = 0
            for inp in inputs:
                for batch in inp.batches(batch_size):
                    yield with_positions(as_schema(batch, schema), start)
                    start += batch.num_rows
        return stream

    def map(self, data: Stream, fn: MapFn, *, stage: str, on_driver: bool = False) -> Stream:
        return lambda: (fn(batch) for batch in data())

    def keys(self, data: Stream, fn: MapFn, *, stage: str) -> LocalKeys:
        """`fn` on worker threads, at most one more batch in flight than there are threads."""
        parts: list[pa.RecordBatch] = []
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(_THREADS) as pool:
            for batch in data():
                pending.append(pool.submit(fn, batch))
                if len(pending) > _THREADS:
                    parts.append(pending.popleft().result())
            parts += [f.result() for f in pending]
        return LocalKeys(concat_keys(parts))

    def split(self, data: Stream, column: str, on_removed: Batches,
              on_kept: Batches | None = None) -> tuple[Stream | None, int]:
        folder = self._spill / f"pass-{self._passes}"
        self._passes += 1
        writer = None
        seen = 0
        for batch in data():
            seen += batch.num_rows
            removed = batch.column(column).is_valid()
            if removed.true_count:
                on_removed(batch.filter(removed))
            kept = batch.filter(pc.invert(removed)).drop_columns([column])
            if on_kept is not None:
                on_kept(kept)
                continue
            if writer is None:
                writer = ShardWriter(folder, kept.schema)
            writer.write(kept)
        for old in self._spill.glob("pass-*"):  # the pass just read is no longer needed
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        if on_kept is not None:
            return None, seen
        if writer is None:
            return (lambda: iter(())), seen
        writer.close()
        return (lambda: iter_batches(folder, self._batch_size)), seen

    def each(self, fn: Callable[[Any], Any], items: Sequence[Any], *, stage: str) -> Iterator[Any]:
        return map(fn, items)

    def close(self) -> None:
        shutil.rmtree(self._spill, ignore_errors=True)


def fit_in_process(f: GlobalFilter, batches: Iterable[pa.RecordBatch], previous: Path | None = None) -> None:
    """Fit a global filter here on batches that carry `_pos` (tests, benchmarks, small jobs)."""
    f.fit(LocalKeys(concat_keys(f.keys(b) for b in batches)), previous)
