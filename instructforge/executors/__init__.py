"""Executors run a stage's blocks over its rows: `local` (in process, streaming) or `ray` (Ray Data).

Adding one is a module defining an `Executor` subclass plus one line in `EXECUTORS`.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from instructforge.executors.base import Executor
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


__all__ = ["EXECUTORS", "Executor", "create_executor"]
