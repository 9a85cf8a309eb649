"""Which row of a duplicate group survives: the keep rule, applied the same way by every dedup filter.

Rules: `first` (input order), `lowest_id`, `longest_output`, `highest_score` (a numeric meta key;
rows without it rank last). Ties always fall back to input order, so the choice is deterministic.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from instructforge.filters.config import KeepRule


class KeepKeys:
    """Collects, batch by batch during fit, the row ids and the one value the keep rule ranks by."""

    def __init__(self, rule: KeepRule, score_key: str = "judge_score"):
        self.rule, self.score_key = rule, score_key
        self._ids: list[pa.Array] = []
        self._rank: list[np.ndarray] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self._ids.append(batch.column("id"))
        if self.rule == "longest_output":
            lengths = pc.fill_null(pc.utf8_length(batch.column("output")), 0)
            self._rank.append(-np.asarray(lengths, dtype=np.float64))
        elif self.rule == "highest_score":
            raw = pc.map_lookup(batch.column("meta"), pa.scalar(self.score_key), "first")
            scores = np.array([_as_float(s) for s in raw.to_pylist()], dtype=np.float64)
            self._rank.append(-np.nan_to_num(scores, nan=-np.inf))

    @property
    def ids(self) -> pa.ChunkedArray:
        return pa.chunked_array(self._ids, pa.string())

    def representatives(self, groups: np.ndarray) -> np.ndarray:
        """For every row, the index of the row kept for its group (itself when it is kept)."""
        n = len(groups)
        position = np.arange(n)
        if self.rule == "lowest_id":
            rank = np.empty(n, dtype=np.int64)
            rank[np.asarray(pc.sort_indices(self.ids))] = position  # stable: equal ids keep input order
        elif self.rule in ("longest_output", "highest_score"):
            rank = np.concatenate(self._rank) if self._rank else np.zeros(0)
        else:
            rank = position
        order = np.lexsort((position, rank, groups))  # last key is the primary one
        sorted_groups = groups[order]
        first = np.ones(n, dtype=bool)
        first[1:] = sorted_groups[1:] != sorted_groups[:-1]
        starts = np.flatnonzero(first)
        sizes = np.diff(np.append(starts, n))
        rep = np.empty(n, dtype=np.int64)
        rep[order] = np.repeat(order[starts], sizes)
        return rep


def _as_float(value: str | None) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except ValueError:
        return float("nan")
