"""A real SIGKILL in the middle of a generate round: the rerun sends only what the cache lacks.

The engine answers one request at a time (a streaming backend) and logs every request it
actually computes, so "sent" is counted at the engine, not inferred. The killed run is a separate
process; this file is also its entry point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_selfinstruct_stage import ScriptedEngine, run_generate

from instructforge.engines.cache import RequestCache
from instructforge.runs import read_table

SECTION = {"target": 30, "prompts_per_round": 4}


class StreamingEngine(ScriptedEngine):
    """Computes one request per collect, like a backend that hands back results as they finish."""

    def __init__(self, cache: RequestCache | None, log: Path, delay: float = 0.0):
        super().__init__()
        self.cache, self.log, self.delay = cache, log, delay

    def _collect(self, progress):
        rid, request = self._queue.pop(0)
        time.sleep(self.delay)
        with self.log.open("a") as f:
            f.write("sent\n")
        return [(rid, self._answer(request))]


def sent(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_kill_mid_round_then_rerun_sends_only_the_missing_requests(tmp_path):
    reference = run_generate(tmp_path / "ref", StreamingEngine(None, tmp_path / "ref.log"), **SECTION)
    total = sent(tmp_path / "ref.log")

    root, killed_log = tmp_path / "run", tmp_path / "killed.log"
    cache_file = root / "cache.sqlite"
    proc = subprocess.Popen([sys.executable, __file__, str(root), str(killed_log)], cwd=Path(__file__).parent)
    deadline = time.time() + 120
    while sent(killed_log) < 6:  # inside round 1 or 2: some results in, the stage far from done
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cached = len(RequestCache(cache_file))
    assert 0 < cached < total
    assert sent(killed_log) - cached <= 1  # lost on the kill: at most the request in flight
    assert not list(root.glob("02-generate"))  # not finished

    rerun_log = tmp_path / "rerun.log"
    resumed = run_generate(root, StreamingEngine(RequestCache(cache_file), rerun_log), **SECTION)
    assert sent(rerun_log) == total - cached  # every cached answer reused, nothing else
    assert resumed.table().to_pylist() == reference.table().to_pylist()
    assert read_table(resumed.rejected).to_pylist() == read_table(reference.rejected).to_pylist()


if __name__ == "__main__":  # the run that gets killed
    run_dir, log = Path(sys.argv[1]), Path(sys.argv[2])
    run_generate(run_dir, StreamingEngine(RequestCache(run_dir / "cache.sqlite"), log, delay=0.05), **SECTION)
