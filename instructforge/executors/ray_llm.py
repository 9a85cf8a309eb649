"""LLM calls through Ray Data LLM's vLLM processor (`ray.llm: vllm_processor`).

`ray.engine_replicas` data-parallel vLLM replicas, each with the engine's `tensor_parallel_size`
GPUs (or, on a cluster without GPUs, vLLM's CPU build holding `engine.cpu_threads` CPUs), run one
Ray Data job per `generate` call: prompts are rendered with the model's own chat template and
tokenized on CPU workers exactly as the in-process engines do, vLLM detokenizes, and results come
back in request order. Each row carries a seed (the request's, else one drawn from the engine's
seed as the in-process vLLM engine draws it), so greedy and seeded requests give what the
in-process engine gives (tests/test_ray.py checks it on CPU); a request with `n` samples becomes n
rows with seeds seed, seed+1, ..., so its samples differ from the in-process engine's `n`.

The processor starts its replicas for each job, so this suits stages that send few, large calls
(the judge with a large `filters.batch_size`, preference sampling); the actor pool (`ray.llm:
actors`, ray_engine.py) keeps its replicas for the whole run and suits Self-Instruct's many rounds.
Written against ray 2.60's `ray.data.llm` (vLLMEngineProcessorConfig, build_processor).
"""

from __future__ import annotations

import json
import random
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import ray
from ray.data.llm import build_processor, vLLMEngineProcessorConfig

from instructforge.engines import Engine, EngineConfig, GenerationRequest, GenerationResult, RequestCache
from instructforge.engines.base import end_token_ids, prompt_token_ids
from instructforge.engines.model import model_identity, resolve_model
from instructforge.engines.vllm_engine import engine_args
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
        # as the in-process vLLM engine: a request without a seed gets one from the engine's seed (or a
        # random one); every row has a seed, since Ray Data turns a column of ints and nulls into floats
        self._seeds = random.Random(cfg.seed)
        gpus = settings.gpus_per_replica
        on_gpu = bool(ray.cluster_resources().get("GPU", 0)) if gpus is None else gpus > 0
        engine_kwargs = {k: v for k, v in engine_args(cfg, on_gpu).items() if v is not None}
        cpu_only: dict[str, Any] = {}
        if not on_gpu:  # vLLM's CPU build: each replica holds `cpu_threads` CPUs instead of GPUs
            threads = str(cfg.cpu_threads)
            cpu_only = {"placement_group_config": {"bundles": [{"CPU": cfg.cpu_threads}] * cfg.tensor_parallel_size},
                        "runtime_env": {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": f"{cfg.cpu_kvcache_gib:g}",
                                                     "OMP_NUM_THREADS": threads, "VLLM_CPU_OMP_THREADS_BIND": "nobind"}}}
        self._processor = build_processor(
            vLLMEngineProcessorConfig(model_source=self.model, engine_kwargs=engine_kwargs,
                                      concurrency=settings.engine_replicas, batch_size=64,
                                      chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
                                      should_continue_on_error=True, log_engine_metrics=False, **cpu_only),
            preprocess=partial(_to_vllm, self.model, cfg.max_model_len or _NO_LIMIT),
            postprocess=partial(_from_vllm, _eos_ids(self.model)))

    def model_identity(self) -> str:
        return model_identity(self.model)

    def _generate(self, requests: list[GenerationRequest], progress: bool) -> list[GenerationResult]:
        seeds = [r.sampling.seed if r.sampling.seed is not None else self._seeds.getrandbits(62) for r in requests]
        rows = [{"i": i, "j": j, "seed": seed, "request": r.model_dump_json()}
                for i, (r, seed) in enumerate(zip(requests, seeds, strict=True)) for j in range(r.sampling.n)]
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
              "stop": list(sp.stop) or None, "seed": int(row["seed"]) + int(row["j"]),
              "presence_penalty": sp.presence_penalty, "frequency_penalty": sp.frequency_penalty,
              "structured_outputs": structured}
    return {"i": row["i"], "j": row["j"], "max_tokens": sp.max_tokens,
            "tokenized_prompt": prompt_token_ids(_tokenizer(model), req, max_len), "sampling_params": params}


def _eos_ids(model: str) -> tuple[int, ...]:
    """The tokens vLLM stops at: the tokenizer's end of sequence and the generation config's."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    return tuple(sorted(end_token_ids(eos, _tokenizer(model))))


def _from_vllm(eos_ids: tuple[int, ...], row: dict[str, Any]) -> dict[str, Any]:
    """The processor gives no finish reason: a sample cut at `max_tokens` is one whose last token
    is not an end of sequence (a stop string met on exactly that token reads as cut, too)."""
    tokens = int(row.get("num_generated_tokens") or 0)
    generated = row.get("generated_tokens")
    last = int(generated[-1]) if generated is not None and len(generated) else None
    return {"i": row["i"], "j": row["j"], "text": row.get("generated_text") or "",
            "error": row.get("__inference_error__") or None,
            "finish_reason": "length" if tokens >= row["max_tokens"] and last not in eos_ids else "stop",
            "prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": tokens}
