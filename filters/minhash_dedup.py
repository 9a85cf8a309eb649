"""MinHash near-dedup: LSH over word n-gram shingles, clusters by connected components, one kept per cluster.

Signatures are the ones datasketch's `MinHash` (scheme affine32) computes for the same 32-bit
shingle hashes and seed, but for a whole batch at once: shingles are hashed once (text.py), then
every permutation `a * fmix32(h) + b mod 2^32` is applied to a (shingles x permutations) matrix
and min-reduced per document. The (bands, rows) split is the one datasketch's `MinHashLSH`
chooses for the threshold; banding is done with numpy (one 64-bit key per band and document,
rows sharing a key are joined). Duplicate groups are the connected components of those joins
(union-find), so a chain a~b~c is one cluster; the keep rule picks its representative.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import pyarrow as pa
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from instructforge.filters.base import Filter, Rejections, fmt
from instructforge.filters.config import MinHashDedupConfig
from instructforge.filters.keep import KeepKeys
from instructforge.filters.text import fmix64, join_fields, ngram_hashes, tokenize

_U32 = np.uint32
_CHUNK = 1 << 14  # shingles per permutation matrix: 16K x 128 x 4 bytes = 8 MiB
# odd multipliers combining a band's rows into one 64-bit key (a band has at most num_perm rows)
_BAND_MULT = np.random.default_rng(0xBA2D).integers(0, 1 << 63, 1024, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


@lru_cache(maxsize=16)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives + false negatives, as datasketch picks them."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd, b) for this seed."""
    a, b = MinHash(num_perm=num_perm, seed=seed).permutations
    return a.astype(_U32), b.astype(_U32)


def fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def shingles(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word n-grams (a text shorter than n words is one shingle)."""
    hashes, offsets = ngram_hashes(*tokenize(texts), ngram)
    return (hashes >> np.uint64(32)).astype(_U32), offsets


def signatures(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(documents x permutations) MinHash values; a document without shingles gets all 2^32-1.

    Works on (permutations x shingles) chunks that stay in cache; the min-reduction runs along
    the contiguous axis, once per document.
    """
    n_docs = len(offsets) - 1
    out = np.full((n_docs, len(a)), np.iinfo(_U32).max, dtype=_U32)
    mixed = fmix32(hashes)
    a, b = a[:, None], b[:, None]
    d0 = 0
    while d0 < n_docs:
        d1 = int(np.searchsorted(offsets, offsets[d0] + _CHUNK, side="right")) - 1
        d1 = min(max(d1, d0 + 1), n_docs)
        lo, hi = int(offsets[d0]), int(offsets[d1])
        if hi > lo:
            nonempty = np.flatnonzero(np.diff(offsets[d0:d1 + 1]) > 0)
            values = a * mixed[None, lo:hi]
            values += b
            out[d0 + nonempty] = np.minimum.reduceat(values, offsets[d0 + nonempty] - lo, axis=1).T
        d0 = d1
    return out


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents x bands) 64-bit keys: documents agreeing on a whole band share its key."""
    keys = np.empty((len(sigs), bands), dtype=np.uint64)
    for j in range(bands):
        acc = np.zeros(len(sigs), dtype=np.uint64)
        for k in range(rows):
            acc += sigs[:, j * rows + k].astype(np.uint64) * _BAND_MULT[k]
        keys[:, j] = fmix64(acc ^ np.uint64(j))
    return keys


def clusters(keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Connected components of 'shares a band key' over the valid documents (others: singletons)."""
    n = len(keys)
    src, dst = [], []
    members = np.flatnonzero(valid)
    for j in range(keys.shape[1]):
        band = keys[members, j]
        order = np.argsort(band, kind="stable")
        same = band[order[1:]] == band[order[:-1]]
        src.append(members[order[1:][same]])
        dst.append(members[order[:-1][same]])
    s = np.concatenate(src) if src else np.zeros(0, np.int64)
    d = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(s), dtype=np.int8), (s, d)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels


class MinHashDedup(Filter):
    needs_fit = True

    def __init__(self, cfg: MinHashDedupConfig):
        self.cfg, self.name = cfg, cfg.label
        self.bands, self.rows = lsh_params(cfg.threshold, cfg.num_perm)
        self._a, self._b = permutations(cfg.num_perm, cfg.seed)
        self._sigs = np.zeros((0, cfg.num_perm), _U32)
        self._labels = self._rep = self._sizes = np.zeros(0, np.int64)
        self._ids = pa.chunked_array([], pa.string())
        self._clusters = 0

    def signatures(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """The batch's signatures and which rows have any text to compare."""
        hashes, offsets = shingles(join_fields(batch, list(self.cfg.fields)), self.cfg.ngram)
        return signatures(hashes, offsets, self._a, self._b), np.diff(offsets) > 0

    def fit(self, batches: Iterable[pa.RecordBatch]) -> None:
        keep = KeepKeys(self.cfg.keep, self.cfg.score_key)
        sigs, keys, valid = [], [], []
        for batch in batches:
            s, v = self.signatures(batch)
            sigs.append(s)
            keys.append(band_keys(s, self.bands, self.rows))
            valid.append(v)
            keep.add(batch)
        if not sigs:
            return
        self._sigs = np.concatenate(sigs)
        self._labels = clusters(np.concatenate(keys), np.concatenate(valid))
        self._rep = keep.representatives(self._labels)
        counts = np.bincount(self._labels)
        self._sizes = counts[self._labels]
        self._clusters = int((counts > 1).sum())
        self._ids = keep.ids

    def apply(self, batch: pa.RecordBatch, start: int) -> tuple[pa.RecordBatch, Rejections]:
        rows = np.arange(start, start + batch.num_rows)
        dropped = rows[self._rep[rows] != rows]
        reps = self._rep[dropped]
        kept_ids = self._ids.take(pa.array(reps)).to_pylist()
        similarity = (self._sigs[dropped] == self._sigs[reps]).mean(axis=1)
        return batch, {
            int(r - start): ("near duplicate (MinHash)", {
                "kept_id": kid, "cluster_id": str(int(self._labels[r])),
                "cluster_size": str(int(self._sizes[r])), "similarity": fmt(float(sim))})
            for r, kid, sim in zip(dropped, kept_ids, similarity, strict=True)}

    def stats(self) -> dict[str, int | float]:
        return {"bands": self.bands, "rows_per_band": self.rows, "clusters": self._clusters}
