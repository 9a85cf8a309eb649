"""MinHash near-dedup: LSH over word n-gram shingles; a row goes when it shares a band with an earlier kept row.

Signatures are the ones datasketch's `MinHash` (scheme affine32) computes for the same 32-bit
shingle hashes and seed, but for a whole batch at once: one compiled pass (numba, no GIL) per batch
cuts each document's words from the Arrow string buffer, hashes them and their n-grams (the hashes
of text.py), and applies every permutation `a * fmix32(h) + b mod 2^32` as a vectorised uint32 loop,
keeping the running minimum; nothing per shingle is materialised. The (bands, rows) split is the one datasketch's `MinHashLSH`
chooses for the threshold; banding is done with numpy (one 64-bit key per band and document,
rows sharing a key are joined).

Which rows go: rows are visited in keep order (keep.py) and a row is removed iff it shares a band
key with a row kept before it (its evidence names the earliest such row). So in a chain a~b~c
where only b is near both, b goes and c stays. Unlike "one kept per connected component", this
rule gives the same answer when the rows arrive over several incremental runs: a row's fate
depends only on rows before it, and the saved index (band keys and signatures of every kept row)
stands for all earlier runs. Connected components still find the few rows that need the
sequential pass (those sharing a band key with another row).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasketch import MinHash, MinHashLSH
from numba import njit
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from instructforge.filters.base import POS, DropMap, GlobalFilter, Keys, fmt
from instructforge.filters.config import MinHashDedupConfig
from instructforge.filters.keep import RANK, keep_order, rank
from instructforge.filters.text import (
    _MULT,
    _WORD_BYTE,
    _string_buffer,
    fmix64,
    gram_hash,
    hash_doc_words,
    join_fields,
    ngram_hashes,
    prepared,
    tokenize,
)

_U32 = np.uint32
_SAVE_ROWS = 1 << 16  # index rows gathered and written at once
_M1, _M2, _MAX = _U32(0x85EBCA6B), _U32(0xC2B2AE35), _U32(0xFFFFFFFF)  # fmix32 constants, empty value
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


def shingles(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word n-grams (a text shorter than n words is one shingle)."""
    hashes, offsets = ngram_hashes(*tokenize(texts), ngram)
    return (hashes >> np.uint64(32)).astype(_U32), offsets


