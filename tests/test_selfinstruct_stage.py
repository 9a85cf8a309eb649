"""The generate stage end to end: scripted engine (exact behaviour, resume) and the bundled model."""

from __future__ import annotations

import random

import pyarrow.parquet as pq
import pytest

from instructforge.config import parse_config
from instructforge.engines.base import Engine, GenerationRequest, GenerationResult
from instructforge.filters.novelty import rouge_l
from instructforge.records import Example, content_id
from instructforge.runs import RunDir, read_table
from instructforge.selfinstruct import prompts, stage

TOPICS = [f"topic{i}" for i in range(400)]
VERBS = ["Describe", "Explain", "Summarize", "Compare", "List", "Classify"]


class Crash(BaseException):
    """Stands for the process being killed (not an Exception: the engine does not absorb it)."""


class ScriptedEngine(Engine):
    """Answers each kind of prompt with text that depends only on the request (deterministic)."""

    backend = "scripted"

    def __init__(self, crash_after_calls: int | None = None):
        super().__init__()
        self.calls = 0
        self.crash_after_calls = crash_after_calls
        self.batch_sizes: list[int] = []
        self.batch_kinds: list[set[str]] = []

    def model_identity(self) -> str:
        return "scripted-model"

    def _generate(self, requests: list[GenerationRequest], progress: bool) -> list[GenerationResult]:
        if self.crash_after_calls is not None and self.calls >= self.crash_after_calls:
            raise Crash
        self.calls += 1
        self.batch_sizes.append(len(requests))
        self.batch_kinds.append({_kind(r) for r in requests})
        return [self._answer(r) for r in requests]

    def _answer(self, req: GenerationRequest) -> GenerationResult:
        text = req.prompt
        if text.startswith(prompts.INSTRUCTION_HEADER):
            rng = random.Random(req.sampling.seed)
            if req.sampling.seed % 3 == 0:
                return GenerationResult(texts=[" A cut-off list"], finish_reasons=["length"])
            items = []
            for _ in range(6):
                verb, topics = rng.choice(VERBS), rng.sample(TOPICS, 3)
                items.append(f"{verb} the {topics[0]} and {topics[1]} of {topics[2]}.")
            items += ["Draw a picture of a cat.", "Hi.", items[0]]  # blacklist, too short, duplicate
            first = text.rsplit("\n", 1)[1].rstrip(".")
            body = " " + items[0] + "".join(f"\n{int(first) + k}. {it}" for k, it in enumerate(items[1:], 1))
            return GenerationResult(texts=[body], finish_reasons=["stop"], completion_tokens=len(body.split()))
        task = text.rsplit("Task: ", 1)[1].split("\n", 1)[0]
        if text.startswith(prompts.CLASSIFICATION_HEADER):
            assert req.structured is not None and req.structured.choice == prompts.CLASSIFICATION_CHOICES
            return GenerationResult(texts=[" Yes" if task.startswith("Classify") else " No"],
                                    finish_reasons=["stop"])
        if task.startswith("Compare"):  # same input, two outputs: the task is dropped
            body = " a vs b\nOutput: a\nExample 2\nInput: a vs b\nOutput: b"
        elif text.endswith("Class label:"):
            body = f" Good\nInput: {task} one\nClass label: Bad\nInput: {task} two\nClass label: Good\nInput: x:"
        else:
            body = f" {task} first\nOutput: answer one\nExample 2\nInput: same\nOutput: same"
        return GenerationResult(texts=[body], finish_reasons=["stop"])


def _kind(req: GenerationRequest) -> str:
    for kind, header in (("instructions", prompts.INSTRUCTION_HEADER),
                         ("classification", prompts.CLASSIFICATION_HEADER)):
        if req.prompt.startswith(header):
            return kind
    return "instances"


def seed_rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        is_cls = i % 3 == 0
        instruction = f"Seed instruction number {i} about subject{i} and more subject{i + 100}."
        for k in range(2):
            rows.append(Example(instruction=instruction, input=f"in {i}.{k}", output=f"label{k}" if is_cls else f"out {i}",
                                task=f"seed{i}", source="seeds:test.jsonl", template="seed",
                                meta={"seed_id": f"seed_task_{i}",
                                      "is_classification": "true" if is_cls else "false"}).model_dump())
    return rows


def run_generate(root, engine, **section):
    cfg = parse_config({"run": {"seed": 7}, "selfinstruct": {"target": 30, "prompts_per_round": 4, **section}})
    runs = RunDir(root)
    ingest, _ = runs.run_stage(1, "ingest", config={}, inputs=[], code="t", fn=lambda ctx: ctx.write(seed_rows()))
    out, _ = runs.run_stage(2, "generate", config=cfg.selfinstruct.model_dump(mode="json"), inputs=[ingest],
                            code="t", fn=stage.run, resumable=True, section=cfg.selfinstruct, run=cfg.context(),
                            engine_factory=lambda: engine)
    return out


