"""The shapes a filter can take, so the local stage and a distributed executor run the same code.

Every row reaching a filter carries `_pos`, its position in the stage's input (input stage, shard,
row), assigned once when the stage reads its inputs in order; rules such as "keep the first" look
at `_pos`, never at the order batches happen to arrive in, so any executor gets the same answer.

- `Filter` is a **map block**: `apply(batch)` is pure; it returns the batch (possibly with new
  meta, e.g. a judge score) and the rows it removes, as {row index in batch: (reason, evidence)}.
- `GlobalFilter` is a **global block**: `keys(batch)` is a map extracting compact per-row keys
  (with `_pos`), `fit(keys)` runs once on the driver and builds an index keyed by `_pos` that is
  small enough to ship to every worker (a drop-map), then `apply` is a map again. Its `fit` may be
  sequential over the keys in `_pos` order (novelty `within`: a driver block); only the drop-map is
  shipped to the workers, never the index itself. A global filter saves its index and loads a
  previous run's, so earlier kept rows count as earlier than new ones (incremental runs).
- A filter with `on_driver` (the judge, which holds the pipeline's engine) runs in the driver's
  process; its engine calls go wherever the engine is (in process, or Ray actors).
- Figures for stats.json are partial dicts merged by sum (`merge_counts`): `tally(evidence)`
  counts the removed rows of one batch; `stats()` reports what the driver knows (fit, on_driver).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Rejections = dict[int, tuple[str, dict[str, str]]]
POS = "_pos"  # int64 column: the row's position in the stage's input


class Filter:
    name: str = "filter"
    on_driver: bool = False  # True: apply() needs the driver's process (it holds the engine)

    def apply(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rejections]:
        raise NotImplementedError

    def tally(self, evidence: list[dict[str, str]]) -> dict[str, Any]:
        """Counts over the evidence of rows this filter removed in one batch (merged by sum)."""
        return {}

    def stats(self) -> dict[str, Any]:
        """Figures the driver knows after fit (e.g. clusters found); empty by default."""
        return {}


class Keys(Protocol):
    """A global filter's per-row keys, wherever the executor keeps them."""

    def table(self, columns: list[str]) -> pa.Table:
        """These key columns of every row, sorted by `_pos` (includes `_pos`)."""

    def parts(self, column: str) -> list[tuple[int, Callable[[], pa.ChunkedArray]]]:
        """`column` of every row, in the table's order, as consecutive parts (rows, load): a wide
        column (MinHash signatures) is read a part at a time, never whole on the driver."""


class GlobalFilter(Filter):
    def keys(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Compact per-row keys (always with `_pos`); runs as a map on the workers."""
        raise NotImplementedError

    def fit(self, keys: Keys, previous: Path | None) -> None:
        """Build the index from every row's keys on the driver; `previous` is a saved index
        folder from an earlier run: its kept rows count as earlier than every row here."""
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        """Write the index covering the previous rows and the rows kept here."""
        raise NotImplementedError

    drop: DropMap  # what fit decided; apply() and the workers use only this

    def apply(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rejections]:
        return self.drop.apply(batch)


class DropMap(Filter):
    """The rows a global filter removes, keyed by `_pos`, with their reasons and evidence: what is
    shipped to the workers in place of the filter and its index."""

    def __init__(self, name: str, positions: np.ndarray, reasons: list[str], evidence: list[dict[str, str]]):
        order = np.argsort(positions, kind="stable")
        self.name = name
        self.positions = np.asarray(positions, dtype=np.int64)[order]
        self.reasons = [reasons[i] for i in order]
        self.evidence = [evidence[i] for i in order]

    @classmethod
    def empty(cls, name: str) -> DropMap:
        return cls(name, np.zeros(0, np.int64), [], [])

    def __len__(self) -> int:
        return len(self.positions)

    def apply(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rejections]:
        hit, at = find_sorted(self.positions, np.asarray(batch.column(POS), dtype=np.int64))
        return batch, {int(i): (self.reasons[at[i]], dict(self.evidence[at[i]])) for i in np.flatnonzero(hit)}


def find_sorted(haystack: np.ndarray, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which needles are in the sorted `haystack`, and where): a vectorised set lookup."""
    if not len(haystack):
        return np.zeros(len(needles), dtype=bool), np.zeros(len(needles), dtype=np.int64)
    at = np.minimum(np.searchsorted(haystack, needles), len(haystack) - 1)
    return haystack[at] == needles, at


def with_positions(batch: pa.RecordBatch, start: int) -> pa.RecordBatch:
    return batch.append_column(POS, pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64)))


def sort_by_pos(table: pa.Table) -> pa.Table:
    """`table` in `_pos` order (itself, not a copy, when it already is: keys can be large)."""
    pos = np.asarray(table.column(POS))
    if (np.diff(pos) > 0).all():
        return table
    return table.take(pc.sort_indices(table, [(POS, "ascending")]))


def merge_counts(into: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Sum `part` into `into`: numbers add, nested dicts (histograms) merge key by key."""
    for key, value in part.items():
        if isinstance(value, Mapping):
            merge_counts(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value
    return into


def concat_keys(parts: Iterable[pa.RecordBatch | pa.Table]) -> pa.Table:
    tables = [pa.Table.from_batches([p]) if isinstance(p, pa.RecordBatch) else p for p in parts]
    return sort_by_pos(pa.concat_tables(tables)) if tables else pa.table({POS: pa.array([], pa.int64())})


def fmt(x: float) -> str:
    """Scores and similarities in evidence maps: short and stable."""
    return "nan" if math.isnan(x) else f"{x:.4f}".rstrip("0").rstrip(".")