def signatures(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(documents x permutations) MinHash values of given shingles; no shingles: all 2^32-1."""
    out = np.empty((len(offsets) - 1, len(a)), dtype=_U32)
    _signatures(hashes.astype(_U32), offsets.astype(np.int64), a, b, out)
    return out


def text_signatures(texts: pa.Array, ngram: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`signatures(*shingles(texts, ngram), a, b)` in one compiled pass over the text bytes: each
    document's words, n-gram hashes and permutation minima are computed while its bytes are in cache."""
    data, doc_off = _string_buffer(prepared(texts))
    out = np.empty((len(doc_off) - 1, len(a)), dtype=_U32)
    # one buffer for a document's word hashes, as long as the longest can need: reallocating an
    # array inside a compiled loop costs reference counting on every access (3x slower)
    words = np.empty(int(np.diff(doc_off).max(initial=0)) // 2 + 1, np.uint64)
    _text_signatures(data, doc_off, _WORD_BYTE, ngram, _MULT, a, b, words, out)
    return out


@njit(nogil=True, cache=True)
def _fmix32(h):
    h ^= h >> _U32(16)
    h = _U32(h * _M1)
    h ^= h >> _U32(13)
    h = _U32(h * _M2)
    return h ^ (h >> _U32(16))


@njit(nogil=True, cache=True)
def _permute_min(shingle, a, b, row):
    """row = min(row, a * fmix32(shingle) + b mod 2^32), over all permutations (vectorised loop)."""
    m = _fmix32(shingle)
    for p in range(len(a)):
        row[p] = min(row[p], _U32(a[p] * m + b[p]))


@njit(nogil=True, cache=True)
def _signatures(hashes, offsets, a, b, out):
    for d in range(len(offsets) - 1):
        row = out[d]
        row[:] = _MAX
        for k in range(offsets[d], offsets[d + 1]):
            _permute_min(hashes[k], a, b, row)


@njit(nogil=True, cache=True)
def _text_signatures(data, doc_off, is_word, ngram, mult, a, b, words, out):
    for d in range(len(doc_off) - 1):
        n = hash_doc_words(data, doc_off[d], doc_off[d + 1], is_word, words, 0)
        row = out[d]
        row[:] = _MAX
        width = min(n, ngram)
        for start in range(n - width + 1 if n else 0):
            _permute_min(_U32(gram_hash(words, start, width, mult) >> np.uint64(32)), a, b, row)


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


class MinHashDedup(GlobalFilter):
    """`spill`: a folder on the driver's disk where `keys` writes each batch's signatures (local
    executor), so the driver's key table holds band keys only (128 signature values are 4.6x the
    band keys); without it (Ray: workers elsewhere) they travel in the key table."""

    def __init__(self, cfg: MinHashDedupConfig, spill: Path | None = None):
        self.cfg, self.name, self.spill = cfg, cfg.label, spill
        if spill is not None:  # a killed earlier attempt's files must not mix with this run's
            shutil.rmtree(spill, ignore_errors=True)
        self.bands, self.rows = lsh_params(cfg.threshold, cfg.num_perm)
        self._a, self._b = permutations(cfg.num_perm, cfg.seed)
        self.drop = DropMap.empty(self.name)
        self._kept_bands = np.zeros((0, self.bands), np.uint64)  # index: every kept row, in keep order
        self._kept_sigs = np.zeros((0, cfg.num_perm), _U32)  # earlier runs' kept rows (memory-mapped)
        # signatures of the rows kept in this run: where they are and which key-table rows, in keep order
        self._new_sigs: _Signatures | None = None
        self._new_rows = np.zeros(0, np.int64)
        self._kept_ids = pa.chunked_array([], pa.string())
        self._groups = 0

    def signatures(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """The batch's signatures and which rows have any text to compare."""
        sigs = text_signatures(join_fields(batch, list(self.cfg.fields)), self.cfg.ngram, self._a, self._b)
        return sigs, (sigs != _MAX).any(axis=1)  # all 2^32-1: no words

    def keys(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        sigs, valid = self.signatures(batch)
        keys = band_keys(sigs, self.bands, self.rows)
        columns = {
            POS: batch.column(POS), "id": batch.column("id"), RANK: rank(batch, self.cfg.keep, self.cfg.score_key),
            "valid": pa.array(valid), "bands": pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel()), self.bands)}
        if self.spill is None:
            columns["sig"] = pa.FixedSizeListArray.from_arrays(pa.array(sigs.ravel()), len(self._a))
        elif batch.num_rows:  # named by the batch's first _pos: key-table order (batches hold disjoint ranges)
            self.spill.mkdir(parents=True, exist_ok=True)
            np.save(self.spill / f"{batch.column(POS)[0].as_py():015d}.npy", sigs)
        return pa.RecordBatch.from_pydict(columns)

    def fit(self, keys: Keys, previous: Path | None) -> None:
        """Visit rows in keep order after the previously kept ones; drop a row sharing a band key
        with a row kept before it. Signatures (key table or spill files) are read only for the rows
        removed, their kept partners and the new index, a block at a time."""
        table = keys.table(["id", RANK, "valid", "bands"])
        sigs = _Signatures(self._signature_parts(keys), table.num_rows, len(self._a), str(self.spill or self.name))
        order = keep_order(table, self.cfg.keep)
        in_order = bool((order == np.arange(len(order))).all())  # keep `first`: no reordered copies
        new_bands = _matrix(table.column("bands"), self.bands, np.uint64)
        new_bands = new_bands if in_order else new_bands[order]
        ids = table.column("id")
        pos = np.asarray(table.column(POS), dtype=np.int64)[order]
        if previous:
            self._kept_bands = np.load(previous / "bands.npy")
            self._kept_sigs = np.load(previous / "signatures.npy", mmap_mode="r")
            self._kept_ids = pq.read_table(previous / "ids.parquet").column("id")
        m = len(self._kept_ids)
        all_bands = np.concatenate([self._kept_bands, new_bands]) if m else new_bands
        valid = np.concatenate([np.ones(m, bool), np.asarray(table.column("valid"), dtype=bool)[order]])
        match = _earlier_kept(all_bands, clusters(all_bands, valid), m)  # combined row -> earlier kept row, or -1
        dropped = np.flatnonzero(match[m:] >= 0)
        kept = np.flatnonzero(match[m:] < 0)
        partner = match[m + dropped]
        old = partner < m
        similarity = np.empty(len(dropped))
        for i in range(0, len(dropped), _SAVE_ROWS):
            part, old_part = partner[i:i + _SAVE_ROWS], old[i:i + _SAVE_ROWS]
            partner_sigs = np.empty((len(part), len(self._a)), _U32)
            partner_sigs[old_part] = self._kept_sigs[part[old_part]]
            partner_sigs[~old_part] = sigs.rows(order[part[~old_part] - m])
            similarity[i:i + _SAVE_ROWS] = (sigs.rows(order[dropped[i:i + _SAVE_ROWS]]) == partner_sigs).mean(axis=1)
        kept_ids = np.empty(len(dropped), dtype=object)
        kept_ids[old] = self._kept_ids.take(pa.array(partner[old], pa.int64())).to_pylist()
        kept_ids[~old] = ids.take(pa.array(order[partner[~old] - m], pa.int64())).to_pylist()
        self.drop = DropMap(self.name, pos[dropped], ["near duplicate (MinHash)"] * len(dropped), [
            {"kept_id": kid, "similarity": fmt(float(sim))} for kid, sim in zip(kept_ids, similarity, strict=True)])
        self._groups = len(np.unique(partner))
        self._kept_bands = np.concatenate([self._kept_bands, new_bands[kept]])
        self._new_sigs, self._new_rows = sigs, order[kept]  # written by save(), never copied whole
        self._kept_ids = pa.chunked_array([*self._kept_ids.chunks, *ids.take(pa.array(order[kept])).chunks],
                                          pa.string())

    def _signature_parts(self, keys: Keys) -> list[tuple[int, Callable[[], np.ndarray]]]:
        width = len(self._a)
        if self.spill is None:
            return [(n, lambda load=load: _matrix(load(), width, _U32)) for n, load in keys.parts("sig")]
        files = sorted(self.spill.glob("*.npy"))
        return [(np.load(f, mmap_mode="r").shape[0], partial(np.load, f, mmap_mode="r")) for f in files]

    def save(self, folder: Path) -> None:
        """bands.npy, signatures.npy (gathered and written block by block) and ids.parquet of every
        kept row, earlier runs' first; then the index is let go (only `drop` is used after fit)."""
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "bands.npy", self._kept_bands)
        width = len(self._a)
        with open(folder / "signatures.npy", "wb") as f:
            np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(_U32)),
                                                     "fortran_order": False, "shape": (len(self._kept_ids), width)})
            f.writelines(np.ascontiguousarray(self._kept_sigs[i:i + _SAVE_ROWS]).tobytes()
                         for i in range(0, len(self._kept_sigs), _SAVE_ROWS))
            f.writelines(self._new_sigs.rows(self._new_rows[i:i + _SAVE_ROWS]).tobytes()
                         for i in range(0, len(self._new_rows), _SAVE_ROWS))
        pq.write_table(pa.table({"id": self._kept_ids}), folder / "ids.parquet")
        if self.spill is not None:
            shutil.rmtree(self.spill, ignore_errors=True)
        self._kept_bands = self._kept_sigs = self._new_sigs = self._new_rows = self._kept_ids = None

    def stats(self) -> dict[str, int | float]:
        return {"bands": self.bands, "rows_per_band": self.rows, "duplicate_groups": self._groups}


