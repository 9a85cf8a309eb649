"""Engine failures after the retries: failed rows, an unfinished stage (exit 4), and a rerun that
sends only the failed requests. HTTP faults come from a small local server that fails on purpose."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest
from test_selfinstruct_kill import StreamingEngine, sent
from test_selfinstruct_stage import run_generate

from instructforge.engines import create_engine
from instructforge.engines.base import Engine, GenerationRequest, SamplingParams, error_result
from instructforge.engines.cache import RequestCache
from instructforge.engines.config import EngineConfig
from instructforge.errors import EngineError, ExitCode
from instructforge.filters.config import JudgeConfig
from instructforge.filters.judge import Judge
from instructforge.records import Example
from instructforge.runs import read_table

SECTION = {"target": 30, "prompts_per_round": 4}


class FlakyEngine(StreamingEngine):
    """Fails every instance request whose task mentions `topic1` (a server error after retries)."""

    def _answer(self, req):
        task = req.prompt.rsplit("Task: ", 1)[-1]
        if req.prompt.startswith(("Write examples", "Write examples for each classification")) and "topic1" in task:
            raise ConnectionError("HTTP 503 after 6 attempt(s)")
        return super()._answer(req)

    def _collect(self, progress):
        rid = self._queue[0][0]
        try:
            return super()._collect(progress)
        except ConnectionError as e:
            from instructforge.engines.base import error_result

            return [(rid, error_result(str(e)))]


def test_failed_requests_leave_the_stage_unfinished_and_the_rerun_sends_only_them(tmp_path):
    reference = run_generate(tmp_path / "ref", StreamingEngine(None, tmp_path / "ref.log"), **SECTION)
    total = sent(tmp_path / "ref.log")

    root = tmp_path / "run"
    cache_file = root / "cache.sqlite"
    flaky = FlakyEngine(RequestCache(cache_file), tmp_path / "flaky.log")
    with pytest.raises(EngineError, match=r"generate round \d+: \d+ of \d+ engine requests failed.*HTTP 503"):
        run_generate(root, flaky, **SECTION)
    assert not (root / "02-generate").exists()  # not cached as finished
    cached = len(RequestCache(cache_file))
    failed = flaky.usage.errors
    assert failed > 0 and cached == sent(tmp_path / "flaky.log") - failed  # errors are never cached

    rerun_log = tmp_path / "rerun.log"
    resumed = run_generate(root, StreamingEngine(RequestCache(cache_file), rerun_log), **SECTION)
    assert sent(rerun_log) == total - cached  # the failed requests and those never sent, nothing else
    assert resumed.table().to_pylist() == reference.table().to_pylist()
    assert read_table(resumed.rejected).to_pylist() == read_table(reference.rejected).to_pylist()


def test_on_failure_continue_keeps_failed_requests_as_rows(tmp_path):
    flaky = FlakyEngine(None, tmp_path / "flaky.log")
    flaky.on_failure = "continue"
    out = run_generate(tmp_path, flaky, **SECTION)
    stats = out.stats()
    errors = [r for r in read_table(out.rejected).to_pylist() if r["reason"] == "engine_error"]
    assert stats["failed_requests"] == len(errors) > 0
    assert all("HTTP 503" in dict(r["evidence"])["error"] and r["filter"] == "engine" for r in errors)


class FailingServer:
    """An OpenAI-compatible address that answers every POST with `status` (or malformed JSON)."""

    def __init__(self, status: int | str):
        self.seen = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.seen += 1
                body = b"{not json" if status == "malformed" else json.dumps({"error": {"message": "down"}}).encode()
                self.send_response(200 if status == "malformed" else status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.mark.parametrize("status", [500, "malformed"])
def test_openai_server_errors_become_error_results_after_bounded_retries(status):
    server = FailingServer(status)
    engine = create_engine(EngineConfig(backend="openai", model="m", base_url=server.url, max_retries=2,
                                        backoff_s=0.01, timeout_s=5))
    requests = [GenerationRequest(prompt=f"p{i}", sampling=SamplingParams(max_tokens=4)) for i in range(3)]
    results = engine.generate(requests)
    engine.close()
    server.close()
    assert [r.ok for r in results] == [False] * 3
    if status == 500:
        assert all("HTTP 500 after 3 attempt(s)" in r.error for r in results) and server.seen == 9
    else:
        assert all(r.error for r in results) and server.seen >= 3


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_unreachable_server_without_model_is_one_line_naming_the_url(tmp_path):
    url = closed_port_url()
    engine = create_engine(EngineConfig(backend="openai", base_url=url, max_retries=1, backoff_s=0.01))
    with pytest.raises(EngineError, match=f"cannot list the models of the server at {url} after 2 attempt"):
        engine.model_identity()

    config = tmp_path / "c.yaml"
    config.write_text(f"run: {{name: t, root: {tmp_path / 'runs'}}}\n"
                      f"engine: {{backend: openai, base_url: '{url}', max_retries: 1, backoff_s: 0.01}}\n"
                      "ingest: {seeds: [{path: 'bundled:seed_tasks.jsonl'}]}\nselfinstruct: {target: 2}\n")
    cli = Path(sys.executable).with_name("instructforge")
    done = subprocess.run([str(cli), "run", str(config)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == ExitCode.ENGINE, done.stderr[-2000:]
    assert url in done.stderr and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if url in line]) == 1


class DownEngine(Engine):
    """Every request fails, as after a server's retries ran out."""

    backend = "down"

    def model_identity(self) -> str:
        return "down-model"

    def _generate(self, requests, progress):
        return [error_result("HTTP 502 after 6 attempt(s)") for _ in requests]


@pytest.mark.parametrize("on_failure", ["fail", "continue"])
def test_judge_stops_on_engine_failures_unless_told_to_continue(on_failure):
    rows = [Example(instruction=f"Say {w}.", output=w, source="t", template="t").model_dump() for w in ("a", "b")]
    batch = pa.RecordBatch.from_pylist(rows, schema=Example.arrow_schema())
    engine = DownEngine()
    engine.on_failure = on_failure
    judge = Judge(JudgeConfig(), lambda: engine)
    if on_failure == "fail":
        with pytest.raises(EngineError, match="filter judge: 2 of 2 engine requests failed"):
            judge.apply(batch)
    else:  # recorded like an unusable answer: rejected with the error as evidence
        _, rejections = judge.apply(batch)
        assert sorted(rejections) == [0, 1] and "HTTP 502" in rejections[0][1]["error"]
