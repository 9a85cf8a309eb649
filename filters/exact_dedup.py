"""Exact dedup: rows whose chosen fields are equal after normalisation keep one representative.

Normalisation (NFKC, lowercase, punctuation and whitespace runs collapsed) happens in Arrow; each
row's normalised fields are reduced to a 64-bit BLAKE2b key, so the global index is 8 bytes a row.
A row is removed when a row earlier in keep order (keep.py) has the same key; the saved index is
the keys of every kept row, so a later incremental run removes rows kept before as well.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from instructforge.filters.base import POS, DropMap, GlobalFilter, Keys, find_sorted
from instructforge.filters.config import ExactDedupConfig
from instructforge.filters.keep import RANK, keep_order, rank
from instructforge.filters.text import normalize


def exact_keys(batch: pa.RecordBatch, fields: list[str]) -> np.ndarray:
    """64-bit key of each row's normalised fields (unit-separator joined, so fields cannot merge)."""
    joined = pc.binary_join_element_wise(*[normalize(batch.column(f)) for f in fields], "\x1f")
    digests = b"".join(hashlib.blake2b(s.encode(), digest_size=8).digest() for s in joined.to_pylist())
    return np.frombuffer(digests, dtype=np.uint64)


class ExactDedup(GlobalFilter):
    def __init__(self, cfg: ExactDedupConfig):
        self.cfg, self.name = cfg, cfg.label
        self.drop = DropMap.empty(self.name)
        self._index = pa.table({"key": pa.array([], pa.uint64()), "id": pa.array([], pa.string())})

    def keys(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({
            POS: batch.column(POS), "id": batch.column("id"),
            "key": pa.array(exact_keys(batch, list(self.cfg.fields))),
            RANK: rank(batch, self.cfg.keep, self.cfg.score_key)})

    def fit(self, keys: Keys, previous: Path | None) -> None:
        table = keys.table(["id", "key", RANK])
        order = keep_order(table, self.cfg.keep)
        key = np.asarray(table.column("key"), dtype=np.uint64)[order]
        ids = np.asarray(table.column("id").to_pylist(), dtype=object)[order]
        pos = np.asarray(table.column(POS), dtype=np.int64)[order]
        old = pq.read_table(previous / "index.parquet") if previous else self._index
        old_keys = np.asarray(old.column("key"), dtype=np.uint64)
        old_ids = np.asarray(old.column("id").to_pylist(), dtype=object)
        seen, at = find_sorted(old_keys, key)  # the index is sorted by key
        kept_id = np.empty(len(key), dtype=object)
        kept_id[seen] = old_ids[at[seen]]
        new = np.flatnonzero(~seen)
        _, first, group = np.unique(key[new], return_index=True, return_inverse=True)
        kept_id[new] = ids[new[first]][group]
        dropped = np.concatenate([np.flatnonzero(seen), new[new != new[first][group]]])
        fields = "+".join(self.cfg.fields)
        self.drop = DropMap(self.name, pos[dropped], [f"exact duplicate ({fields})"] * len(dropped),
                            [{"kept_id": k, "fields": fields} for k in kept_id[dropped]])
        merged = pa.table({"key": pa.array(np.concatenate([old_keys, key[new[first]]]), pa.uint64()),
                           "id": pa.array(np.concatenate([old_ids, ids[new[first]]]).tolist(), pa.string())})
        self._index = merged.take(pc.sort_indices(merged, [("key", "ascending")]))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(self._index, folder / "index.parquet")
