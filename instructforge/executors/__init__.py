"""Executors run a stage's blocks over its rows: `local` (in process, streaming) or `ray` (Ray Data).

Adding one is a module defining an `Executor` subclass plus one line in `EXECUTORS`. The executor
also decides where the pipeline's LLM engine lives (`create_run_engine`): in process, or in Ray actors.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from instructforge.engines.base import Engine
from instructforge.engines.config import EngineConfig
from instructforge.executors.base import Executor
from instructforge.executors.config import RayConfig
from instructforge.runs import RunContext

EXECUTORS = {
    "local": "instructforge.executors.local:LocalExecutor",
    "ray": "instructforge.executors.ray:RayExecutor",
}


def create_executor(run: RunContext, work: Path) -> Executor:
    """The run's executor for a stage working in `work` (its module is imported only when chosen:
    Ray is a heavy import)."""
    module, cls = EXECUTORS[run.executor].split(":")
    return getattr(import_module(module), cls)(run, work)


def create_run_engine(executor: str, engine: EngineConfig, ray: RayConfig, *, request_cache: Path | None,
                      cache_dir: Path | None) -> Engine:
    """The pipeline's engine: the configured backend here, or replicas of it in Ray actors."""
    if executor == "ray":
        from instructforge.executors.ray import connect

        connect(ray)
        if ray.llm == "vllm_processor":
            from instructforge.executors.ray_llm import RayDataLLMEngine

            return RayDataLLMEngine(engine, ray, request_cache=request_cache, cache_dir=cache_dir)
        from instructforge.executors.ray_engine import RayEngine

        return RayEngine(engine, ray, request_cache=request_cache, cache_dir=cache_dir)
    from instructforge.engines import create_engine

    return create_engine(engine, request_cache=request_cache, cache_dir=cache_dir)


__all__ = ["EXECUTORS", "Executor", "create_executor", "create_run_engine"]