def test_generate_reaches_target_and_records_every_rejection(tmp_path):
    engine = ScriptedEngine()
    out = run_generate(tmp_path, engine)
    stats = out.stats()
    data = out.table().to_pylist()
    rejected = read_table(out.rejected).to_pylist()

    assert stats["accepted_tasks"] == 30 and stats["reached_target"]
    tasks = {r["task"] for r in data}
    assert len(tasks) == 30
    assert all(r["source"] == "selfinstruct:scripted-model" and r["template"] == "selfinstruct" for r in data)
    assert max(engine.batch_sizes) > 4  # batched

    meta = [dict(r["meta"]) for r in data]
    assert {m["is_classification"] for m in meta} == {"true", "false"}
    for r, m in zip(data, meta, strict=True):
        assert float(m["nearest_score"]) <= 0.7 and m["round"] and m["prompt_fingerprint"]
        if m["nearest_instruction"]:
            assert rouge_l(r["instruction"], m["nearest_instruction"]) == pytest.approx(
                float(m["nearest_score"]), abs=1e-4)
        else:
            assert float(m["nearest_score"]) == 0.0
        assert r["output"] and r["input"] != r["output"]
        assert not r["instruction"].startswith("Compare")  # conflicting outputs
    instructions = sorted({r["instruction"] for r in data})
    for i, a in enumerate(instructions):  # the novelty rule holds over the whole output
        assert all(rouge_l(a, b) <= 0.7 for b in instructions[i + 1:])

    reasons = {r["reason"] for r in rejected}
    assert {"truncated", "blacklisted_word", "too_short", "rouge_l_above_threshold", "input_equals_output",
            "conflicting_outputs", "ends_with_colon"} <= reasons
    novelty = [r for r in rejected if r["reason"] == "rouge_l_above_threshold"]
    assert all(float(dict(r["evidence"])["score"]) > 0.7 and dict(r["evidence"])["nearest_id"] for r in novelty)
    assert sum(stats["rejected_by_reason"].values()) == len(rejected) == stats["rows_rejected"]
    assert stats["candidates"] == stats["novel_instructions"] + sum(
        stats["rejected_by_reason"].get(k, 0) for k in ("too_short", "too_long", "blacklisted_word",
                                                         "banned_prefix", "starts_with_punctuation",
                                                         "non_ascii_start", "rouge_l_above_threshold"))


def without_timing(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in ("this_run", "seconds")}


def test_overlapped_rounds_give_the_sequential_schedules_output(tmp_path):
    section = {"target": 60, "prompts_per_round": 2}
    sequential_engine, overlapped_engine = ScriptedEngine(), ScriptedEngine()
    sequential = run_generate(tmp_path / "seq", sequential_engine, overlap_rounds=False, **section)
    overlapped = run_generate(tmp_path / "overlap", overlapped_engine, **section)

    rounds = sequential.stats()["rounds"]
    assert rounds > 3
    # one step at a time: each engine call holds one step of one round
    assert all(len(kinds) == 1 for kinds in sequential_engine.batch_kinds)
    # overlapped: the next round's instruction prompts share engine batches with this round's steps
    assert any(len(kinds) > 1 and "instructions" in kinds for kinds in overlapped_engine.batch_kinds)
    assert overlapped_engine.calls < sequential_engine.calls

    assert overlapped.table().to_pylist() == sequential.table().to_pylist()
    assert read_table(overlapped.rejected).to_pylist() == read_table(sequential.rejected).to_pylist()
    assert without_timing(overlapped.stats()) == without_timing(sequential.stats())


