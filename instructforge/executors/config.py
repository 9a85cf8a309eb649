"""`ray:` section: where the Ray executor runs and how wide (used when `run.executor: ray`).

    run: {executor: ray}
    ray:
      address: auto               # an existing cluster (or set RAY_ADDRESS); none = start a local one
      num_cpus: 8                 # local cluster only
      batch_size: 4096            # rows per map task call
      concurrency: {filter: 16}   # most tasks at once per stage (default: as many as CPUs; ingest and
                                  # export items: twice the cluster's CPUs)
      llm: actors                 # actors: replicas of the configured engine (ray_engine.py);
                                  # vllm_processor: Ray Data LLM's vLLM processor, one job per call (ray_llm.py)
      engine_replicas: 4          # engine copies (actors, or vLLM replicas of the processor)
      gpus_per_replica: 1         # none = engine.tensor_parallel_size when the cluster has GPUs, else 0
                                  # (each actor also holds one CPU: a local cluster needs replicas + 1 CPUs;
                                  # vllm_processor with 0: vLLM's CPU build, engine.cpu_threads CPUs a replica)

They choose where and how wide stages run, not what they compute, so they are not part of any stage's
fingerprint (LLM sampling is as reproducible as the backend is on that hardware).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from instructforge.section import Section


class RayConfig(Section):
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    batch_size: int = Field(4096, ge=1)
    concurrency: dict[str, int] = Field(default_factory=dict)
    llm: Literal["actors", "vllm_processor"] = "actors"
    engine_replicas: int = Field(1, ge=1)
    gpus_per_replica: float | None = Field(None, ge=0)
