"""The HTML report is built from the run directory alone, is one file, and loads nothing.

`small_run` writes every stage's outputs the way the stages do (rows, rejected rows, stats.json,
metrics.jsonl, preference pairs), without a model, so the report sees a complete run in seconds.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from instructforge.records import Example, PreferencePair
from instructforge.report import verb_noun_pairs, write_report
from instructforge.runs import RunDir, ShardWriter

SECTIONS = ["config", "stages", "funnel", "tasks", "sources", "splits", "lengths", "similarity", "verbs", "generation",
            "generated", "preference", "contamination", "rejected", "training", "examples"]

SEEDS = ["Write a haiku about the sea.", "Classify the sentiment of the review.", "Summarize the article.",
         "Translate the sentence into French.", "List three fruits."]
GENERATED = ["Write a poem about winter.", "Summarize the following email.", "Classify the email as spam."]


def _rows() -> list[dict]:
    seeds = [Example(instruction=t, output=f"answer {i}", task=f"seed_{i}", source="seeds:seed_tasks.jsonl",
                     template="seed").model_dump() for i, t in enumerate(SEEDS)]
    flan = [Example(instruction=f"Review number {i}: is this review positive or negative?", input=f"review {i}",
                    output="positive", task=f"review_{i % 3}", source="collection:flan_mini.yaml").model_dump()
            for i in range(20)]
    return seeds + flan


def _generated() -> list[dict]:
    return [Example(instruction=t, input="", output=f"generated answer {i}", task=f"selfinstruct-{i}",
                    source="selfinstruct:model", template="selfinstruct",
                    meta={"nearest_score": str(0.2 + 0.2 * i), "nearest_instruction": SEEDS[i]}).model_dump()
            for i, t in enumerate(GENERATED)]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    run = RunDir(tmp_path_factory.mktemp("report") / "small")
    rows = _rows()

    def ingest(ctx):
        ctx.write(rows)
        return {"categories": {"sentiment": 20, "seed": 5}, "funnel": [{"filter": "task_cap", "rows_in": 30,
                                                                        "rows_out": 25}]}

    def generate(ctx):
        ctx.write(_generated())
        ctx.reject([Example(instruction="Draw a map of the city.", task="x").model_dump()], "instruction_filter",
                   "blacklisted_word")
        return {"rejected_by_reason": {"blacklisted_word": 1}, "parse_yield": 0.75,
                "phases": {"instructions": {"tokens_per_second": 12.5}}}

    def filter_(ctx):
        kept = [r for inp in ctx.inputs for r in inp.table().to_pylist()]
        ctx.write(kept[:-2])
        ctx.reject(kept[-2:-1], "heuristics", "language fr", {"language": "fr"})
        ctx.reject(kept[-1:], "decontamination", "overlaps benchmark bench", {"ngram": "review 19 is"})
        return {"funnel": [{"filter": "heuristics", "rows_in": len(kept), "rows_out": len(kept) - 1},
                           {"filter": "decontamination", "rows_in": len(kept) - 1, "rows_out": len(kept) - 2}],
                "decontamination": {"bench": 1}}

    def export(ctx):
        kept = ctx.inputs[0].table().to_pylist()
        ctx.write(kept)
        writer = ShardWriter(ctx.work / "pairs", PreferencePair.arrow_schema())
        writer.write([PreferencePair(prompt=f"p{i}", chosen="long answer", rejected="short",
                                     scores={"chosen": 4.0, "rejected": 2.0 - i}).model_dump() for i in range(3)])
        writer.close()
        return {"configs": {"sft": {"train": 20, "validation": 2, "test": 2}, "preference": {"train": 3}},
                "preference": {"prompts": 4, "pairs": 3, "dropped": {"tie": 1}, "judge": "rule:length",
                               "k": 2, "temperatures": [0.7], "rejected": "lowest", "truncated": 2}}

    def train(ctx):
        ctx.write([{"prompt": "Name a fruit.", "reference": "apple", "before": "I am a model", "after": "Apple."}])
        (ctx.work / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
            {"phase": "sft", "step": 1, "loss": 2.0}, {"phase": "sft", "step": 2, "loss": 1.5, "eval_loss": 1.7},
            {"phase": "dpo", "step": 1, "loss": 0.69, "rewards/margins": 0.0},
            {"phase": "dpo", "step": 2, "loss": 0.6, "rewards/margins": 0.3})))
        return {"phases": {"sft": {"steps": 2, "first_loss": 2.0, "last_loss": 1.5, "eval": {"eval_loss": 1.7},
                                   "tokens_per_second": 50.0}},
                "eval": {"model": "m", "metrics": {"rougeL": {"base": 0.1, "adapter": 0.3}},
                         "per_task": {"qa": {"rougeL": {"base": 0.2, "adapter": 0.4}}}}}

    import pyarrow as pa

    train_schema = pa.schema([(c, pa.string()) for c in ("prompt", "reference", "before", "after")])
    first, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="v", fn=ingest)
    gen, _ = run.run_stage(2, "generate", config={"section": {"novelty_threshold": 0.7}}, inputs=[first],
                           code="v", fn=generate)
    filt, _ = run.run_stage(3, "filter", config={"section": {"steps": [
        {"type": "heuristics"}, {"type": "decontamination", "benchmarks": [{"name": "bench", "path": "b.jsonl"}]}]}},
        inputs=[first, gen], code="v", fn=filter_)
    exp, _ = run.run_stage(4, "export", config={}, inputs=[filt], code="v", fn=export)
    run.run_stage(5, "train", config={}, inputs=[exp], code="v", fn=train, schema=train_schema)
    (run.root / "instructforge.yaml").write_text("run:\n  name: small\n")
    return run.root


def test_report_has_every_section_with_the_run_facts(small_run):
    html = write_report(small_run).read_text()
    for sid in SECTIONS:
        assert f"<section id='{sid}'>" in html, sid
    for needle in ("filter: decontamination", "generate: kept instances", "export: prompts -&gt; preference pairs",
                   "threshold 0.7", "Write a poem about winter.", "Write a haiku about the sea.", "language fr",
                   "overlaps benchmark bench", "no pair: tie", "truncated candidates", "DPO reward margin",
                   "I am a model", "0.1 → 0.3", "<td>qa</td><td>0.2 → 0.4</td>", "parse_yield", "phases.instructions.tokens_per_second",
                   "blacklisted_word"):
        assert needle in html, needle
    assert html.count("<svg") >= 10  # plots, inlined
    assert "<script" not in html and not re.search(r"""(src|href)=["']?(https?:)?//""", html)


