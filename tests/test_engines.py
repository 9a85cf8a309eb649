"""Engine interface without a model: config validation, request cache, failure isolation."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from instructforge.config import parse_config
from instructforge.engines import create_engine, pick_backend
from instructforge.engines.base import Engine, GenerationRequest, GenerationResult, SamplingParams
from instructforge.engines.cache import RequestCache
from instructforge.engines.config import EngineConfig
from instructforge.errors import ConfigError


class Scripted(Engine):
    """Answers each prompt with a counter, so a cached answer is told apart from a fresh one."""

    backend = "scripted"

    def __init__(self, cache=None, fail_on: str | None = None):
        super().__init__(cache)
        self.calls: list[int] = []
        self.fail_on = fail_on
        self.answered = 0

    def model_identity(self) -> str:
        return "scripted-model"

    def _generate(self, requests, progress):
        self.calls.append(len(requests))
        if any(r.prompt == self.fail_on for r in requests):
            raise ValueError(f"cannot answer {self.fail_on!r}")
        out = []
        for r in requests:
            self.answered += 1
            out.append(GenerationResult(texts=[f"{r.prompt}#{self.answered}"] * r.sampling.n,
                                        finish_reasons=["stop"] * r.sampling.n, prompt_tokens=1,
                                        completion_tokens=r.sampling.n))
        return out


def req(prompt: str, **sampling) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, sampling=SamplingParams(**sampling))


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="engine.concurrency"):
        parse_config({"engine": {"concurrency": 0}})
    with pytest.raises(ConfigError, match="engine.api_key: unknown key"):
        parse_config({"engine": {"backend": "openai", "model": "m", "api_key": "sk-secret"}})
    with pytest.raises(ConfigError, match="backend openai needs"):
        parse_config({"engine": {"backend": "openai"}})
    with pytest.raises(ConfigError, match="engine.backend"):
        parse_config({"engine": {"backend": "llamacpp"}})
    cfg = parse_config({"engine": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}})
    assert cfg.engine.api_key_env == "OPENAI_API_KEY"


def test_default_backend_without_gpu_is_transformers(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_backend(EngineConfig()) == "transformers"
    assert pick_backend(EngineConfig(backend="vllm")) == "vllm"


def test_failed_request_is_an_error_result_not_a_failed_batch():
    engine = Scripted(fail_on="bad")
    results = engine.generate([req("a"), req("bad"), req("c")])
    assert [r.ok for r in results] == [True, False, True]
    assert "cannot answer 'bad'" in results[1].error and results[1].finish_reasons == ["error"]
    assert results[0].text.startswith("a#") and results[2].text.startswith("c#")
    assert engine.calls == [3, 1, 1, 1]  # whole batch first, then one at a time
    assert engine.usage.errors == 1 and engine.usage.requests == 3


def test_cache_answers_repeats_and_keeps_duplicates_distinct(tmp_path):
    cache_file = tmp_path / "run" / "request-cache.sqlite"
    engine = Scripted(cache=RequestCache(cache_file))
    batch = [req("x", seed=1), req("x", seed=1), req("y", seed=1)]
    first = engine.generate(batch)
    assert [r.text for r in first] == ["x#1", "x#2", "y#3"]  # identical requests: distinct samples
    engine.close()

    again = Scripted(cache=RequestCache(cache_file))  # a new process resuming the run
    second = again.generate(batch + [req("x", seed=2)])
    assert [r.text for r in second[:3]] == ["x#1", "x#2", "y#3"]
    assert all(r.cached for r in second[:3]) and not second[3].cached
    assert again.calls == [1]  # only the new request reached the model
    assert again.usage.cached == 3


def test_cache_key_covers_model_sampling_and_structure(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    base = req("p", seed=1)
    variants = [req("p", seed=2), req("p", seed=1, temperature=0.1), req("p", seed=1, stop=("\n",)),
                GenerationRequest(prompt="p", sampling=SamplingParams(seed=1), structured={"choice": ("a", "b")}),
                GenerationRequest(messages=[{"role": "user", "content": "p"}], sampling=SamplingParams(seed=1))]
    keys = {cache.keys("m", [r])[0] for r in [base, *variants]}
    assert len(keys) == 1 + len(variants)
    assert cache.keys("m", [base]) != cache.keys("other-model", [base])


def test_errors_are_not_cached(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    Scripted(cache=cache, fail_on="bad").generate([req("bad")])
    assert len(cache) == 0


def _writer(path: str, start: int) -> None:
    cache = RequestCache(path)
    for i in range(start, start + 50):
        cache.put_many("m", [(f"k{i}", GenerationResult(texts=[str(i)], finish_reasons=["stop"]))])


def test_cache_is_safe_across_threads_and_processes(tmp_path):
    path = str(tmp_path / "c.sqlite")
    RequestCache(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in (0, 50)]
    threads = [threading.Thread(target=_writer, args=(path, s)) for s in (100, 150)]
    for w in [*procs, *threads]:
        w.start()
    for w in [*procs, *threads]:
        w.join()
    assert all(p.exitcode == 0 for p in procs)
    cache = RequestCache(path)
    assert len(cache) == 200
    hits = cache.get_many([f"k{i}" for i in range(200)])
    assert [h.text for h in hits] == [str(i) for i in range(200)]


def test_create_engine_openai_needs_no_model_load():
    engine = create_engine(EngineConfig(backend="openai", model="served", base_url="http://127.0.0.1:9/v1"))
    assert engine.backend == "openai" and engine.model_identity() == "served"
    engine.close()
