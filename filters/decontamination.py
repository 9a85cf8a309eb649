"""Decontamination: drop rows that share a word n-gram with a benchmark (GPT-3's 13-gram rule).

Benchmark texts become sets of n-gram hashes over normalised words (text.py). A benchmark text
shorter than n words (but at least `min_short_words`) counts as one gram of its own length, and rows
are also scanned with windows of those lengths, so a short benchmark question quoted inside a row
is still found; shorter texts (one-word answers, numbers) are skipped, or they would match anything.
Matching a batch is a vectorised set lookup; the matched words are spelled out only for removed rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from instructforge.errors import InputError
from instructforge.filters.base import Filter, Rejections
from instructforge.filters.config import DecontaminationConfig
from instructforge.filters.sources import read_texts
from instructforge.filters.text import ngram_hashes, tokenize, words


class Benchmark:
    """The n-gram hash set of one benchmark, and the lengths of its texts shorter than n words."""

    def __init__(self, name: str, texts: list[str], n: int, min_short: int):
        hashes, offsets = tokenize(pa.array(texts, pa.string()))
        lengths = np.diff(offsets)
        used = lengths >= min(min_short, n)  # texts long enough to be grams
        hashes, lengths = hashes[np.repeat(used, lengths)], lengths[used]
        grams, _ = ngram_hashes(hashes, np.concatenate([[0], np.cumsum(lengths)]), n)
        self.name = name
        self.grams = np.unique(grams)
        self.short_lengths = sorted({int(x) for x in lengths[lengths < n]})

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.grams, hashes)
        return self.grams[np.minimum(pos, len(self.grams) - 1)] == hashes if len(self.grams) else \
            np.zeros(len(hashes), dtype=bool)


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
                for width in [self.cfg.ngram, *bench.short_lengths]:
                    grams, gram_off = ngram_hashes(hashes, offsets, width, short=width == self.cfg.ngram)
                    hits = np.flatnonzero(bench.contains(grams))
                    if not len(hits):
                        continue
                    docs = np.searchsorted(gram_off, hits, side="right") - 1
                    for doc in np.unique(docs):
                        matched.setdefault(int(doc), set()).add(bench.name)
                        if int(doc) in out:
                            continue
                        first = int(hits[np.searchsorted(docs, doc)] - gram_off[doc])
                        doc_words = words(column.slice(int(doc), 1))[0].as_py()
                        gram = " ".join(doc_words[first:first + width])
                        out[int(doc)] = (f"overlaps benchmark {bench.name}", {
                            "benchmark": bench.name, "field": field, "ngram": gram, "n": str(width)})
        for doc, names in matched.items():
            out[doc][1]["benchmarks"] = ",".join(sorted(names))
        return batch, out

    def tally(self, evidence: list[dict[str, str]]) -> dict[str, Any]:
        """Removed rows per benchmark they overlap (a row can count for several)."""
        return {"matches_per_benchmark": Counter(b for e in evidence for b in e["benchmarks"].split(","))}

    def stats(self) -> dict[str, Any]:
        return {"matches_per_benchmark": {b.name: 0 for b in self.benchmarks}}
