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
from instructforge.runs import RunContext

EXECUTORS = {
    "local": "instructforge.executors.local:LocalExecutor",
    "ray": "instructforge.executors.ray:RayExecutor",
}


def executor_class(name: str) -> type[Executor]:
    """The registered executor (its module is imported only when chosen: Ray is a heavy import)."""
    module, cls = EXECUTORS[name].split(":")
    return getattr(import_module(module), cls)


def create_executor(run: RunContext, work: Path) -> Executor:
    """The run's executor for a stage working in `work`."""
    return executor_class(run.executor)(run, work)


def create_run_engine(run: RunContext, engine: EngineConfig, *, request_cache: Path | None,
                      cache_dir: Path | None) -> Engine:
    """The pipeline's engine, placed by the run's executor (in process, or replicas in Ray actors)."""
    return executor_class(run.executor).create_engine(run, engine, request_cache=request_cache, cache_dir=cache_dir)


__all__ = ["EXECUTORS", "Executor", "create_executor", "create_run_engine", "executor_class"]
