"""Peak memory and speed of the whole filter stage on 1M realistic rows, run as the pipeline runs it.

    .venv/bin/python bench/filter_memory.py [--small] [--rows N] [--no-languages] [--dir DIR]

The input is a stage of FLAN-style rows from bench/corpus.py (about 180 words each; near-duplicates
inside every batch of 10K), written by `RunDir.run_stage` in a child process, so its generation does
not count. This process then runs stage 03 itself, `RunDir.run_stage(..., fn=filters.stage.run)`
with the filters exact_dedup, minhash_dedup and heuristics (defaults: language ID on unless
`--no-languages`), reading the input shards in batches, writing kept and rejected rows and the
manifest. Printed: peak RSS of this process (absolute and over the baseline after imports), the
funnel, time, CPU seconds and the load average (the machine is shared). The issue's bound is 2 GB.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import example_batches

from instructforge.config import parse_config
from instructforge.filters import stage as filter_stage
from instructforge.runs import RunDir


def write_input(root: Path, rows: int, batch_size: int) -> None:
    def fn(ctx) -> None:  # ctx: a StageContext
        for batch in example_batches(rows, batch_size):
            ctx.write(batch)
    RunDir(root).run_stage(1, "ingest", config={"rows": rows, "corpus": "flan"}, inputs=[], code="bench", fn=fn)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="100K rows instead of 1M")
    ap.add_argument("--rows", type=int, help="number of rows")
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--no-languages", action="store_true", help="heuristics without language ID")
    ap.add_argument("--dir", type=Path, help="run directory (default: a temporary one, removed after)")
    args = ap.parse_args()
    rows = args.rows or (100_000 if args.small else 1_000_000)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "run"
        t = time.perf_counter()
        child = mp.get_context("fork").Process(target=write_input, args=(root, rows, args.batch_size))
        child.start()
        child.join()
        print(f"input stage: {rows:,} FLAN-style rows written in {time.perf_counter() - t:.0f} s (child process)")
        heuristics = {"type": "heuristics", **({"languages": None} if args.no_languages else {})}
        cfg = parse_config({"filters": {"batch_size": args.batch_size, "steps": [
            {"type": "exact_dedup"}, {"type": "minhash_dedup"}, heuristics]}}, base_dir=Path(tmp))
        run = RunDir(root)
        inp, _ = run.run_stage(1, "ingest", config={"rows": rows, "corpus": "flan"}, inputs=[], code="bench",
                               fn=lambda ctx: None)
        base = peak_mib()
        print(f"baseline RSS after imports {base:.0f} MiB; load average {os.getloadavg()[0]:.1f}")
        t, cpu = time.perf_counter(), cpu_s()
        out, _ = run.run_stage(3, "filter", config=cfg.filters.model_dump(mode="json"), inputs=[inp], code="bench",
                               fn=filter_stage.run, section=cfg.filters, run=cfg.context())
        seconds, cpu = time.perf_counter() - t, cpu_s() - cpu
        peak = peak_mib()
        stats = out.stats()
        print(f"filter stage: {seconds:.1f} s ({rows / seconds:,.0f} rows/s), CPU {cpu:.1f} s; load average "
              f"{os.getloadavg()[0]:.1f}")
        for step in stats.get("funnel", []):
            print(f"  {step['filter']:<14} in {step['rows_in']:>9,}  out {step['rows_out']:>9,}")
        print(f"peak RSS {peak:.0f} MiB (+{peak - base:.0f} MiB over the baseline); bound 2048 MiB: "
              f"{'within' if peak < 2048 else 'EXCEEDED'}")


if __name__ == "__main__":
    main()
