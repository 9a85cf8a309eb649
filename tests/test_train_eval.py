"""Evaluation in the train stage: metrics from real generations of the bundled model, base vs adapter.

The learnable task has answer options and a fixed answer format: the prompt states a code word and
asks for it back, answered with the bare word. The base model answers in a sentence (exact match 0);
a few SFT steps teach the format; an adapter trained on the same prompts with the answers shuffled
(every answer another prompt's word) learns the format but not the task, so it must score lower.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from instructforge.config import parse_config
from instructforge.errors import InputError
from instructforge.records import Example
from instructforge.runs import RunDir, StageOutput
from instructforge.train.config import EvalSection
from instructforge.train.data import write_split
from instructforge.train.eval import benchmark_rows, exact_match, held_out_rows, normalize

WORDS = ["alpha", "bravo", "charlie", "delta"]
SYSTEM = {"role": "system", "content": "Answer with one word."}


def code_word(word: str, answer: str) -> Example:
    return Example(instruction=f"The code word is {word}. What is the code word?\nOptions: {', '.join(WORDS)}",
                   output=answer, task="code_words", meta={"options": "flan"})


def free_text(i: int) -> Example:
    return Example(instruction=f"Describe item {i} in a sentence.", output=f"Item {i} is a small round stone.",
                   task="describe", meta={"options": "none"})


def conversation(ex: Example) -> dict:
    return {"id": ex.id, "task": ex.task, "messages": [
        SYSTEM, {"role": "user", "content": ex.instruction}, {"role": "assistant", "content": ex.output}]}


def make_export(root: Path, *, shuffled: bool) -> StageOutput:
    """Hub-layout SFT export (train: the mapping x4, test: each color once + 2 free-text rows) and the
    export's example rows (their `meta.options` says which tasks have answer options)."""
    train = []
    for rep in range(4):
        outs = WORDS[rep % 3 + 1:] + WORDS[:rep % 3 + 1] if shuffled else WORDS  # rotated: every answer wrong
        train += [conversation(code_word(w, o)) for w, o in zip(WORDS, outs, strict=True)]
    test = [code_word(w, w) for w in WORDS] + [free_text(1), free_text(2)]
    stage = root / "04-export"
    data = stage / "hub" / "data"
    write_split(data / "sft", "train", train)
    write_split(data / "sft", "test", [conversation(e) for e in test])
    (stage / "data").mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([e.model_dump() for e in test], schema=Example.arrow_schema()),
                   stage / "data" / "part-00000.parquet")
    return StageOutput(stage, "export-fp")


def run_stage(tmp_path: Path, model_dir: Path, *, shuffled: bool, benchmark: Path | None = None) -> StageOutput:
    from instructforge.train import stage

    train = {"base_model": str(model_dir), "method": "sft", "max_steps": 8, "batch_size": 4, "max_length": 64,
             "learning_rate": 2e-3, "logging_steps": 4, "samples": 1, "sample_max_tokens": 4,
             "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
             "eval": {"max_new_tokens": 8, "benchmarks": [{"name": "bench", "path": str(benchmark)}]
                      if benchmark else []}}
    cfg = parse_config({"run": {"root": str(tmp_path), "name": "t"}, "train": train})
    export = make_export(tmp_path / "t", shuffled=shuffled)
    out, _ = RunDir(tmp_path / "t").run_stage(5, "train", config={}, inputs=[export], code="test",
                                              fn=stage.run, schema=stage.SCHEMA, resumable=True,
                                              section=cfg.train, run=cfg.context())
    return out


# -- no model -----------------------------------------------------------------------------------

def test_exact_match_ignores_case_whitespace_and_surrounding_punctuation():
    assert normalize("  Alpha.\n") == "alpha" and exact_match("alpha", "ALPHA!") == 1.0
    assert exact_match("alpha", "The answer is alpha.") == 0.0


def test_held_out_rows_choose_the_metric_by_answer_options(tmp_path):
    export = make_export(tmp_path, shuffled=False)
    from instructforge.train.data import load_splits
    from instructforge.train.eval import option_ids

    splits = load_splits(export.path / "hub" / "data" / "sft", ("messages",), keep=("id", "task"))
    split, rows = held_out_rows(splits, option_ids(export), None)
    assert split == "test" and len(rows) == 6
    assert {r.task: r.metric for r in rows} == {"code_words": "exact_match", "describe": "rouge_l"}


def test_benchmark_rows_name_the_file_row_and_field(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"question": "2+2?", "answer": "4"}\n{"question": "3+3?", "answer": ""}\n')
    cfg = EvalSection.model_validate({"benchmarks": [{"path": str(bench)}]})
    with pytest.raises(InputError) as e:
        benchmark_rows(cfg, Path)
    assert (e.value.file, e.value.line, e.value.field) == (str(bench), 2, "answer")
    cfg = EvalSection.model_validate({"benchmarks": [{"path": str(bench), "answer_field": "solution"}]})
    with pytest.raises(InputError, match="no such column"):
        benchmark_rows(cfg, Path)


# -- the bundled model ----------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_scores_a_good_adapter_above_base_and_above_a_shuffled_one(tmp_path, bundled_model_dir):
    from instructforge.train import stage

    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": f"The code word is {w}. What is it?", "answer": w}) + "\n"
                             for w in WORDS))
    good = run_stage(tmp_path / "good", bundled_model_dir, shuffled=False, benchmark=bench)
    ev = good.stats()["eval"]
    assert ev["model"] == str(bundled_model_dir) and ev["settings"]["split"] == "test"
    assert set(ev["metrics"]) == {"exact_match", "rouge_l", "loss", "perplexity"}
    assert set(ev["per_task"]) == {"code_words", "describe", "benchmark/bench"}
    em = ev["per_task"]["code_words"]["exact_match"]
    assert em["adapter"] >= 0.75 and em["adapter"] > em["base"]
    assert ev["metrics"]["loss"]["adapter"] < ev["metrics"]["loss"]["base"]

    # the numbers are those of the generations kept per row
    rows = [json.loads(line) for line in (good.path / "eval-rows.jsonl").open()]
    assert len(rows) == 10 and all(r["base"] != r["adapter"] for r in rows if r["task"] == "code_words")
    mine = [exact_match(r["reference"], r["adapter"]) for r in rows if r["task"] == "code_words"]
    assert sum(mine) / len(mine) == pytest.approx(em["adapter"])
    rendered = stage.summary(good)
    assert rendered[-1].title.startswith("eval:")  # the eval table ends the stage summary

    broken = run_stage(tmp_path / "broken", bundled_model_dir, shuffled=True)
    bad = broken.stats()["eval"]["per_task"]["code_words"]["exact_match"]
    assert bad["adapter"] < em["adapter"]
    assert bad["base"] == em["base"]  # same base model, same rows, greedy
