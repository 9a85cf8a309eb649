"""Decontamination, the standalone novelty filter, and the LLM judge (scripted engine + bundled model)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_filters import assert_nothing_lost, ex, rejected, run_filters

from instructforge.engines.base import Engine, GenerationRequest, GenerationResult
from instructforge.errors import InputError
from instructforge.filters.config import JudgeConfig
from instructforge.filters.decontamination import Benchmark
from instructforge.filters.judge import Judge, parse_score
from instructforge.filters.text import ngram_hashes, tokenize
from instructforge.records import Example

QUESTION = ("A farmer has seventeen sheep and all but nine of them run away through a hole in the fence "
            "during the storm, how many sheep does the farmer have left")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_decontamination_13gram_short_items_and_stats(tmp_path):
    write_jsonl(tmp_path / "bench.jsonl", [{"question": QUESTION, "answer": "9", "id": "q1"},
                                           {"question": "What is the capital of Peru?", "answer": "Lima"}])
    pq.write_table(pa.table({"prompt": ["Translate 'good morning' into French."]}), tmp_path / "other.parquet")
    rows = [
        ex("Solve this riddle: " + QUESTION.upper() + "?"),          # 13-gram overlap (case, punctuation)
        ex("Answer briefly. What is the capital of Peru? Be short."),  # short benchmark item, quoted
        ex("Write a limerick about a sheep.", "There once was a sheep from the fence."),
        ex("Please translate 'good morning' into French.", "Bonjour."),  # other bench, 5-word item
        ex("What is the capital of Chile?", "Santiago."),
    ]
    benchmarks = [{"name": "riddles", "path": "bench.jsonl", "fields": ["question"]},
                  {"path": "other.parquet"}]
    out = run_filters(tmp_path, [rows], {"steps": [{"type": "decontamination", "benchmarks": benchmarks}]})
    rej = {r["instruction"]: dict(r["evidence"]) for r in rejected(out)}
    assert len(rej) == 3
    first = rej[rows[0]["instruction"]]
    assert first["benchmark"] == "riddles" and first["field"] == "instruction" and len(first["ngram"].split()) == 13
    assert first["ngram"] in QUESTION.lower()
    assert rej[rows[1]["instruction"]]["ngram"] == "what is the capital of peru"
    assert rej[rows[3]["instruction"]]["benchmark"] == "other"
    assert out.stats()["decontamination"] == {"riddles": 2, "other": 1}
    assert_nothing_lost(out, [rows])


def test_benchmark_index_first_hits_match_a_set_lookup_of_every_window():
    """The hash-set index finds, per row, the same first (width, window) as looking every n-gram hash
    of every width up in a Python set; 5K benchmark texts, rows quoting long and short ones."""
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(3000)]

    def text(k):
        return " ".join(vocab[i] for i in rng.integers(0, len(vocab), k))
    bench_texts = [text(int(rng.integers(1, 40))) for _ in range(5000)]
    index = Benchmark("b", bench_texts, 13, 3)
    rows = []
    for i in range(600):
        quoted = bench_texts[int(rng.integers(0, len(bench_texts)))].split()
        k = int(rng.integers(0, max(1, len(quoted) - 13)))
        part = " ".join(quoted[k:k + 13]) if i % 3 else ""  # a whole short text, or a 13-gram of a long one
        rows.append(f"{text(int(rng.integers(0, 30)))} {part.upper()}, {text(int(rng.integers(0, 5)))}")
    hashes, offsets = tokenize(pa.array(rows))
    _, bo = tokenize(pa.array(bench_texts))
    lengths = np.diff(bo)
    grams = set(ngram_hashes(*tokenize(pa.array([t for t, n in zip(bench_texts, lengths, strict=True) if n >= 3])),
                             13)[0].tolist())
    expected = {}
    for d in range(len(rows)):
        for w in [13, *index.short_lengths]:
            g, _ = ngram_hashes(hashes[offsets[d]:offsets[d + 1]], np.array([0, offsets[d + 1] - offsets[d]]), w,
                                 short=w == 13)
            hit = [k for k, x in enumerate(g.tolist()) if x in grams]
            if hit:
                expected[d] = (w, hit[0])
                break
    docs, width, first = index.first_hits(hashes, offsets)
    assert dict(zip(docs.tolist(), zip(width.tolist(), first.tolist(), strict=True), strict=True)) == expected
    assert 300 < len(expected) < 600 and index.size == len(grams)


def test_decontamination_ignores_benchmark_texts_below_min_short_words(tmp_path):
    """One-word answers ("9", "Lima") would match ordinary rows; they are not benchmark grams."""
    write_jsonl(tmp_path / "bench.jsonl", [{"question": "What is the capital of Peru?", "answer": "Lima"},
                                           {"question": "How many legs has a spider?", "answer": "8"}])
    rows = [ex("Name the capital of Peru.", "Lima"), ex("How many legs do spiders have?", "8"),
            ex("Quote it: how many legs has a spider?", "Eight.")]
    benchmarks = [{"name": "quiz", "path": str(tmp_path / "bench.jsonl")}]
    out = run_filters(tmp_path, [rows], {"steps": [{"type": "decontamination", "benchmarks": benchmarks}]})
    assert [r["instruction"] for r in rejected(out)] == [rows[2]["instruction"]]
    out = run_filters(tmp_path / "strict", [rows], {"steps": [
        {"type": "decontamination", "benchmarks": benchmarks, "min_short_words": 1}]})
    assert len(rejected(out)) == 3


def test_decontamination_bad_benchmark_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"q": "fine"}\n{"q": broken\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2"):
        run_filters(tmp_path, [[ex("Say hi to me.")]],
                    {"steps": [{"type": "decontamination", "benchmarks": [{"path": "bad.jsonl"}]}]})
    (tmp_path / "latin1.jsonl").write_bytes('{"q": "fine"}\n{"q": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.jsonl:2.*not UTF-8"):
        run_filters(tmp_path, [[ex("Say hi to me.")]],
                    {"steps": [{"type": "decontamination", "benchmarks": [{"path": "latin1.jsonl"}]}]})
    write_jsonl(tmp_path / "b.jsonl", [{"q": "fine"}])
    with pytest.raises(InputError, match="field 'question'"):
        run_filters(tmp_path, [[ex("Say hi to me.")]],
                    {"steps": [{"type": "decontamination", "benchmarks": [{"path": "b.jsonl", "fields": ["question"]}]}]})


def test_novelty_filter_against_reference_and_within(tmp_path):
    write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "Write a short poem about the ocean at night."}])
    rows = [ex("Write a short poem about the ocean at night!"),       # same as the pool
            ex("List five uses of baking soda around the house."),
            ex("List five uses of baking soda around the home."),      # like the row kept before it
            ex("Explain what a black hole is to a ten year old.")]
    steps = [{"type": "novelty", "reference": [{"path": "pool.jsonl"}]}]
    out = run_filters(tmp_path, [rows], {"steps": steps})
    rej = {r["instruction"]: dict(r["evidence"]) for r in rejected(out)}
    assert set(rej) == {rows[0]["instruction"], rows[2]["instruction"]}
    assert rej[rows[0]["instruction"]]["nearest"] == "pool:instruction:0"
    assert rej[rows[2]["instruction"]]["nearest"] == f"row:{rows[1]['id']}"
    assert float(rej[rows[2]["instruction"]]["rouge_l"]) > 0.7
    steps[0]["within"] = False
    out = run_filters(tmp_path / "b", [rows], {"steps": [{**steps[0], "reference": [
        {"path": str(tmp_path / "pool.jsonl")}]}]})
    assert out.table().num_rows == 3


class ScriptedJudge(Engine):
    """Answers with a score derived from the output's length; 'broken' outputs get garbage."""

    backend = "scripted"
    on_failure = "continue"  # engine.on_failure: the 'offline' row's engine error becomes a rejected row

    def __init__(self):
        self.calls: list[int] = []

    def model_identity(self) -> str:
        return "scripted-judge"

    def generate(self, requests: list[GenerationRequest], *, progress: bool = False) -> list[GenerationResult]:
        self.calls.append(len(requests))
        out = []
        for r in requests:
            assert r.structured is not None and r.structured.json_schema["required"] == ["score"]
            response = r.messages[-1]["content"].split("Response:\n", 1)[1].split("\n\nReply as", 1)[0]
            if "broken" in response:
                out.append(GenerationResult(texts=["not json"], finish_reasons=["stop"]))
            elif "offline" in response:
                out.append(GenerationResult(error="server down"))
            else:
                score = min(10, len(response.split()))
                out.append(GenerationResult(texts=[json.dumps({"score": score})], finish_reasons=["stop"]))
        return out


