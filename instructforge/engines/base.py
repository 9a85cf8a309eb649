"""The one interface every stage uses to ask a model something.

`Engine.generate(requests) -> results`, batched: one result per request, in order. A failed
request yields a result with `error` set; it never fails the batch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from instructforge.errors import EngineError, InstructforgeError

if TYPE_CHECKING:
    from instructforge.engines.cache import RequestCache

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class StructuredOutput(BaseModel):
    """Constrain the output: exactly one of a JSON schema, a regex, or a choice among strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    choice: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one(self) -> StructuredOutput:
        if sum(x is not None for x in (self.json_schema, self.regex, self.choice)) != 1:
            raise ValueError("set exactly one of json_schema, regex, choice")
        return self


class GenerationRequest(BaseModel):
    """Chat messages (the model's chat template is applied) or a raw prompt (used as is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    structured: StructuredOutput | None = None

    @model_validator(mode="after")
    def _one(self) -> GenerationRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("set exactly one of messages, prompt")
        return self


FinishReason = Literal["stop", "length", "error"]


class GenerationResult(BaseModel):
    texts: list[str] = Field(default_factory=list)  # n of them, unless error
    finish_reasons: list[FinishReason] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


class Engine:
    """Subclasses implement `_generate` (one batch); streaming backends also `_submit`/`_collect`.

    `_generate(requests, progress)` returns one result per request, in order. If it raises, the
    batch is retried one request at a time, so one bad request becomes one error result.
    `generate` and `feed` add the request cache: every result is committed as it arrives, so a
    killed process loses at most the requests that were still in the engine.
    `on_failure` (engine.on_failure) says whether a stage whose requests failed stops (`fail`)
    or records them as failed rows and goes on (`continue`); see `check_failures`.
    """

    backend: str = "base"
    on_failure: str = "fail"
    background: bool = False  # computes while the caller does other work (engine process, server)
    # requests a batch backend runs per `_collect` (results are committed between collects)
    collect_size: int = 64

    def __init__(self, cache: RequestCache | None = None):
        self.cache = cache
        self.usage = Usage()
        self._queue: list[tuple[int, GenerationRequest]] = []

    def model_identity(self) -> str:
        """Backend-independent name of the model (cache key, provenance)."""
        raise NotImplementedError

    def batch_hint(self) -> int:
        """How many prompts a caller should keep in this engine at once to keep it busy."""
        return self.collect_size

    def _generate(self, requests: list[GenerationRequest], progress: bool) -> list[GenerationResult]:
        raise NotImplementedError

    # -- streaming: backends with continuous batching override both ------------------------------

    def _submit(self, rid: int, request: GenerationRequest) -> None:
        """Hand one request to the engine. Raising fails this request alone."""
        self._queue.append((rid, request))

    def _collect(self, progress: bool) -> list[tuple[int, GenerationResult]]:
        """Block until at least one submitted request is finished; return what finished."""
        take, self._queue = self._queue[:self.collect_size], self._queue[self.collect_size:]
        results = self._generate_isolated([r for _, r in take], progress)
        return [(rid, res) for (rid, _), res in zip(take, results, strict=True)]

    def _abort(self) -> None:
        """Drop every request still in the engine (a feed closed early)."""
        self._queue = []

    # -- public -----------------------------------------------------------------------------------

    def feed(self, progress: bool = False) -> Feed:
        """A session that keeps batches from several callers in the engine at once."""
        return Feed(self, progress)

    def generate(self, requests: list[GenerationRequest], *, progress: bool = False) -> list[GenerationResult]:
        with self.feed(progress) as feed:
            batch = feed.submit(list(requests))
            while not batch.done:
                feed.wait()
            return batch.results()

    def _generate_isolated(self, requests: list[GenerationRequest], progress: bool) -> list[GenerationResult]:
        try:
            results = self._generate(requests, progress)
        except Exception as e:  # noqa: BLE001 - reported per request, never fails the batch
            if len(requests) == 1:
                return [error_result(f"{type(e).__name__}: {e}")]
            return [self._generate_isolated([r], False)[0] for r in requests]
        if len(results) != len(requests):
            raise RuntimeError(f"{self.backend} engine returned {len(results)} results for {len(requests)}")
        return results

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


class Batch:
    """Requests submitted together; `done` once every result is in (cached ones at once)."""

    def __init__(self, size: int):
        self._results: list[GenerationResult | None] = [None] * size
        self.missing = size

    @property
    def done(self) -> bool:
        return self.missing == 0

    def _set(self, i: int, result: GenerationResult) -> None:
        self._results[i] = result
        self.missing -= 1

    def result(self, i: int) -> GenerationResult | None:
        """Result `i`, or None while it is still in the engine."""
        return self._results[i]

    def results(self) -> list[GenerationResult]:
        if not self.done:
            raise RuntimeError("batch is not finished")
        return [r for r in self._results if r is not None]


class Feed:
    """One long-lived stream into the engine: `submit` batches at any time; `wait` blocks until more
    results are in, and each batch shows which of its results arrived. The engine's own scheduler (vLLM continuous batching, the
    openai backend's bounded concurrency) sees every request of every open batch at once.

    Each result is written to the request cache the moment it arrives. `busy_seconds` is the time
    the engine had work: with at least one request in it (engines that run in the background:
    vLLM's engine core, a server) or inside `_collect` (in-process batch backends). Divided by
    wall time it says how busy the caller kept the engine.
    """

    def __init__(self, engine: Engine, progress: bool = False):
        self.engine, self.progress = engine, progress
        self._next_id = 0
        self._waiting: dict[int, tuple[Batch, int, str | None]] = {}  # rid -> (batch, index, cache key)
        self.busy_seconds = 0.0
        self._busy_since: float | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, requests: list[GenerationRequest]) -> Batch:
        engine = self.engine
        batch = Batch(len(requests))
        keys: list[str | None] = [None] * len(requests)
        hits: list[GenerationResult | None] = [None] * len(requests)
        if engine.cache is not None and requests:
            keys = list(engine.cache.keys(engine.model_identity(), requests))
            hits = engine.cache.get_many(keys)  # type: ignore[arg-type]
        for i, (request, key, hit) in enumerate(zip(requests, keys, hits, strict=True)):
            if hit is not None:
                self._done(batch, i, hit)
                continue
            rid = self._next_id
            self._next_id += 1
            try:
                engine._submit(rid, request)
            except InstructforgeError:  # the engine cannot work at all (unreachable, misconfigured)
                self.close()
                raise
            except Exception as e:  # noqa: BLE001 - a bad request fails alone
                self._done(batch, i, error_result(f"{type(e).__name__}: {e}"))
                continue
            self._waiting[rid] = (batch, i, key)
            self._mark_busy()
        return batch

    def wait(self) -> None:
        """Block until more results are in (at least one), and file them into their batches."""
        if not self._waiting:
            raise RuntimeError("nothing in flight")
        started = time.perf_counter()
        try:
            arrived = self.engine._collect(self.progress)
        except Exception as e:  # noqa: BLE001 - the engine broke: every request in it failed
            error = error_result(f"{type(e).__name__}: {e}")
            arrived = [(rid, error) for rid in self._waiting]
            self.engine._abort()
        if not self.engine.background:
            self.busy_seconds += time.perf_counter() - started
        fresh = []
        for rid, result in arrived:
            batch, i, key = self._waiting.pop(rid)
            self._done(batch, i, result)
            if key is not None and result.ok:
                fresh.append((key, result))
        if fresh:
            self.engine.cache.put_many(self.engine.model_identity(), fresh)
        if self.engine.background:
            self._mark_idle()

    def _done(self, batch: Batch, i: int, result: GenerationResult) -> None:
        batch._set(i, result)
        self.engine.usage.add([result])

    def _mark_busy(self) -> None:
        if self.engine.background and self._busy_since is None:
            self._busy_since = time.perf_counter()

    def _mark_idle(self) -> None:
        if self._busy_since is not None and not self._waiting:
            self.busy_seconds += time.perf_counter() - self._busy_since
            self._busy_since = None

    def close(self) -> None:
        if self._waiting:
            self.engine._abort()
            self._waiting.clear()
        self._mark_idle()


class Usage(BaseModel):
    """Running totals over everything an engine answered (the cached part included)."""

    requests: int = 0
    cached: int = 0
    errors: int = 0
    retries: int = 0  # extra attempts (openai backend: timeouts, 429, 5xx, lost connections)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, results: list[GenerationResult]) -> None:
        for r in results:
            self.requests += 1
            self.cached += r.cached
            self.errors += not r.ok
            self.prompt_tokens += r.prompt_tokens
            self.completion_tokens += r.completion_tokens


def error_result(message: str) -> GenerationResult:
    return GenerationResult(finish_reasons=["error"], error=message)


def end_token_ids(generation_eos: int | list[int] | None, tokenizer: Any) -> set[int]:
    """The tokens generation stops at: the generation config's end of sequence (one or several)
    and the tokenizer's."""
    listed = generation_eos if isinstance(generation_eos, list) else [generation_eos]
    return {*listed, tokenizer.eos_token_id} - {None}


def prompt_token_ids(tokenizer: Any, req: GenerationRequest, max_len: int) -> list[int]:
    """The request's prompt as token ids (chat messages through the model's own chat template).

    Raises when the prompt leaves no room to generate within `max_len`, so that request fails alone.
    """
    if req.messages is not None:
        text = tokenizer.apply_chat_template([dict(m) for m in req.messages], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = tokenizer.encode(req.prompt)
    if len(ids) >= max_len:
        raise ValueError(f"prompt has {len(ids)} tokens, max_model_len is {max_len}")
    return ids


def check_failures(engine: Engine, results: list[GenerationResult], what: str) -> int:
    """How many `results` failed. When some did and the engine's `on_failure` is `fail`, raise
    `EngineError`: the stage stays unfinished (never cached as done), and its next run sends only
    these requests again, the successful ones being in the request cache."""
    failed = [r for r in results if not r.ok]
    if failed and getattr(engine, "on_failure", "fail") == "fail":
        raise EngineError(f"{what}: {len(failed)} of {len(results)} engine requests failed after retries "
                          f"(first: {failed[0].error}); rerun to retry them, or set engine.on_failure: "
                          "continue to keep them as failed rows")
    return len(failed)
