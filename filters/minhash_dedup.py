"""MinHash near-dedup: LSH over word n-gram shingles, clusters by connected components, one kept per cluster.

Signatures are the ones datasketch's `MinHash` (scheme affine32) computes for the same 32-bit
shingle hashes and seed, but for a whole batch at once: shingles are hashed once (text.py), then
every permutation `a * fmix32(h) + b mod 2^32` is applied with numpy uint32 arithmetic and
min-reduced per document (short documents in dense padded blocks, long ones per segment). Batches
are hashed on two threads. The (bands, rows) split is the one datasketch's `MinHashLSH`
chooses for the threshold; banding is done with numpy (one 64-bit key per band and document,
rows sharing a key are joined). Duplicate groups are the connected components of those joins
(union-find), so a chain a~b~c is one cluster; the keep rule picks its representative.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
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
_CHUNK = 1 << 14  # shingles per permutation matrix of long documents: 16K x 128 x 4 bytes = 8 MiB
_THREADS = min(2, os.cpu_count() or 1)  # batches hashed at once during fit
_LONG = 64  # documents with more shingles take the per-segment path
_BLOCK = 1 << 20  # values (documents x width x permutations) per dense block of short documents
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
    """(documents x permutations) MinHash values; a document without shingles gets all 2^32-1."""
    out = np.full((len(offsets) - 1, len(a)), np.iinfo(_U32).max, dtype=_U32)
    mixed = fmix32(hashes)
    lengths = np.diff(offsets)
    long = lengths > _LONG
    _min_dense(mixed, offsets, lengths, np.flatnonzero((lengths > 0) & ~long), a, b, out)
    _min_segments(mixed, offsets, lengths, np.flatnonzero(long), a, b, out)
    return out


def _min_dense(mixed: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, docs: np.ndarray,
               a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Signatures of documents with few shingles, as a running minimum over their shingle columns.

    Documents are grouped by shingle count rounded up (by at most a quarter) and padded by repeating
    their last shingle, which leaves the minimum unchanged: a group is a dense (documents x width)
    matrix, and each column updates a (documents x permutations) block that stays in cache.
    """
    width = _round_up(lengths[docs])
    order = np.argsort(width, kind="stable")
    cuts = np.flatnonzero(np.diff(width[order])) + 1
    for group in np.split(docs[order], cuts):
        if not len(group):
            continue
        w = int(_round_up(lengths[group[:1]])[0])
        step = max(1, _BLOCK // (w * len(a)))
        for s in range(0, len(group), step):
            rows = group[s:s + step]
            x = mixed[offsets[rows, None] + np.minimum(np.arange(w), lengths[rows, None] - 1)]
            acc = np.multiply(x[:, :1], a)
            acc += b
            tmp = np.empty_like(acc)
            for j in range(1, w):
                np.multiply(x[:, j:j + 1], a, out=tmp)
                tmp += b
                np.minimum(acc, tmp, out=acc)
            out[rows] = acc


def _min_segments(mixed: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, docs: np.ndarray,
                  a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Signatures of long documents: a (permutations x shingles) matrix per chunk of documents,
    min-reduced along its contiguous axis once per document (long segments amortise each call)."""
    ends = np.cumsum(lengths[docs])
    i = 0
    while i < len(docs):
        j = max(int(np.searchsorted(ends, ends[i] - lengths[docs[i]] + _CHUNK, side="right")), i + 1)
        rows, lens = docs[i:j], lengths[docs[i:j]]
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        shingle = np.repeat(offsets[rows] - starts, lens) + np.arange(int(lens.sum()))
        values = a[:, None] * mixed[None, shingle]
        values += b[:, None]
        out[rows] = np.minimum.reduceat(values, starts, axis=1).T
        i = j


def _round_up(k: np.ndarray) -> np.ndarray:
    """k rounded up to a multiple of 2^(floor(log2 k) - 2): at most 25% more, few distinct values."""
    grain = np.left_shift(1, np.maximum(0, np.floor(np.log2(np.maximum(k, 1))).astype(np.int64) - 2))
    return (k + grain - 1) // grain * grain


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
        self._sigs: list[np.ndarray] = []  # per batch: one copy of 1M signatures is already 512 MiB
        self._starts = np.zeros(1, np.int64)  # first row of each batch
        self._labels = self._rep = self._sizes = np.zeros(0, np.int64)
        self._ids = pa.chunked_array([], pa.string())
        self._clusters = 0

    def signatures(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """The batch's signatures and which rows have any text to compare."""
        hashes, offsets = shingles(join_fields(batch, list(self.cfg.fields)), self.cfg.ngram)
        return signatures(hashes, offsets, self._a, self._b), np.diff(offsets) > 0

    def _index(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sigs, valid = self.signatures(batch)
        return sigs, band_keys(sigs, self.bands, self.rows), valid

    def fit(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Index every batch; batches are hashed on worker threads (numpy and Arrow release the GIL),
        at most one more in flight than there are threads, and collected in input order."""
        keep = KeepKeys(self.cfg.keep, self.cfg.score_key)
        sigs, keys, valid = [], [], []
        pending: deque[Future] = deque()

        def collect() -> None:
            s, k, v = pending.popleft().result()
            sigs.append(s)
            keys.append(k)
            valid.append(v)

        with ThreadPoolExecutor(_THREADS) as pool:
            for batch in batches:
                keep.add(batch)
                pending.append(pool.submit(self._index, batch))
                if len(pending) > _THREADS:
                    collect()
            while pending:
                collect()
        if not sigs:
            return
        self._sigs = sigs
        self._starts = np.cumsum([0] + [len(x) for x in sigs])
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
        similarity = (self._signature_rows(dropped) == self._signature_rows(reps)).mean(axis=1)
        return batch, {
            int(r - start): ("near duplicate (MinHash)", {
                "kept_id": kid, "cluster_id": str(int(self._labels[r])),
                "cluster_size": str(int(self._sizes[r])), "similarity": fmt(float(sim))})
            for r, kid, sim in zip(dropped, kept_ids, similarity, strict=True)}

    def _signature_rows(self, rows: np.ndarray) -> np.ndarray:
        """The signatures of these global row positions, from the per-batch arrays."""
        which = np.searchsorted(self._starts, rows, side="right") - 1
        out = np.empty((len(rows), len(self._a)), _U32)
        for k in np.unique(which):
            mine = which == k
            out[mine] = self._sigs[k][rows[mine] - self._starts[k]]
        return out

    def stats(self) -> dict[str, int | float]:
        return {"bands": self.bands, "rows_per_band": self.rows, "clusters": self._clusters}
