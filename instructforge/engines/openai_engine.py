"""openai backend: any OpenAI-compatible server (`vllm serve`, hosted APIs) through the `openai` client.

Async with bounded concurrency; each request is retried with exponential backoff and jitter on
timeouts, connection errors, 429 and 5xx (the client's own retries are off so ours are the only
ones). JSON schemas go as `response_format`; regex and choice use vLLM's `structured_outputs`
extension (hosted APIs reject those). The API key comes from the environment variable named in
the config and is only ever handed to the client.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from typing import Any

from instructforge.engines.base import Engine, GenerationRequest, GenerationResult, error_result
from instructforge.engines.cache import RequestCache
from instructforge.engines.config import EngineConfig
from instructforge.engines.model import model_identity

RETRY_STATUS = {408, 409, 429}


class OpenAIEngine(Engine):
    backend = "openai"

    def __init__(self, cfg: EngineConfig, *, cache: RequestCache | None = None):
        super().__init__(cache)
        self.cfg = cfg
        self._model = None if cfg.model in (None, "", "bundled") else cfg.model
        self._seeds = random.Random(cfg.seed)

    @property
    def model(self) -> str:
        """The configured model name, or else the one model the server says it serves."""
        if self._model is None:
            from openai import OpenAI

            with OpenAI(**self._client_args()) as client:
                served = [m.id for m in client.models.list()]
            if len(served) != 1:
                raise ValueError(f"server at {self.cfg.base_url} serves {served}: set engine.model")
            self._model = served[0]
        return self._model

    def model_identity(self) -> str:
        return model_identity(self.model)

    def _client_args(self) -> dict[str, Any]:
        # Local servers take any key; a hosted API answers 401, reported per request.
        key = os.environ.get(self.cfg.api_key_env) or "EMPTY"
        return {"api_key": key, "base_url": self.cfg.base_url, "timeout": self.cfg.timeout_s, "max_retries": 0}

    def _generate(self, requests: list[GenerationRequest], progress: bool) -> list[GenerationResult]:
        model = self.model
        seeds = [r.sampling.seed if r.sampling.seed is not None else
                 (self._seeds.getrandbits(31) if self.cfg.seed is not None else None) for r in requests]
        coro = self._run_all(model, requests, seeds, progress)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        box: list[list[GenerationResult]] = []  # called from async code: run on a loop of our own
        thread = threading.Thread(target=lambda: box.append(asyncio.run(coro)))
        thread.start()
        thread.join()
        return box[0]

    async def _run_all(self, model: str, requests: list[GenerationRequest], seeds: list[int | None],
                       progress: bool) -> list[GenerationResult]:
        from openai import AsyncOpenAI

        gate = asyncio.Semaphore(self.cfg.concurrency)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(requests), desc="generate (openai)", unit="req")

        async def one(req: GenerationRequest, seed: int | None) -> GenerationResult:
            async with gate:
                result = await self._with_retries(client, model, req, seed)
            if bar is not None:
                bar.update()
            return result

        async with AsyncOpenAI(**self._client_args()) as client:
            results = await asyncio.gather(*(one(r, s) for r, s in zip(requests, seeds, strict=True)))
        if bar is not None:
            bar.close()
        return list(results)

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
