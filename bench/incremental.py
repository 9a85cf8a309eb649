"""Incremental run adding 1% new rows vs a full rerun of the same data, in one process.

A JSONL source of N FLAN-style rows (bench/corpus.py: ~180-word prompts with template, edit and
repeat near-duplicates) goes through ingest, filters (exact dedup, MinHash, heuristics with
language ID, 13-gram decontamination) and export in an incremental run directory. Then N/100 new
rows are appended to the source (as a scheduled job's growing log file would be) and timed two
ways on the same data:

- incremental: the next run of that run directory (reads the source from its old end, skips seen
  rows, filters the new rows against the persisted indexes, exports a new version);
- full: one run of everything in a fresh run directory (what a rerun without incremental costs).

Prints both wall times, the ratio, and whether the two runs keep the same ids and reject the same
ids with the same reasons.

    .venv/bin/python bench/incremental.py              # 200K rows + 2K new
    .venv/bin/python bench/incremental.py --rows 20000 # quick look
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import flan_rows

import instructforge.pipeline
from instructforge.config import parse_config
from instructforge.pipeline import Pipeline
from instructforge.runs import read_table

# The code this process runs is what it imported at start. Stage fingerprints hash the source files
# on disk, and on a shared checkout someone may edit them during the minutes the first run takes,
# which would make the measured incremental run a full rebuild: hash each module's source once.
instructforge.pipeline.code_digests = functools.cache(instructforge.pipeline.code_digests)


def config(root: Path, name: str, source: Path) -> dict:
    return {
        "run": {"name": name, "root": str(root), "incremental": True},
        "ingest": {"files": [{"path": str(source), "preset": "alpaca", "task": "bench"}]},
        "filters": {"steps": [
            {"type": "exact_dedup"},
            {"type": "minhash_dedup"},
            {"type": "heuristics"},
            {"type": "decontamination",
             "benchmarks": [{"name": "sample-benchmark", "path": "bundled:benchmark_sample.jsonl"}]},
        ]},
        "export": {"formats": ["messages", "alpaca"], "chat_template": "chatml"},
    }


def timed_run(cfg: dict) -> tuple[float, Pipeline]:
    started = time.perf_counter()
    pipe = Pipeline(parse_config(cfg))
    pipe.run()
    return time.perf_counter() - started, pipe


def outcome(run_dir: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    kept = sorted(read_table(run_dir / "03-filter" / "data").column("id").to_pylist())
    rej = read_table(run_dir / "03-filter" / "rejected").select(["id", "filter", "reason"]).to_pylist()
    return kept, sorted((r["id"], r["filter"], r["reason"]) for r in rej)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--new", type=float, default=0.01, help="share of new rows added")
    args = ap.parse_args()
    added = max(1, int(args.rows * args.new))
    cols = flan_rows(args.rows + added, seed=7)
    lines = [json.dumps(dict(zip(("instruction", "input", "output"), r, strict=True))) + "\n"
             for r in zip(cols["instruction"], cols["input"], cols["output"], strict=True)]
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 shared cores; other work may be running)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "source.jsonl"
        source.write_text("".join(lines[:args.rows]), encoding="utf-8")
        first, _ = timed_run(config(root, "incremental", source))
        print(f"initial incremental run over {args.rows:,} rows: {first:.1f} s")

        with source.open("a", encoding="utf-8") as f:  # + `added` new rows at the end
            f.write("".join(lines[args.rows:]))
        inc, pipe = timed_run(config(root, "incremental", source))
        ingest = pipe.outputs["ingest"].stats()
        new_rows = ingest["rows_out"]
        full, _ = timed_run(config(root, "full", source))
        same = outcome(root / "incremental") == outcome(root / "full")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"\n| run over {args.rows + added:,} rows ({added:,} new) | seconds |\n| --- | --- |")
        print(f"| incremental (reads the source from byte {ingest['files_read_from'].get(str(source), 0):,}, "
              f"processes {new_rows:,} new rows) | {inc:.2f} |")
        print(f"| full rerun (fresh run directory) | {full:.2f} |")
        print(f"\nspeed-up {full / inc:.1f}x (goal >= 20x); "
              f"same kept ids and same rejected ids/reasons: {same}")
        print("incremental run, seconds per stage: " + ", ".join(
            f"{name} {out.stats()['seconds']:.2f}" for name, out in pipe.outputs.items()))
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
