"""The openai backend against a real OpenAI-compatible server: `vllm serve` of the bundled model.

Failures are injected by a small proxy between the engine and the server: canned 429/500
answers, a stall past the client timeout, and the proxy going down mid-batch (connections
dropped, port closed) and coming back on the same port, as a restarted server would.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from instructforge.engines import create_engine
from instructforge.engines.base import GenerationRequest, SamplingParams, StructuredOutput
from instructforge.engines.config import EngineConfig

pytestmark = pytest.mark.slow

KEY_ENV = "INSTRUCTFORGE_TEST_API_KEY"
KEY = "test-key-not-a-secret-4711"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(bundled_model_dir, tmp_path_factory):
    """`vllm serve` on loopback (bounded start time), stopped after the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1"}
    # `vllm serve` itself; the `vllm` script of vllm-cpu 0.32 dies looking up the metadata of "vllm"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(bundled_model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024", "--enforce-eager", "--api-key", KEY]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.time() > deadline:
                pytest.fail(f"vllm serve not ready in 600 s:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(2)
        yield base
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (API server, engine core, workers); SIGKILL what lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class Proxy:
    """Forwards to the server, except for scripted faults: an HTTP status, "stall", or being down."""

    def __init__(self, upstream: str, faults: list[int | str] = ()):
        self.upstream = upstream.removeprefix("http://")
        self.faults = list(faults)
        self.down = False
        self.seen = 0
        self.lock = threading.Lock()
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.forward(b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.seen += 1
                    fault = proxy.faults.pop(0) if proxy.faults else None
                if fault == "stall":
                    time.sleep(3)
                if proxy.down:  # killed while this request was in flight: no answer at all
                    self.close_connection = True
                    return
                if isinstance(fault, int):
                    self.reply(fault, json.dumps({"error": {"message": f"injected {fault}"}}).encode())
                    return
                self.forward(body)

            def forward(self, body: bytes) -> None:
                conn = http.client.HTTPConnection(proxy.upstream, timeout=300)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                self.reply(resp.status, resp.read())
                conn.close()

            def reply(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.down = False
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self) -> None:
        self.down = True
        self.server.shutdown()
        self.server.server_close()

    def close(self) -> None:
        if not self.down:
            self.kill()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def engine_for(url: str, **cfg):
    settings = {"backend": "openai", "base_url": url, "api_key_env": KEY_ENV, "timeout_s": 60,
                "backoff_s": 0.2, "max_retries": 4, "concurrency": 4, **cfg}
    return create_engine(EngineConfig(**settings))


def chat(text: str, structured: StructuredOutput | None = None, **sampling) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}],
                             sampling=SamplingParams(**{"max_tokens": 16, **sampling}), structured=structured)


def test_generation_structure_and_usage(vllm_server, api_key, bundled_model_dir, tmp_path):
    engine = create_engine(EngineConfig(backend="openai", base_url=f"{vllm_server}/v1", api_key_env=KEY_ENV),
                           request_cache=tmp_path / "cache.sqlite")
    # the served name is the bundled folder: same identity as the local backends, so caches are shared
    assert engine.model_identity().startswith("bundled:SmolLM2-135M-Instruct")
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    batch = [chat("Write a short sentence about the sea.", n=2, seed=5, temperature=1.0),
             GenerationRequest(prompt="1, 2, 3, 4, 5,", sampling=SamplingParams(temperature=0, max_tokens=16,
                                                                                 stop=(" 7",))),
             chat("Name a colour as JSON.", StructuredOutput(json_schema=schema), max_tokens=24, temperature=0),
             chat("Is fire hot? Answer yes or no.", StructuredOutput(choice=("yes", "no"))),
             chat("Give a three-digit number.", StructuredOutput(regex=r"[1-9][0-9]{2}")),
             GenerationRequest(prompt="word " * 2000, sampling=SamplingParams(max_tokens=4))]
    sea, count, colour, choice, number, too_long = engine.generate(batch)
    assert len(sea.texts) == 2 and sea.finish_reasons and sea.prompt_tokens > 0 and sea.completion_tokens > 0
    assert count.finish_reasons == ["stop"] and "6" in count.text and " 7" not in count.text
    assert isinstance(json.loads(colour.text)["colour"], str)
    assert choice.text in ("yes", "no")
    assert len(number.text) == 3 and number.text.isdigit()
    assert not too_long.ok and "HTTP 400 after 1 attempt" in too_long.error  # not retried
    assert engine.usage.retries == 0

    again = engine.generate(batch[:2])
    assert all(r.cached for r in again) and again[0].texts == sea.texts
    engine.close()
    assert KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_missing_key_is_an_error_result_not_retried(vllm_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    engine = engine_for(f"{vllm_server}/v1", model="any-name")  # the key is checked first
    result = engine.generate([chat("hi", max_tokens=2)])[0]
    assert not result.ok and "HTTP 401" in result.error and engine.usage.retries == 0


def test_retries_429_500_and_timeouts_then_succeeds(vllm_server, api_key):
    proxy = Proxy(vllm_server, faults=[429, 500, "stall", 503])
    engine = engine_for(proxy.url, timeout_s=1.5, concurrency=1)
    results = engine.generate([chat(f"Say the number {i}.", max_tokens=4, temperature=0) for i in range(3)])
    proxy.close()
    assert all(r.ok for r in results), [r.error for r in results]
    assert engine.usage.retries == 4 and proxy.seen >= 7


def test_gives_up_after_max_retries(vllm_server, api_key):
    proxy = Proxy(vllm_server, faults=[500] * 10)
    engine = engine_for(proxy.url, max_retries=2)
    result = engine.generate([chat("hi", max_tokens=2)])[0]
    proxy.close()
    assert not result.ok and "HTTP 500 after 3 attempt(s)" in result.error


def test_server_killed_and_restarted_mid_batch(vllm_server, api_key):
    proxy = Proxy(vllm_server)
    engine = engine_for(proxy.url, concurrency=2, max_retries=8, backoff_s=0.5)
    batch = [chat(f"Write one word about the number {i}.", max_tokens=8, seed=i) for i in range(8)]

    def outage():
        while proxy.seen < 2:  # wait until the batch is under way
            time.sleep(0.05)
        proxy.kill()
        time.sleep(3)
        proxy.start()

    chaos = threading.Thread(target=outage)
    chaos.start()
    results = engine.generate(batch)
    chaos.join()
    proxy.close()
    assert all(r.ok and r.text for r in results), [r.error for r in results]
    assert engine.usage.retries > 0
