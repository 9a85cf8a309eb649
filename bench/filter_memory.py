"""Peak memory of MinHash near-dedup + quality heuristics over 1M rows, streamed in batches.

    .venv/bin/python bench/filter_memory.py [--small] [--rows N] [--languages]

Issue 5 asks for 1M examples in < 2 GB RSS for dedup + heuristics. Rows are generated batch by batch
(the synthetic instructions of bench/dedup.py, with planted near-duplicates inside each batch) and never
held all at once, as the filter stage streams them from disk: `MinHashDedup.fit` sees every batch, then
each batch is generated again and goes through `MinHashDedup.apply` and `Heuristics.apply`. The
heuristics run with their defaults except language identification (langid costs about a millisecond
a row; `--languages` switches it on). Printed: peak RSS of the process (absolute, and above the
baseline after imports), rows kept and removed per filter, time and load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from dedup import corpus

from instructforge.executors.local import fit_in_process
from instructforge.filters.base import with_positions
from instructforge.filters.config import HeuristicsConfig, MinHashDedupConfig
from instructforge.filters.heuristics import Heuristics
from instructforge.filters.minhash_dedup import MinHashDedup
from instructforge.records import Example


def batches(rows: int, batch_size: int) -> Iterator[pa.RecordBatch]:
    """The same rows on every call: batch k is generated from seed k."""
    schema = Example.arrow_schema()
    for k, start in enumerate(range(0, rows, batch_size)):
        n = min(batch_size, rows - start)
        docs, _ = corpus(n, seed=k)
        outputs = [f"Here is one careful answer to the request, written in plain words: {d}" for d in docs]
        cols = {"id": [f"{start + i:016x}" for i in range(n)], "instruction": docs, "input": [""] * n,
                "output": outputs, "task": ["bench"] * n, "source": ["bench"] * n, "template": [""] * n,
                "meta": [[]] * n}
        yield pa.RecordBatch.from_pydict(cols, schema=schema)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="100K rows instead of 1M")
    ap.add_argument("--rows", type=int, help="number of rows")
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--languages", action="store_true", help="also run langid on every row (slow)")
    args = ap.parse_args()
    rows = args.rows or (100_000 if args.small else 1_000_000)
    dedup = MinHashDedup(MinHashDedupConfig())
    heuristics = Heuristics(HeuristicsConfig(**({} if args.languages else {"languages": None})))
    base = peak_mib()
    print(f"{rows:,} rows in batches of {args.batch_size:,}; baseline RSS {base:.0f} MiB; "
          f"load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    fit_in_process(dedup, (with_positions(b, i * args.batch_size)
                           for i, b in enumerate(batches(rows, args.batch_size))))
    fitted = time.perf_counter() - t
    print(f"dedup fit: {fitted:.1f} s, peak RSS {peak_mib():.0f} MiB")
    removed = {"minhash_dedup": 0, "heuristics": 0}
    kept = 0
    for start, batch in zip(range(0, rows, args.batch_size), batches(rows, args.batch_size), strict=True):
        _, near = dedup.apply(with_positions(batch, start))
        batch = batch.filter(pa.array([i not in near for i in range(batch.num_rows)]))
        _, bad = heuristics.apply(batch)
        removed["minhash_dedup"] += len(near)
        removed["heuristics"] += len(bad)
        kept += batch.num_rows - len(bad)
    seconds = time.perf_counter() - t
    peak = peak_mib()
    print(f"dedup + heuristics: {seconds:.1f} s ({rows / seconds:,.0f} rows/s), kept {kept:,}, removed "
          + ", ".join(f"{k} {v:,}" for k, v in removed.items()))
    print(f"peak RSS {peak:.0f} MiB (+{peak - base:.0f} MiB over the baseline); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
