"""The one interface every stage uses to ask a model something.

`Engine.generate(requests) -> results`, batched: one result per request, in order. A failed
request yields a result with `error` set; it never fails the batch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    """Subclasses implement `_generate`; `generate` adds the request cache around it."""

    backend: str = "base"

    def model_identity(self) -> str:
        """Backend-independent name of the model (cache key, provenance)."""
        raise NotImplementedError

    def generate(self, requests: list[GenerationRequest], *, progress: bool = False) -> list[GenerationResult]:
        raise NotImplementedError

    def close(self) -> None:
        pass