def _judge(rows, **cfg):
    engine = ScriptedJudge()
    judge = Judge(JudgeConfig(**cfg), lambda: engine)
    batch = pa.RecordBatch.from_pylist(rows, schema=Example.arrow_schema())
    kept, removed = judge.apply(batch)
    return engine, judge, kept, removed


def test_judge_scores_threshold_and_meta():
    rows = [ex("Describe autumn.", "Leaves fall and the air turns cool and crisp in the evenings now."),
            ex("Describe winter.", "Cold.", source_note="x"),
            ex("Describe spring.", "broken"), ex("Describe summer.", "offline")]
    engine, judge, kept, removed = _judge(rows, min_score=7)
    assert engine.calls == [4]  # one batched call
    metas = [dict(m) for m in kept.column("meta").to_pylist()]
    assert metas[0]["judge_score"] == "10" and metas[1] == {"source_note": "x", "judge_score": "1"}
    assert sorted(removed) == [1, 2, 3]
    assert removed[1][1] == {"judge_score": "1", "min_score": "7"}
    assert "not json" in removed[2][1]["error"] and removed[3][1]["error"] == "server down"
    assert judge.stats() == {"score_histogram": {"1": 1, "10": 1}, "failures": 2}
    _, _, kept, removed = _judge(rows, min_score=7, on_failure="keep")
    assert sorted(removed) == [1] and "judge_error" in dict(kept.column("meta")[2].as_py())


