"""What an executor does for a stage: read its rows with positions, run maps, gather keys, split.

A stage sees rows only through a `Data` handle (what it is depends on the executor: a re-readable
stream of Arrow batches here, a Ray Dataset on Ray). Every row carries `_pos` (filters/base.py),
so results never depend on which worker saw which batch or in what order batches finished.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from instructforge.engines.base import Engine
from instructforge.engines.config import EngineConfig
from instructforge.filters.base import Keys
from instructforge.runs import RunContext, StageOutput

Batches = Callable[[pa.RecordBatch], None]
MapFn = Callable[[pa.RecordBatch], pa.RecordBatch]
Data = Any  # the executor's handle on a set of rows


class Executor(ABC):
    def __init__(self, run: RunContext, work: Path):
        self.run, self.work = run, work  # work: the stage's work folder (spilled passes)

    @abstractmethod
    def read(self, inputs: list[StageOutput], schema: pa.Schema, batch_size: int) -> Data:
        """Every row of `inputs` cast to `schema`, with `_pos` numbering them in input order."""

    @abstractmethod
    def map(self, data: Data, fn: MapFn, *, stage: str, on_driver: bool = False) -> Data:
        """`fn` over every batch; `on_driver`: in this process (it holds the engine)."""

    @abstractmethod
    def keys(self, data: Data, fn: MapFn, *, stage: str) -> Keys:
        """`fn` over every batch, its outputs gathered for `fit` on the driver."""

    @abstractmethod
    def split(self, data: Data, column: str, on_removed: Batches, on_kept: Batches | None = None) -> tuple[Data, int]:
        """Rows whose `column` is set go to `on_removed`, in `_pos` order, on the driver; the rest,
        without `column`, go to `on_kept` when given (then no Data is returned) or stay as Data for
        the next pass. Returns (kept Data or None, rows seen)."""

    @abstractmethod
    def each(self, fn: Callable[[Any], Any], items: Sequence[Any], *, stage: str) -> Iterator[Any]:
        """`fn(item)` for every item (a source shard to read, a task to render, a file to write), the
        results in item order. On Ray each call is a task, run again when its worker dies, so `fn`
        must give the same result when rerun; an error `fn` raises is raised here, the first in
        item order (as the local executor would)."""

    def close(self) -> None:
        """Free what the executor holds (work folders); the Ray cluster itself stays up."""

    @staticmethod
    def create_engine(run: RunContext, engine: EngineConfig, *, request_cache: Path | None,
                      cache_dir: Path | None) -> Engine:
        """Where the pipeline's LLM engine lives: by default in this process."""
        from instructforge.engines import create_engine

        return create_engine(engine, request_cache=request_cache, cache_dir=cache_dir)


def as_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The stage's columns of `batch`, cast to its schema (inputs may come from older shards)."""
    return pa.RecordBatch.from_arrays([batch.column(n).cast(f.type) for n, f in zip(schema.names, schema)],
                                      schema=schema)
