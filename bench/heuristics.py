"""Heuristics and decontamination on realistic rows: ours vs a per-row Python reference, one run.

    .venv/bin/python bench/heuristics.py [--small] [--rows N] [--reference-rows N] [--bench-rows N]

Rows: the FLAN-style rows of bench/corpus.py (about 180 words of instruction, short outputs), with
some outputs replaced by cases the rules catch (long repetitive outputs, refusals, code with an
unclosed fence, numbers only, echoes), so every rule has work to do.

- Heuristics, language ID off (it has its own benchmark, bench/language_id.py): ours is
  `filters.heuristics.verdicts` on batches of 10K (Arrow compute per rule); the reference is the
  same rules the way they were written before, one Python call per row (`str.split`, `Counter`,
  `re`), run on the first `--reference-rows`. Decisions (which rule removes which row) are compared
  on the rows both ran on. Then ours once more with language ID on (fastText), on the same rows.
- Decontamination: a benchmark of `--bench-rows` texts (Self-Instruct-like, about 40 words) and rows
  of which 5% quote a 13-word span of one. Ours: `Benchmark` (hash set built once) + `first_hits`
  over tokenized batches; the reference: the common script, a Python set of 13-word strings and a
  lookup per window of each row. Build time, rows/s and agreement on the flagged rows are printed.
Load average and CPU seconds are printed with each figure (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from corpus import flan_rows, real_length_instructions

from instructforge.filters.config import HeuristicsConfig
from instructforge.filters.decontamination import Benchmark
from instructforge.filters.heuristics import duplicate_line_share, refusal_pattern, top_ngram_share, verdicts
from instructforge.filters.text import tokenize

SPECIAL = ["As an AI language model, I cannot help with that request.",
           "the cat sat on the mat and " * 12, "```python\ndef f(x):\n    return x * 2\n",
           "= 3.14 * (2 + 7) / 9 - 1 ** 2 % 8 == 3.14 ** 2 // 4", "line one\nline two\nline one\nline two\nline one"]


def rows(n: int, seed: int = 0) -> pa.Table:
    cols = flan_rows(n, seed)
    rng = np.random.default_rng(seed + 1)
    out = cols["output"]
    for i in np.flatnonzero(rng.random(n) < 0.05).tolist():
        out[i] = SPECIAL[i % len(SPECIAL)] if i % 6 else cols["instruction"][i]  # one in six: an echo
    return pa.table({"instruction": cols["instruction"], "input": cols["input"], "output": out})


_NON_WORD = re.compile(r"[\W_]+")


def reference_check(row: dict[str, str], cfg: HeuristicsConfig, refusal: re.Pattern | None) -> str | None:
    """The rules one row at a time, as the filter did before (language ID off): the failing rule's name."""
    def norm(text: str) -> str:
        return _NON_WORD.sub(" ", text.lower()).strip()
    for field, low in cfg.min_words.items():
        if len(row[field].split()) < low:
            return "min_words"
    for field, high in cfg.max_words.items():
        if len(row[field].split()) > high:
            return "max_words"
    if cfg.empty_output and not row["output"].strip():
        return "empty_output"
    if cfg.echo and row["output"].strip():
        out = norm(row["output"])
        if out and out in (norm(row["instruction"]), norm(row["input"])):
            return "echo"
    words = row["output"].lower().split()
    if len(words) >= cfg.repetition_min_words:
        if any(top_ngram_share(words, n) > limit for n, limit in sorted((cfg.top_ngram_share or {}).items())):
            return "top_ngram_share"
        if cfg.duplicate_line_share is not None and duplicate_line_share(row["output"]) > cfg.duplicate_line_share:
            return "duplicate_line_share"
    if cfg.max_non_alpha is not None:
        for field in ("instruction", "output"):
            text = row[field]
            chars = [c for c in text if not c.isspace()]
            share = sum(not c.isalpha() for c in chars) / len(chars) if chars else 0.0
            if len(text) >= cfg.non_alpha_min_chars and share > cfg.max_non_alpha:
                return "max_non_alpha"
    if refusal is not None and refusal.search(" ".join(row["output"].lower().replace("\u2019", "'").split())):
        return "refusal_phrases"
    if cfg.code_fences and any(row[f].count("```") % 2 for f in ("instruction", "input", "output")):
        return "code_fences"
    return None


def ours(table: pa.Table, cfg: HeuristicsConfig, batch_size: int = 10_000) -> list[str | None]:
    refusal = refusal_pattern(cfg)
    decisions: list[str | None] = []
    for batch in table.to_batches(batch_size):
        found = verdicts(batch, cfg, refusal)
        decisions += [found[i][1]["rule"] if i in found else None for i in range(batch.num_rows)]
    return decisions


