"""Which row of a duplicate group survives: the keep rule, applied the same way by every dedup filter.

Rules: `first` (input order), `lowest_id`, `longest_output`, `highest_score` (a numeric meta key;
rows without it rank last). Ties always fall back to input order (`_pos`), so the choice is the
same on every executor. Rows are visited in keep order and a row is removed when it duplicates a
row kept before it; rows kept by an earlier run (incremental) come before every row of this run.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from instructforge.filters.base import POS
from instructforge.filters.config import KeepRule

RANK = "_rank"  # float64 key column: lower is kept first (0 for `first` and `lowest_id`)


def rank(batch: pa.RecordBatch, rule: KeepRule, score_key: str = "judge_score") -> pa.Array:
    """The value the keep rule ranks each row by (a map-side key column)."""
    if rule == "longest_output":
        lengths = pc.fill_null(pc.utf8_length(batch.column("output")), 0)
        return pa.array(-np.asarray(lengths, dtype=np.float64))
    if rule == "highest_score":
        raw = pc.map_lookup(batch.column("meta"), pa.scalar(score_key), "first")
        scores = np.array([_as_float(s) for s in raw.to_pylist()], dtype=np.float64)
        return pa.array(-np.nan_to_num(scores, nan=-np.inf))
    return pa.array(np.zeros(batch.num_rows))


def keep_order(keys: pa.Table, rule: KeepRule) -> np.ndarray:
    """Row indices of `keys` (columns id, _rank, _pos) in the order the keep rule visits them."""
    sort = [(RANK, "ascending")] + ([("id", "ascending")] if rule == "lowest_id" else []) + [(POS, "ascending")]
    return np.asarray(pc.sort_indices(keys, sort), dtype=np.int64)


def _as_float(value: str | None) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except ValueError:
        return float("nan")
