"""The filter stage on `local` vs `ray` (a local Ray cluster with 2 CPUs), same rows, one run.

    .venv/bin/python bench/executors.py [--small] [--rows N] [--kind flan|short]

Rows: bench/corpus.py's FLAN-style prompts (about 180 words, with template/edit/repeat
near-duplicates), written once as an ingest stage. Filters: exact dedup, MinHash dedup and the
heuristics (defaults except language ID, which costs about a millisecond a row). Each executor
runs in its own process so that peak memory is its own: the driver's peak RSS, and on Ray the
largest peak RSS and USS of any Ray worker process (sampled) and the Ray start-up time
(`ray.init`, which a long-lived cluster pays once). Printed: rows/s of the stage, memory, and
whether both executors kept and removed the same rows with the same reasons.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import example_batches

STEPS = [{"type": "exact_dedup"}, {"type": "minhash_dedup"}, {"type": "heuristics", "languages": None}]


def write_input(folder: Path, rows: int, kind: str) -> None:
    from instructforge.runs import RunDir

    def fn(ctx):
        for batch in example_batches(rows, 10_000, kind):
            ctx.write(batch)
    RunDir(folder).run_stage(1, "ingest", config={"rows": rows, "kind": kind}, inputs=[], code="bench", fn=fn)


class WorkerMemory(threading.Thread):
    """Largest memory seen of any Ray worker process (command line `ray::...`), sampled every 0.5 s:
    RSS, which counts the object-store pages a worker maps, and USS, the memory only it holds."""

    def __init__(self):
        super().__init__(daemon=True)
        self.rss_mib = self.uss_mib = 0.0
        self.largest = ""  # the command line (task name) of the process with the largest USS
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.wait(0.5):
            for p in psutil.process_iter(["cmdline"]):
                cmd = p.info["cmdline"] or []
                if not (cmd and cmd[0].startswith("ray::")):
                    continue
                try:
                    mem = p.memory_full_info()
                except psutil.Error:
                    continue
                self.rss_mib = max(self.rss_mib, mem.rss / 2**20)
                if mem.uss / 2**20 > self.uss_mib:
                    self.uss_mib, self.largest = mem.uss / 2**20, cmd[0]


def one(executor: str, folder: Path) -> dict:
    """Run the filter stage once on `executor` in this process; its figures as a dict."""
    from instructforge.config import parse_config
    from instructforge.filters import stage
    from instructforge.runs import RunDir, StageOutput

    out: dict = {"executor": executor}
    memory = None
    if executor == "ray":
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        out["startup_s"] = time.perf_counter() - t
        memory = WorkerMemory()
        memory.start()
    cfg = parse_config({"run": {"executor": executor}, "filters": {"steps": STEPS}})
    run_dir = RunDir(folder / executor)
    inp = StageOutput.load(folder / "01-ingest")
    t = time.perf_counter()
    result, _ = run_dir.run_stage(3, "filter", config={}, inputs=[inp], code="bench", fn=stage.run,
                                  section=cfg.filters, run=cfg.context(), force=True)
    out["seconds"] = time.perf_counter() - t
    out["driver_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if memory:
        memory.stop.set()
        out["worker_rss_mib"], out["worker_uss_mib"] = memory.rss_mib, memory.uss_mib
        out["worker_largest"] = memory.largest
    out["funnel"] = result.stats()["funnel"]
    out["path"] = str(result.path)
    return out


def same_results(a: str, b: str) -> bool:
    import pyarrow.compute as pc

    from instructforge.runs import StageOutput, read_table

    def decisions(path: str):
        out = StageOutput.load(Path(path))
        rejected = read_table(out.rejected).select(["id", "filter", "reason"])
        return out.table().column("id"), rejected.sort_by([("id", "ascending"), ("filter", "ascending")])

    (ka, ra), (kb, rb) = decisions(a), decisions(b)
    return bool(pc.all(pc.equal(ka, kb)).as_py()) and ra.equals(rb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="100K rows instead of 1M")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--kind", choices=["flan", "short"], default="flan")
    ap.add_argument("--dir", type=Path, default=Path("runs/bench-executors"))
    ap.add_argument("--one", choices=["local", "ray"], help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.dir)))
        return
    rows = args.rows or (100_000 if args.small else 1_000_000)
    folder = args.dir / f"{args.kind}-{rows}"
    t = time.perf_counter()
    write_input(folder, rows, args.kind)
    print(f"{rows:,} {args.kind} rows ready in {time.perf_counter() - t:.0f} s; load average {os.getloadavg()[0]:.1f} "
          "(other jobs share this machine)")
    results = {}
    for executor in ("local", "ray"):
        proc = subprocess.run([sys.executable, __file__, "--one", executor, "--dir", str(folder)],
                              capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        r = results[executor] = json.loads(proc.stdout.strip().splitlines()[-1])
        extra = (f", Ray start-up {r['startup_s']:.1f} s, largest Ray worker peak RSS {r['worker_rss_mib']:.0f} "
                 f"MiB (USS {r['worker_uss_mib']:.0f} MiB, in {r['worker_largest']})" if executor == "ray" else "")
        print(f"{executor:5}: {r['seconds']:.1f} s = {rows / r['seconds']:,.0f} rows/s; driver peak RSS "
              f"{r['driver_peak_mib']:.0f} MiB{extra}; load average {os.getloadavg()[0]:.1f}")
    print("funnel:", ", ".join(f"{f['filter']} {f['rows_in']:,}->{f['rows_out']:,}" for f in results["local"]["funnel"]))
    print(f"ray / local time: {results['ray']['seconds'] / results['local']['seconds']:.2f}x; "
          f"same kept ids and rejected ids with the same filter and reason: "
          f"{same_results(results['local']['path'], results['ray']['path'])}")


if __name__ == "__main__":
    main()