def timed(fn, *args):  # any callable and its arguments
    wall, cpu = time.perf_counter(), _cpu()
    result = fn(*args)
    return result, time.perf_counter() - wall, _cpu() - cpu


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def heuristics(n: int, m: int) -> None:
    table = rows(n)
    cfg = HeuristicsConfig(languages=None)
    print(f"heuristics: {n:,} FLAN-style rows, language ID off; load {_load()}")
    mine, sec, cpu = timed(ours, table, cfg)
    print(f"  ours       {n:>9,} rows {n / sec:>10,.0f} rows/s  {sec:7.1f} s  CPU {cpu:7.1f} s  removed "
          f"{sum(d is not None for d in mine):,} {dict(Counter(d for d in mine if d))}  load {_load()}")
    refusal = refusal_pattern(cfg)
    sub = table.slice(0, m).to_pylist()
    ref, sec, cpu = timed(lambda: [reference_check(r, cfg, refusal) for r in sub])
    print(f"  reference  {m:>9,} rows {m / sec:>10,.0f} rows/s  {sec:7.1f} s  CPU {cpu:7.1f} s  removed "
          f"{sum(d is not None for d in ref):,}  load {_load()}")
    same = sum(a == b for a, b in zip(mine[:m], ref, strict=True))
    print(f"  same decision (rule) on {same:,} of the first {m:,} rows")
    with_lang, sec, cpu = timed(ours, table.slice(0, m), HeuristicsConfig())
    print(f"  ours with language ID on: {m:,} rows {m / sec:,.0f} rows/s, CPU {cpu:.1f} s, removed "
          f"{sum(d is not None for d in with_lang):,}  load {_load()}")


def reference_contaminated(bench_texts: list[str], texts: list[str], n: int = 13) -> np.ndarray:
    """The usual script: a set of n-word strings from the benchmark, one lookup per window of a row."""
    def grams(text: str) -> list[str]:
        w = _NON_WORD.sub(" ", text.lower()).split()
        return [" ".join(w[k:k + n]) for k in range(len(w) - n + 1)]
    index = {g for t in bench_texts for g in grams(t)}
    return np.array([any(g in index for g in grams(t)) for t in texts])


def decontamination(n: int, bench_rows: int, m: int) -> None:
    bench_texts = real_length_instructions(bench_rows, seed=7, planted=0.0)
    table = rows(n, seed=3)
    rng = np.random.default_rng(5)
    texts = table.column("instruction").to_pylist()
    quoted = np.flatnonzero(rng.random(n) < 0.05)
    for i in quoted.tolist():
        words = bench_texts[int(rng.integers(0, bench_rows))].split()
        k = int(rng.integers(0, len(words) - 13))
        texts[i] = f"{texts[i]} {' '.join(words[k:k + 13])}"
    print(f"\ndecontamination: benchmark of {bench_rows:,} texts "
          f"({np.mean([len(t.split()) for t in bench_texts[:2000]]):.0f} words), {n:,} rows, "
          f"{len(quoted):,} quote a 13-word span; load {_load()}")
    index, sec, cpu = timed(Benchmark, "bench", bench_texts, 13, 13)
    print(f"  ours: index of {index.size:,} 13-grams built in {sec:.1f} s (CPU {cpu:.1f} s), "
          f"{index.table.nbytes / 2**20:.0f} MiB")

    def match(texts: list[str]) -> np.ndarray:
        flagged = np.zeros(len(texts), dtype=bool)
        for s in range(0, len(texts), 10_000):
            docs, _, _ = index.first_hits(*tokenize(pa.array(texts[s:s + 10_000])))
            flagged[s + docs] = True
        return flagged
    mine, sec, cpu = timed(match, texts)
    print(f"  ours       {n:>9,} rows {n / sec:>10,.0f} rows/s  {sec:6.1f} s  CPU {cpu:6.1f} s  flagged "
          f"{mine.sum():,}  load {_load()}")
    ref, sec, cpu = timed(reference_contaminated, bench_texts, texts[:m])
    print(f"  reference  {m:>9,} rows {m / sec:>10,.0f} rows/s  {sec:6.1f} s  CPU {cpu:6.1f} s (set build "
          f"included)  flagged {ref.sum():,}  load {_load()}")
    print(f"  same flag on {(mine[:m] == ref).sum():,} of the first {m:,} rows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="100K rows, reference on 5K, 100K-text benchmark")
    ap.add_argument("--rows", type=int, help="rows (default 1M)")
    ap.add_argument("--reference-rows", type=int, help="rows the references run on (default 20K)")
    ap.add_argument("--bench-rows", type=int, default=100_000, help="benchmark texts for decontamination")
    args = ap.parse_args()
    n = args.rows or (100_000 if args.small else 1_000_000)
    m = min(n, args.reference_rows or (5_000 if args.small else 20_000))
    heuristics(n, m)
    decontamination(n, args.bench_rows, m)


if __name__ == "__main__":
    main()