def test_parse_score():
    assert parse_score('{"score": 8}') == 8.0
    assert parse_score('{"score": 11}') is None and parse_score('{"score": true}') is None
    assert parse_score("8") is None and parse_score("") is None


def test_judge_in_stage_with_scripted_engine(tmp_path, monkeypatch):
    from instructforge.filters import stage

    engine = ScriptedJudge()
    real = stage.build_filter
    monkeypatch.setattr(stage, "build_filter", lambda spec, ctx: Judge(spec, lambda: engine)
                        if spec.type == "judge" else real(spec, ctx))
    rows = [ex("Describe autumn.", "Leaves fall and the air turns cool and crisp in the evenings."),
            ex("Describe winter.", "Cold.")]
    out = run_filters(tmp_path, [rows], {"steps": [{"type": "judge", "min_score": 5}]})
    kept = out.table().to_pylist()
    assert len(kept) == 1 and dict(kept[0]["meta"])["judge_score"] == "10"
    assert out.stats()["funnel"] == [{"filter": "judge", "rows_in": 2, "rows_out": 1}]
    assert out.stats()["filters"]["judge"]["score_histogram"] == {"1": 1, "10": 1}


def test_judge_with_bundled_model(hf_engine):
    rows = [ex("What is two plus two?", "Two plus two is four."), ex("Name a colour.", "Blue.")]
    judge = Judge(JudgeConfig(min_score=1, max_tokens=16), lambda: hf_engine)
    batch = pa.RecordBatch.from_pylist(rows, schema=Example.arrow_schema())
    kept, removed = judge.apply(batch)
    assert removed == {}  # min_score 1: every parseable score keeps the row; schema makes it parseable
    for meta in kept.column("meta").to_pylist():
        assert 1 <= float(dict(meta)["judge_score"]) <= 10