class _Signatures:
    """The signatures of the key table's rows, read from consecutive parts (the spill folder's
    per-batch files, or the key table's `sig` column block by block): only the parts holding rows
    asked for are loaded, one at a time, and nothing stays loaded."""

    def __init__(self, parts: list[tuple[int, Callable[[], np.ndarray]]], rows: int, width: int, where: str):
        self.width = width
        self.loads = [load for _, load in parts]
        self.starts = np.concatenate([[0], np.cumsum([n for n, _ in parts], dtype=np.int64)])
        if self.starts[-1] != rows:
            raise RuntimeError(f"{where}: signatures of {self.starts[-1]} rows for {rows} keys")

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """These key-table rows' signatures, as a (rows x width) matrix in the order asked."""
        out = np.empty((len(rows), self.width), _U32)
        part_of = np.searchsorted(self.starts, rows, side="right") - 1
        for k in np.unique(part_of):
            at = np.flatnonzero(part_of == k)
            block = self.loads[k]()
            out[at] = block[rows[at] - self.starts[k]]
            del block
        return out


def _matrix(column: pa.ChunkedArray, width: int, dtype: type) -> np.ndarray:
    flat = np.concatenate([np.asarray(c.flatten(), dtype=dtype) for c in column.chunks]) if column.num_chunks \
        else np.zeros(0, dtype)
    return flat.reshape(-1, width)


def _earlier_kept(bands: np.ndarray, labels: np.ndarray, previous: int) -> np.ndarray:
    """For each row (in visiting order), the earliest kept row it shares a band key with, or -1.

    Only rows of components (`labels`) with more than one row are visited, one component at a time
    (rows of different components share no band key, so their decisions are independent and the
    lookup tables stay small); the first `previous` rows are the earlier runs' kept rows, kept by
    definition.
    """
    match = np.full(len(bands), -1, dtype=np.int64)
    sizes = np.bincount(labels)
    rows = np.flatnonzero(sizes[labels] > 1)
    rows = rows[np.lexsort((rows, labels[rows]))]  # by component, then visiting order
    cuts = np.flatnonzero(np.diff(labels[rows])) + 1
    for component in np.split(rows, cuts):
        first_kept: dict[tuple[int, int], int] = {}
        for i, row in zip(component.tolist(), bands[component].tolist(), strict=True):
            keys = list(enumerate(row))
            if i >= previous:
                hits = [first_kept[k] for k in keys if k in first_kept]
                if hits:
                    match[i] = min(hits)
                    continue
            for k in keys:
                first_kept.setdefault(k, i)
    return match
