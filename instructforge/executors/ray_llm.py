"""LLM calls through Ray Data LLM's vLLM processor (`ray.llm: vllm_processor`, GPU clusters).

`ray.engine_replicas` data-parallel vLLM replicas, each with the engine's `tensor_parallel_size`
GPUs, run one Ray Data job per `generate` call: prompts are rendered with the model's own chat
template and tokenized on CPU workers exactly as the in-process engines do, vLLM detokenizes,
and results come back in request order (a request with `n` samples becomes n rows with seeds
seed, seed+1, ...). The
processor starts its replicas for each job, so this suits stages that send few, large calls (the
judge with a large `filters.batch_size`, preference sampling); the actor pool (`ray.llm: actors`,
ray_engine.py) keeps its replicas for the whole run and suits Self-Instruct's many rounds.

Written against ray 2.60's `ray.data.llm` (vLLMEngineProcessorConfig, build_processor); not run
in this project's CI, which has no GPU.
"""

from __future__ import annotations

import json
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import ray
from ray.data.llm import build_processor, vLLMEngineProcessorConfig

from instructforge.engines import Engine, EngineConfig, GenerationRequest, GenerationResult, RequestCache
from instructforge.engines.base import prompt_token_ids
from instructforge.engines.model import model_identity, resolve_model
from instructforge.executors.config import RayConfig

_NO_LIMIT = 1 << 30  # no max_model_len configured: vLLM rejects an overlong prompt itself


class RayDataLLMEngine(Engine):
    backend = "vllm"

    def __init__(self, cfg: EngineConfig, settings: RayConfig, *, request_cache: Path | None = None,
                 cache_dir: Path | None = None):
        super().__init__(RequestCache(request_cache) if request_cache is not None else None)
        self.on_failure = cfg.on_failure
        self.model = resolve_model(cfg.model, cache_dir)
        self.collect_size = 1 << 30  # one job for everything queued
        engine_kwargs = {"tensor_parallel_size": cfg.tensor_parallel_size,
                         "gpu_memory_utilization": cfg.gpu_memory_utilization, "enable_prefix_caching": True}
        if cfg.max_model_len:
            engine_kwargs["max_model_len"] = cfg.max_model_len
        self._processor = build_processor(
            vLLMEngineProcessorConfig(model_source=self.model, engine_kwargs=engine_kwargs,
                                      concurrency=settings.engine_replicas, batch_size=64,
                                      chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
                                      should_continue_on_error=True),
            preprocess=partial(_to_vllm, self.model, cfg.max_model_len or _NO_LIMIT), postprocess=_from_vllm)

    def model_identity(self) -> str:
        return model_identity(self.model)

    def _generate(self, requests: list[GenerationRequest], progress: bool) -> list[GenerationResult]:
        rows = [{"i": i, "j": j, "request": r.model_dump_json()}
                for i, r in enumerate(requests) for j in range(r.sampling.n)]
        out = sorted(self._processor(ray.data.from_items(rows)).take_all(), key=lambda r: (r["i"], r["j"]))
        results = [GenerationResult() for _ in requests]
        for row in out:
            res = results[row["i"]]
            if row["error"]:
                res.error = row["error"]
                continue
            res.texts.append(row["text"])
            res.finish_reasons.append(row["finish_reason"])
            res.prompt_tokens = row["prompt_tokens"]
            res.completion_tokens += row["completion_tokens"]
        return results


@lru_cache(maxsize=2)
def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def _to_vllm(model: str, max_len: int, row: dict[str, Any]) -> dict[str, Any]:
    """One request as the vLLM stage's input: the token ids the in-process engines would send, and
    sampling parameters (every row has the same keys, so Ray Data builds one block schema)."""
    req = GenerationRequest.model_validate_json(row["request"])
    sp, spec = req.sampling, req.structured
    structured = None
    if spec is not None:
        structured = {"json": json.dumps(spec.json_schema) if spec.json_schema is not None else None,
                      "regex": spec.regex, "choice": list(spec.choice) if spec.choice else None}
    params = {"n": 1, "temperature": sp.temperature, "top_p": sp.top_p, "max_tokens": sp.max_tokens,
              "stop": list(sp.stop) or None, "seed": None if sp.seed is None else sp.seed + row["j"],
              "presence_penalty": sp.presence_penalty, "frequency_penalty": sp.frequency_penalty,
              "structured_outputs": structured}
    return {"i": row["i"], "j": row["j"], "max_tokens": sp.max_tokens,
            "tokenized_prompt": prompt_token_ids(_tokenizer(model), req, max_len), "sampling_params": params}


def _from_vllm(row: dict[str, Any]) -> dict[str, Any]:
    tokens = int(row.get("num_generated_tokens") or 0)
    return {"i": row["i"], "j": row["j"], "text": row.get("generated_text") or "",
            "error": row.get("__inference_error__") or None,
            "finish_reason": "length" if tokens >= row["max_tokens"] else "stop",
            "prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": tokens}
