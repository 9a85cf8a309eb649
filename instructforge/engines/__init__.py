"""LLM engines behind one interface (`Engine.generate`), picked by the `engine:` config section.

Backends import their heavy dependencies (torch, vllm, openai) only when created.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from instructforge.engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StructuredOutput,
)
from instructforge.engines.cache import RequestCache
from instructforge.engines.config import EngineConfig

__all__ = ["Engine", "EngineConfig", "GenerationRequest", "GenerationResult", "RequestCache",
           "SamplingParams", "StructuredOutput", "create_engine", "pick_backend"]


def pick_backend(cfg: EngineConfig) -> str:
    """`default` is vllm when a GPU is there and vllm is importable, else transformers."""
    if cfg.backend != "default":
        return cfg.backend
    if importlib.util.find_spec("vllm") is not None and _has_gpu():
        return "vllm"
    return "transformers"


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def create_engine(cfg: EngineConfig, *, request_cache: Path | None = None,
                  cache_dir: Path | None = None) -> Engine:
    """Build the configured engine. `request_cache`: sqlite file for the request cache (none = off);
    `cache_dir`: where the bundled model is converted (none = ~/.cache/instructforge)."""
    cache = RequestCache(request_cache) if request_cache is not None else None
    engine = _backend(cfg, cache, cache_dir)
    engine.on_failure = cfg.on_failure
    return engine


def _backend(cfg: EngineConfig, cache: RequestCache | None, cache_dir: Path | None) -> Engine:
    backend = pick_backend(cfg)
    if backend == "openai":
        from instructforge.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(cfg, cache=cache)
    from instructforge.engines.model import resolve_model

    model = resolve_model(cfg.model, cache_dir)
    if backend == "vllm":
        from instructforge.engines.vllm_engine import VLLMEngine

        return VLLMEngine(cfg, model, cache=cache)
    from instructforge.engines.hf_engine import TransformersEngine

    return TransformersEngine(cfg, model, cache=cache)
