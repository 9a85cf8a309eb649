"""The one interface every stage uses to ask a model something.

`Engine.generate(requests) -> results`, batched: one result per request, in order. A failed
request yields a result with `error` set; it never fails the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    """Subclasses implement `_generate`; `generate` adds the request cache and failure isolation.

    `_generate(requests, progress)` returns one result per request, in order. If it raises, the
    batch is retried one request at a time, so one bad request becomes one error result.
    """

    backend: str = "base"

    def __init__(self, cache: RequestCache | None = None):
        self.cache = cache
        self.usage = Usage()

    def model_identity(self) -> str:
        """Backend-independent name of the model (cache key, provenance)."""
        raise NotImplementedError

    def _generate(self, requests: list[GenerationRequest], progress: bool) -> list[GenerationResult]:
        raise NotImplementedError

    def generate(self, requests: list[GenerationRequest], *, progress: bool = False) -> list[GenerationResult]:
        requests = list(requests)
        results: list[GenerationResult | None] = [None] * len(requests)
        keys: list[str] = []
        if self.cache is not None:
            keys = self.cache.keys(self.model_identity(), requests)
            for i, hit in enumerate(self.cache.get_many(keys)):
                results[i] = hit
        todo = [i for i, r in enumerate(results) if r is None]
        fresh = self._generate_isolated([requests[i] for i in todo], progress) if todo else []
        for i, result in zip(todo, fresh, strict=True):
            results[i] = result
        if self.cache is not None:
            self.cache.put_many(self.model_identity(), [(keys[i], results[i]) for i in todo if results[i].ok])
        done = [r for r in results if r is not None]
        self.usage.add(done)
        return done

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
