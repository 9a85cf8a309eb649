"""LLM calls on Ray: the project's own engine in a pool of Ray actors, behind the `Engine` interface.

With `run.executor: ray` the pipeline's engine is a `RayEngine`: every stage that calls the
engine (Self-Instruct rounds, the judge, preference sampling) sends its requests to
`ray.engine_replicas` actors, each hosting one copy of the configured backend (transformers on
CPU, vLLM on `gpus_per_replica` GPUs with the engine's `tensor_parallel_size`). Requests go out in
chunks, round robin, several chunks in flight per replica; results come back in request order, and
the request cache stays on the driver (a replica never sees a cached request). A replica that dies
is restarted by Ray and its chunks are retried (`max_restarts`, `max_task_retries`).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import ray

from instructforge.engines import Engine, EngineConfig, GenerationRequest, GenerationResult, RequestCache
from instructforge.executors.config import RayConfig

_IN_FLIGHT = 2  # chunks per replica at once: one computing, one queued


@ray.remote(max_restarts=2, max_task_retries=2)
class EngineReplica:
    def __init__(self, cfg: EngineConfig, cache_dir: Path | None):
        from instructforge.engines import create_engine

        self.engine = create_engine(cfg, cache_dir=cache_dir)

    def model_identity(self) -> str:
        return self.engine.model_identity()

    def backend(self) -> str:
        return self.engine.backend

    def batch_hint(self) -> int:
        return self.engine.batch_hint()

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return self.engine.generate(requests)


class RayEngine(Engine):
    """`backend` is the replicas' (rows say which backend wrote them, wherever it ran)."""

    background = True

    def __init__(self, cfg: EngineConfig, settings: RayConfig, *, request_cache: Path | None = None,
                 cache_dir: Path | None = None):
        super().__init__(RequestCache(request_cache) if request_cache is not None else None)
        self.on_failure = cfg.on_failure
        gpus = settings.gpus_per_replica
        if gpus is None:
            gpus = cfg.tensor_parallel_size if ray.cluster_resources().get("GPU", 0) else 0
        self._replicas = [EngineReplica.options(num_gpus=gpus, num_cpus=1).remote(cfg, cache_dir)
                          for _ in range(settings.engine_replicas)]
        self._identity = ray.get(self._replicas[0].model_identity.remote())
        self.backend = ray.get(self._replicas[0].backend.remote())
        self.collect_size = ray.get(self._replicas[0].batch_hint.remote())
        self._running: dict[Any, list[int]] = {}  # chunk result ref -> request ids
        self._next = 0

    def model_identity(self) -> str:
        return self._identity

    def batch_hint(self) -> int:
        return self.collect_size * len(self._replicas) * _IN_FLIGHT

    def _collect(self, progress: bool) -> list[tuple[int, GenerationResult]]:
        pending = deque(self._queue)
        self._queue = []
        while pending and len(self._running) < len(self._replicas) * _IN_FLIGHT:
            chunk = [pending.popleft() for _ in range(min(self.collect_size, len(pending)))]
            replica = self._replicas[self._next % len(self._replicas)]
            self._next += 1
            self._running[replica.generate.remote([r for _, r in chunk])] = [rid for rid, _ in chunk]
        self._queue = list(pending)
        done, _ = ray.wait(list(self._running), num_returns=1)
        return [pair for ref in done
                for pair in zip(self._running.pop(ref), ray.get(ref), strict=True)]

    def _abort(self) -> None:
        for ref in self._running:
            ray.cancel(ref)
        self._running, self._queue = {}, []

    def close(self) -> None:
        for replica in self._replicas:
            ray.kill(replica)
        self._replicas = []
        super().close()
