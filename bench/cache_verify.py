"""What checking a cached stage before reusing it costs, against the reference and against a rerun.

A stage of N FLAN-style rows (bench/corpus.py, ~180-word prompts) is written through the stage
cache, so its manifest lists every file with its size, row count and checksum. Then, on the same
files:

- ours: `verify_stage` (size, then xxh3-128 of every file, as every reuse of a cached stage does);
- reference: the same walk with sha256 (hashlib), the usual choice for file checksums;
- a rerun of the stage: writing the same rows again (the least a rerun costs; real stages do more).

    .venv/bin/python bench/cache_verify.py               # 200K rows
    .venv/bin/python bench/cache_verify.py --small       # 20K rows
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import example_batches

from instructforge.integrity import stage_files, verify_stage
from instructforge.runs import RunDir


def sha256_walk(root: Path) -> dict[str, str]:
    out = {}
    for path in stage_files(root):
        with path.open("rb") as f:
            out[str(path)] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--small", action="store_true", help="20K rows instead of 200K")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.small:
        args.rows = 20_000
    batches = list(example_batches(args.rows, 10_000))
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp) / "run")

        def stage(ctx):
            for b in batches:
                ctx.write(b)

        t = time.perf_counter()
        out, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="bench", fn=stage)
        write = time.perf_counter() - t
        files = stage_files(out.path)
        size = sum(p.stat().st_size for p in files)
        assert verify_stage(out.path) == []
        ours = best(lambda: verify_stage(out.path), args.repeat)
        ref = best(lambda: sha256_walk(out.path), args.repeat)
        rerun = best(lambda: run.run_stage(1, "ingest", config={}, inputs=[], code="bench", fn=stage,
                                           force=True), 1)
    print(f"stage of {args.rows:,} rows, {size / 1e6:.1f} MB in {len(files)} files (first write incl. "
          f"checksums {write:.2f} s); load average {os.getloadavg()[0]:.2f}")
    print("| check before reuse | seconds | MB/s |")
    print("| --- | --- | --- |")
    print(f"| ours: size + xxh3-128 per file | {ours:.3f} | {size / 1e6 / ours:,.0f} |")
    print(f"| reference: sha256 per file | {ref:.3f} | {size / 1e6 / ref:,.0f} |")
    print(f"| a rerun of the stage (writing the rows again) | {rerun:.3f} | |")
    print(f"ours is {ref / ours:.1f}x faster than sha256 and costs {100 * ours / rerun:.0f}% of the cheapest rerun")


if __name__ == "__main__":
    main()
