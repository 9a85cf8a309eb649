"""Exact dedup: rows whose chosen fields are equal after normalisation keep one representative.

Normalisation (NFKC, lowercase, punctuation and whitespace runs collapsed) happens in Arrow; each
row's normalised fields are reduced to a 64-bit BLAKE2b key, so the global index is 8 bytes a row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from instructforge.filters.base import Filter, Rejections
from instructforge.filters.config import ExactDedupConfig
from instructforge.filters.keep import KeepKeys
from instructforge.filters.text import normalize


def exact_keys(batch: pa.RecordBatch, fields: list[str]) -> np.ndarray:
    """64-bit key of each row's normalised fields (unit-separator joined, so fields cannot merge)."""
    joined = pc.binary_join_element_wise(*[normalize(batch.column(f)) for f in fields], "\x1f")
    digests = b"".join(hashlib.blake2b(s.encode(), digest_size=8).digest() for s in joined.to_pylist())
    return np.frombuffer(digests, dtype=np.uint64)


class ExactDedup(Filter):
    needs_fit = True

    def __init__(self, cfg: ExactDedupConfig):
        self.cfg, self.name = cfg, cfg.label
        self._rep = np.zeros(0, dtype=np.int64)
        self._sizes = np.zeros(0, dtype=np.int64)
        self._ids = pa.chunked_array([], pa.string())

    def fit(self, batches: Iterable[pa.RecordBatch]) -> None:
        keep = KeepKeys(self.cfg.keep, self.cfg.score_key)
        keys = []
        for batch in batches:
            keys.append(exact_keys(batch, list(self.cfg.fields)))
            keep.add(batch)
        all_keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        _, groups, counts = np.unique(all_keys, return_inverse=True, return_counts=True)
        self._rep = keep.representatives(groups)
        self._sizes = counts[groups]
        self._ids = keep.ids

    def apply(self, batch: pa.RecordBatch, start: int) -> tuple[pa.RecordBatch, Rejections]:
        rows = np.arange(start, start + batch.num_rows)
        dropped = rows[self._rep[rows] != rows]
        kept_ids = self._ids.take(pa.array(self._rep[dropped])).to_pylist()
        fields = "+".join(self.cfg.fields)
        return batch, {
            int(r - start): (f"exact duplicate ({fields})",
                             {"kept_id": kid, "group_size": str(int(self._sizes[r])), "fields": fields})
            for r, kid in zip(dropped, kept_ids, strict=True)}
