"""Decontamination: drop rows that share a word n-gram with a benchmark (GPT-3's 13-gram rule).

Benchmark texts become a hash set of n-gram hashes over normalised words (text.py), built once.
A benchmark text shorter than n words (but at least `min_short_words`) counts as one gram of its own length, and rows
are also scanned with windows of those lengths, so a short benchmark question quoted inside a row
is still found; shorter texts (one-word answers, numbers) are skipped, or they would match anything.
Matching a batch is one compiled pass (numba, no GIL) over its word hashes: every window of every
width is hashed and looked up in the set, and a row stops at its first hit; the matched words are
spelled out only for removed rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit

from instructforge.errors import InputError
from instructforge.filters.base import Filter, Rejections
from instructforge.filters.config import DecontaminationConfig
from instructforge.filters.sources import read_texts
from instructforge.filters.text import _MULT, gram_hash, ngram_hashes, tokenize, words


class Benchmark:
    """The n-gram hashes of one benchmark in an open-addressing hash set, built once, and the
    lengths of its texts shorter than n words; a batch is matched by one compiled pass."""

    def __init__(self, name: str, texts: list[str], n: int, min_short: int):
        hashes, offsets = tokenize(pa.array(texts, pa.string()))
        lengths = np.diff(offsets)
        used = lengths >= min(min_short, n)  # texts long enough to be grams
        hashes, lengths = hashes[np.repeat(used, lengths)], lengths[used]
        grams, _ = ngram_hashes(hashes, np.concatenate([[0], np.cumsum(lengths)]), n)
        grams = np.unique(grams)
        self.name, self.n, self.size = name, n, len(grams)
        self.table = np.zeros(1 << max(4, int(np.ceil(np.log2(len(grams) / _LOAD + 1)))), np.uint64)
        _insert(self.table, grams)
        self.short_lengths = sorted({int(x) for x in lengths[lengths < n]})

    def first_hits(self, hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(documents, gram width, first word) of each document that holds a benchmark gram: the first
        width in the order n, then the short lengths, and the first window of that width. A document
        shorter than n words is one gram of its own length for width n (reported as width n)."""
        widths = np.array([self.n, *self.short_lengths], np.int64)
        width = np.empty(len(offsets) - 1, np.int64)
        first = np.empty(len(offsets) - 1, np.int64)
        _first_hits(hashes, offsets, widths, _MULT, self.table, width, first)
        docs = np.flatnonzero(width >= 0)
        return docs, width[docs], first[docs]


_LOAD = 0.6  # hash set load factor at most


@njit(nogil=True, cache=True)
def _slot(key, mask):
    return np.int64(key & mask)  # keys are fmix64 outputs: their low bits are already uniform


@njit(nogil=True, cache=True)
def _insert(table, grams):
    mask = np.uint64(len(table) - 1)
    for g in grams:
        key = g if g else np.uint64(1)  # 0 marks an empty slot
        i = _slot(key, mask)
        while table[i] != 0 and table[i] != key:
            i = (i + 1) & (len(table) - 1)
        table[i] = key


@njit(nogil=True, cache=True)
def _member(table, g):
    key = g if g else np.uint64(1)
    mask = len(table) - 1
    i = _slot(key, np.uint64(mask))
    while table[i] != 0:
        if table[i] == key:
            return True
        i = (i + 1) & mask
    return False


@njit(nogil=True, cache=True)
def _first_hits(hashes, offsets, widths, mult, table, width_out, first_out):
    n = widths[0]
    for d in range(len(offsets) - 1):
        width_out[d] = -1
        start, length = offsets[d], offsets[d + 1] - offsets[d]
        for w in widths:
            if w == n and 0 < length < n:  # a short document is one gram of its own length
                if _member(table, gram_hash(hashes, start, length, mult)):
                    width_out[d], first_out[d] = n, 0
                    break
                continue
            for k in range(length - w + 1):
                if _member(table, gram_hash(hashes, start + k, w, mult)):
                    width_out[d], first_out[d] = w, k
                    break
            if width_out[d] >= 0:
                break


class Decontamination(Filter):
    def __init__(self, cfg: DecontaminationConfig, resolve: Callable[[str], Path]):
        self.cfg, self.name = cfg, cfg.label
        self.benchmarks = []
        for src in cfg.benchmarks:
            texts = [t for values in read_texts(src, resolve).values() for t in values]
            if not texts:
                raise InputError("benchmark has no text", file=src.path)
            self.benchmarks.append(Benchmark(src.label, texts, cfg.ngram, cfg.min_short_words))

    def apply(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rejections]:
        out: Rejections = {}
        matched: dict[int, set[str]] = {}
        for field in self.cfg.fields:
            column = batch.column(field)
            hashes, offsets = tokenize(column)
            for bench in self.benchmarks:
                for doc, width, first in zip(*(x.tolist() for x in bench.first_hits(hashes, offsets)), strict=True):
                    matched.setdefault(doc, set()).add(bench.name)
                    if doc in out:
                        continue
                    doc_words = words(column.slice(doc, 1))[0].as_py()
                    gram = " ".join(doc_words[first:first + width])
                    out[doc] = (f"overlaps benchmark {bench.name}", {
                        "benchmark": bench.name, "field": field, "ngram": gram, "n": str(width)})
        for doc, names in matched.items():
            out[doc][1]["benchmarks"] = ",".join(sorted(names))
        return batch, out

    def tally(self, evidence: list[dict[str, str]]) -> dict[str, Any]:
        """Removed rows per benchmark they overlap (a row can count for several)."""
        return {"matches_per_benchmark": Counter(b for e in evidence for b in e["benchmarks"].split(","))}

    def stats(self) -> dict[str, Any]:
        return {"matches_per_benchmark": {b.name: 0 for b in self.benchmarks}}
