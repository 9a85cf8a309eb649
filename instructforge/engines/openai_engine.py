"""openai backend: any OpenAI-compatible server (`vllm serve`, hosted APIs) through the `openai` client.

Requests run on an asyncio loop in a background thread with bounded concurrency (`concurrency`
requests open at once, so a server's batch stays full while the caller parses earlier answers);
finished ones are handed back as they complete. Each request is retried with exponential backoff
and jitter on timeouts, connection errors, 429 and 5xx (the client's own retries are off so ours
are the only ones). JSON schemas go as `response_format`; regex and choice use vLLM's
`structured_outputs` extension (hosted APIs reject those). The API key comes from the environment
variable named in the config and is only ever handed to the client.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
from concurrent.futures import Future
from typing import Any

from instructforge.engines.base import Engine, GenerationRequest, GenerationResult, error_result
from instructforge.engines.cache import RequestCache
from instructforge.engines.config import EngineConfig
from instructforge.engines.model import model_identity
from instructforge.errors import EngineError

RETRY_STATUS = {408, 409, 429}


class OpenAIEngine(Engine):
    backend = "openai"
    background = True  # the server works while the caller does

    def __init__(self, cfg: EngineConfig, *, cache: RequestCache | None = None):
        super().__init__(cache)
        self.cfg = cfg
        self._model = None if cfg.model in (None, "", "bundled") else cfg.model
        self._seeds = random.Random(cfg.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._gate: asyncio.Semaphore | None = None
        self._open: dict[int, Future] = {}
        self._finished: queue.Queue[tuple[int, GenerationResult]] = queue.Queue()
        self._bar: Any = None

    def batch_hint(self) -> int:
        return self.cfg.concurrency * 4

    @property
    def model(self) -> str:
        """The configured model name, or else the one model the server says it serves."""
        if self._model is None:
            import openai

            url = self.cfg.base_url
            for attempt in range(self.cfg.max_retries + 1):
                try:
                    with openai.OpenAI(**self._client_args()) as client:
                        served = [m.id for m in client.models.list()]
                    break
                except (openai.APIConnectionError, openai.InternalServerError) as e:
                    if attempt == self.cfg.max_retries:
                        raise EngineError(f"engine: cannot list the models of the server at {url} after "
                                          f"{attempt + 1} attempt(s): {_short(e)}") from None
                    time.sleep(self.cfg.backoff_s * 2 ** attempt * random.uniform(0.5, 1.5))
                except openai.APIStatusError as e:
                    raise EngineError(f"engine: the server at {url} refused to list its models "
                                      f"(HTTP {e.status_code}): {_short(e)}; set engine.model") from None
            if len(served) != 1:
                raise EngineError(f"engine: the server at {url} serves {served}: set engine.model")
            self._model = served[0]
        return self._model

    def model_identity(self) -> str:
        return model_identity(self.model)

    def _client_args(self) -> dict[str, Any]:
        # Local servers take any key; a hosted API answers 401, reported per request.
        key = os.environ.get(self.cfg.api_key_env) or "EMPTY"
        return {"api_key": key, "base_url": self.cfg.base_url, "timeout": self.cfg.timeout_s, "max_retries": 0}

    # -- streaming ----------------------------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            from openai import AsyncOpenAI

            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="openai-engine", daemon=True)
            self._thread.start()
            self._client = AsyncOpenAI(**self._client_args())
            self._gate = asyncio.Semaphore(self.cfg.concurrency)
            self._loop = loop
        return self._loop

    def _submit(self, rid: int, request: GenerationRequest) -> None:
        model = self.model
        sp = request.sampling
        seed = sp.seed if sp.seed is not None else (self._seeds.getrandbits(31) if self.cfg.seed is not None
                                                    else None)
        self._open[rid] = asyncio.run_coroutine_threadsafe(self._one(rid, model, request, seed), self._start())

    async def _one(self, rid: int, model: str, req: GenerationRequest, seed: int | None) -> None:
        try:
            async with self._gate:
                result = await self._with_retries(self._client, model, req, seed)
        except Exception as e:  # noqa: BLE001 - anything unexpected (a malformed answer) fails this request
            result = error_result(f"{type(e).__name__}: {_short(e)}")
        self._finished.put((rid, result))

    def _collect(self, progress: bool) -> list[tuple[int, GenerationResult]]:
        if progress and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(desc="generate (openai)", unit="req")
        done: list[tuple[int, GenerationResult]] = []
        while not done and self._open:
            items = [self._finished.get()]
            while not self._finished.empty():
                items.append(self._finished.get_nowait())
            done += [(rid, result) for rid, result in items if self._open.pop(rid, None) is not None]
        if self._bar is not None:
            self._bar.update(len(done))
            if not self._open:
                self._bar.close()
                self._bar = None
        return done

    def _abort(self) -> None:
        for future in self._open.values():
            future.cancel()
        self._open.clear()

    def close(self) -> None:
        self._abort()
        if self._loop is not None:
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()
            self._loop = None
        super().close()

    async def _with_retries(self, client: Any, model: str, req: GenerationRequest,
                            seed: int | None) -> GenerationResult:
        import openai

        attempt = 0
        while True:
            try:
                return await self._call(client, model, req, seed)
            except (openai.APIConnectionError, openai.APIStatusError) as e:  # timeouts are connection errors
                status = getattr(e, "status_code", None)
                retryable = status is None or status in RETRY_STATUS or status >= 500
                if not retryable or attempt == self.cfg.max_retries:
                    where = f"HTTP {status}" if status else type(e).__name__
                    return error_result(f"{where} after {attempt + 1} attempt(s): {_short(e)}")
                await asyncio.sleep(self.cfg.backoff_s * 2 ** attempt * random.uniform(0.5, 1.5))
                attempt += 1
                self.usage.retries += 1
            except openai.OpenAIError as e:
                return error_result(f"{type(e).__name__}: {_short(e)}")

    async def _call(self, client: Any, model: str, req: GenerationRequest, seed: int | None) -> GenerationResult:
        sp = req.sampling
        args: dict[str, Any] = {"model": model, "n": sp.n, "temperature": sp.temperature, "top_p": sp.top_p,
                                "max_tokens": sp.max_tokens, "presence_penalty": sp.presence_penalty,
                                "frequency_penalty": sp.frequency_penalty}
        if sp.stop:
            args["stop"] = list(sp.stop)
        if seed is not None:
            args["seed"] = seed
        spec = req.structured
        if req.messages is not None:
            if spec is not None and spec.json_schema is not None:
                args["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "output", "schema": spec.json_schema}}
            elif spec is not None:
                args["extra_body"] = {"structured_outputs": _vllm_structured(spec)}
            response = await client.chat.completions.create(messages=[dict(m) for m in req.messages], **args)
            texts = [c.message.content or "" for c in sorted(response.choices, key=lambda c: c.index)]
        else:
            if spec is not None:
                args["extra_body"] = {"structured_outputs": _vllm_structured(spec)}
            response = await client.completions.create(prompt=req.prompt, **args)
            texts = [c.text for c in sorted(response.choices, key=lambda c: c.index)]
        finish = [("length" if c.finish_reason == "length" else "stop")
                  for c in sorted(response.choices, key=lambda c: c.index)]
        usage = response.usage
        return GenerationResult(texts=texts, finish_reasons=finish,  # type: ignore[arg-type]
                                prompt_tokens=usage.prompt_tokens if usage else 0,
                                completion_tokens=usage.completion_tokens if usage else 0)


def _vllm_structured(spec: Any) -> dict[str, Any]:
    if spec.json_schema is not None:
        return {"json": spec.json_schema}
    if spec.regex is not None:
        return {"regex": spec.regex}
    return {"choice": list(spec.choice)}


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:300] if str(e) else type(e).__name__
