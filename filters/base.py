"""The shape every filter has, so the local stage and a distributed executor can run the same code.

A filter is a function over batches of `Example` rows: `apply(batch, start)` returns the batch
(possibly with new meta, e.g. a judge score) and the rows it removes, as
{row index in batch: (reason, evidence)}. Filters that decide from the whole dataset (dedup)
first see every row once in `fit(batches)`, which builds their global index; `apply` then looks
rows up by their position `start + i` in that same sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

Rejections = dict[int, tuple[str, dict[str, str]]]


class Filter:
    name: str = "filter"
    needs_fit: bool = False  # True: fit() must see all rows before apply() is called

    def fit(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Build the global index from every row, in the order apply() will see them."""

    def apply(self, batch: pa.RecordBatch, start: int) -> tuple[pa.RecordBatch, Rejections]:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Extra figures for stats.json (e.g. matches per benchmark); empty by default."""
        return {}


def fmt(x: float) -> str:
    """Scores and similarities in evidence maps: short and stable."""
    return "nan" if math.isnan(x) else f"{x:.4f}".rstrip("0").rstrip(".")