def test_generation_stats_on_fixed_outputs(tmp_path):
    """Every ratio from counts fixed by the scripted engine (see its answers)."""
    out = run_generate(tmp_path, ScriptedEngine(), target=3, prompts_per_round=3, max_rounds=1,
                       overlap_rounds=False)
    stats = out.stats()
    # round 1, seeds of prompts 0..2: which one the scripted engine truncates (seed % 3 == 0)
    seeds = [int(content_id("7", "1", str(i))[:8], 16) for i in range(3)]
    truncated = sum(s % 3 == 0 for s in seeds)
    parsed = 3 - truncated
    assert stats["responses"] == 3 and stats["responses_parsed"] == parsed
    assert stats["parse_yield"] == round(parsed / 3, 3) <= 1
    assert stats["candidates"] == 9 * parsed  # six tasks, a blacklisted one, a short one, a duplicate
    assert stats["candidates_per_response"] == round(9 * parsed / 3, 3)
    assert stats["novelty_rate"] == round(stats["novel_instructions"] / stats["candidates"], 3)
    assert stats["instances_per_task"] == round(stats["instances_kept"] / stats["accepted_tasks"], 3)
    assert stats["requests"] == 3 + 2 * stats["novel_instructions"] and stats["failed_requests"] == 0
    run = stats["this_run"]
    assert set(run["phases"]) == {"instructions", "classification", "instances"}
    assert run["phases"]["instructions"]["requests"] == 3
    assert run["phases"]["instructions"]["completion_tokens"] == stats["completion_tokens"] > 0
    assert 0 < run["engine_busy_fraction"] <= 1


def test_resume_after_crash_equals_uninterrupted_run(tmp_path):
    section = {"target": 60, "prompts_per_round": 2}
    whole = run_generate(tmp_path / "whole", ScriptedEngine(), **section)

    with pytest.raises(Crash):  # inside round 3 (one step at a time: 3 calls a round)
        run_generate(tmp_path / "crashed", ScriptedEngine(crash_after_calls=7), overlap_rounds=False, **section)
    work = next((tmp_path / "crashed").glob(".02-generate.*.work"))
    assert len(list((work / "data").glob("part-*.parquet"))) == 2  # rounds 1 and 2 checkpointed
    # a shard written by the interrupted round just before the kill must not survive the resume
    pq.write_table(whole.table().slice(0, 3), work / "data" / "part-00099.parquet")
    resumed = run_generate(tmp_path / "crashed", ScriptedEngine(), **section)
    assert resumed.stats()["rounds"] == whole.stats()["rounds"] > 3

    assert resumed.table().to_pylist() == whole.table().to_pylist()
    assert read_table(resumed.rejected).to_pylist() == read_table(whole.rejected).to_pylist()
    assert resumed.stats()["rows_out"] == whole.stats()["rows_out"]


def test_alpaca_mode(tmp_path):
    class AlpacaEngine(ScriptedEngine):
        def _answer(self, req):
            rng = random.Random(req.sampling.seed)
            blocks = [f"Explain the {t} of {u} and {v} to a {w} reader.\n{{k}}. Input: <none>\n{{k}}. Output: It is {t}."
                      for t, u, v, w in (rng.sample(TOPICS, 4) for _ in range(3))]
            first = int(req.prompt.rsplit("###\n", 1)[1].split(".")[0])
            text = " " + "\n###\n".join(f"{first + k}. Instruction: {b.format(k=first + k)}" if k else
                                         b.format(k=first) for k, b in enumerate(blocks))
            return GenerationResult(texts=[text], finish_reasons=["stop"])

    out = run_generate(tmp_path, AlpacaEngine(), mode="alpaca", target=10)
    data = out.table().to_pylist()
    assert len(data) == 10 and all(r["input"] == "" and r["output"].startswith("It is") for r in data)
    assert {dict(r["meta"])["mode"] for r in data} == {"alpaca"}
    stats = out.stats()
    assert stats["responses"] == stats["responses_parsed"] == stats["requests"] > 0
    assert stats["parse_yield"] == 1.0 and stats["candidates_per_response"] == 3.0  # 3 tasks a response


@pytest.mark.slow
@pytest.mark.parametrize("structured", [False, True])
def test_bundled_model_end_to_end(tmp_path, hf_engine, structured):
    out = run_generate(tmp_path, hf_engine, target=3, prompts_per_round=3, max_rounds=1,
                       sampling={"max_tokens": 96}, instance_max_tokens=48, human_examples=4,
                       machine_examples=0, structured=structured)
    stats = out.stats()
    assert stats["rounds"] == 1 and stats["requests"] >= 3 and stats["completion_tokens"] > 0
    assert stats["backend"] == "transformers"
    kept, rejected = out.table().to_pylist(), read_table(out.rejected).to_pylist()
    assert stats["rows_out"] == len(kept) and stats["rows_rejected"] == len(rejected)
    assert kept or rejected  # whatever the tiny model wrote went somewhere, with a reason
    for r in kept:
        assert 4 <= len(r["instruction"].split()) <= 150 and r["output"]
    assert 0 <= stats["parse_yield"] <= 1
    if structured:  # schema-constrained: every answer that was not cut short parses
        cut = sum(r["filter"] == "parse" and r["reason"] == "truncated" for r in rejected)
        assert stats["responses_parsed"] == stats["responses"] - cut