def test_verb_noun_pairs_are_root_verbs_and_direct_objects():
    pairs = verb_noun_pairs(["Write a poem about the sea.", "Classify the review as positive or negative.",
                             "The sentence below is in French.", "Give me three reasons to exercise."])
    assert pairs[:2] == [("write", "poem"), ("classify", "review")]
    assert ("give", "reason") in pairs  # lemmas, as in the paper's figure
    assert all(v != "the" for v, _ in pairs)  # not first words: a sentence without a verb root is left out


def test_similarity_histogram_says_when_scores_are_lower_bounds(tmp_path):
    run = RunDir(tmp_path / "demo")
    rows = [Example(instruction=f"Write a haiku about topic {i}.", task=f"selfinstruct-{i}",
                    meta={"nearest_score": str(0.05 + 0.1 * i)}).model_dump() for i in range(6)]
    for exact_above, lower_bounds in ((0.5, True), (0.0, False)):
        run.run_stage(2, "generate", config={"section": {"nearest_exact_above": exact_above}}, inputs=[],
                      code="v", fn=lambda ctx: ctx.write(rows))
        html = write_report(run.root).read_text()
        assert "generated instructions" in html
        assert ("scores below 0.5 are lower bounds" in html) is lower_bounds


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (make test installs it)")
def test_report_in_headless_chromium_shows_every_section_and_requests_nothing(small_run):
    from playwright.sync_api import sync_playwright

    path = write_report(small_run)
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri(), wait_until="load")
        for sid in SECTIONS:
            section = page.locator(f"section#{sid}")
            assert section.count() == 1 and section.is_visible(), sid
            assert section.locator("h2").inner_text().strip(), sid
        assert page.locator("section svg").count() >= 10
        box = page.locator("section#funnel svg").first.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 50  # the plot renders at a readable size
        browser.close()
    assert requests == [path.as_uri()], requests
