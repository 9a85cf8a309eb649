"""Rankings: truncated candidates never chosen, k-way rankings exported, and the human ranking
round-trip (JSONL, CSV, Label Studio) back into preference pairs with the annotator kept."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from instructforge.errors import InputError
from instructforge.export.annotation import (
    annotate_export,
    annotate_import,
    human_candidates,
    load_rankings,
    sampled_prompts,
)
from instructforge.export.config import PreferenceConfig, PromptConfig
from instructforge.export.formats import preference_rows
from instructforge.export.preference import Candidate, binarize, drop_truncated, make_pair, ranking
from instructforge.records import Example, PreferencePair, rejected_schema

PROMPT = PromptConfig()
EXAMPLES = [Example(instruction=f"Say something kind about {w}.", output=f"{w} is lovely.", task="kind")
            for w in ("cats", "rain", "tea")]
ANSWERS = ["A warm, kind answer.", "A curt answer.", "No."]


def cands(scores: list[float | None], reasons: list[str] | None = None) -> list[Candidate]:
    reasons = reasons or ["stop"] * len(scores)
    return [Candidate(ANSWERS[i], 0.7, r, score=s) for i, (s, r) in enumerate(zip(scores, reasons, strict=True))]


def test_truncated_candidates_are_dropped_and_counted_never_chosen():
    batch = [cands([5.0, 1.0, 3.0], ["length", "stop", "stop"]), cands([2.0, 2.0, 1.0])]
    assert drop_truncated(batch) == 1
    b = binarize(batch[0], "lowest", random.Random(0))
    assert b.chosen.text == "No." and b.rejected.text == "A curt answer."  # the cut-off best is gone


def test_ranking_keeps_every_answer_best_first_with_shared_ranks_for_ties():
    assert [(r["content"], r["rank"]) for r in ranking(cands([2.0, 5.0, 2.0]))] == [
        ("A curt answer.", 1), ("A warm, kind answer.", 2), ("No.", 2)]


def test_ranked_format_row_carries_the_k_way_ranking():
    ex = EXAMPLES[0]
    cs = cands([4.0, 1.0, 2.0])
    pair = make_pair(ex, "p", binarize(cs, "lowest", random.Random(0)), cs, judge="rule:x", model="m",
                     cfg=PreferenceConfig(k=3, judge="length"), extra_meta={"split": "train"})
    (row,) = preference_rows("ranked", pair, ex, PROMPT)
    assert [r["rank"] for r in row["responses"]] == [1, 2, 3] and row["responses"][0]["content"] == ANSWERS[0]
    assert row["prompt"] == [{"role": "user", "content": ex.instruction}]


def make_run(root: Path) -> Path:
    """A run whose export stage sampled 3 answers for two prompts (one pair, one tie rejected)."""
    stage = root / "04-export"
    (stage / "pairs").mkdir(parents=True)
    (stage / "rejected").mkdir()
    (stage / "stats.json").write_text(json.dumps({"prompt_format": PROMPT.model_dump()}))
    cs = cands([3.0, 2.0, 1.0])
    pair = make_pair(EXAMPLES[0], EXAMPLES[0].instruction, binarize(cs, "lowest", random.Random(0)), cs,
                     judge="rule:length", model="m", cfg=PreferenceConfig(k=3, judge="length"),
                     extra_meta={"split": "train"})
    pq.write_table(pa.Table.from_pylist([pair.model_dump()], schema=PreferencePair.arrow_schema()),
                   stage / "pairs" / "part-00000.parquet")
    tie = {**EXAMPLES[1].model_dump(), "stage": "export", "filter": "preference", "reason": "tie",
           "evidence": {"candidates": json.dumps([c.record() for c in cands([1.0, 1.0, 1.0])])}}
    pq.write_table(pa.Table.from_pylist([tie], schema=rejected_schema(Example.arrow_schema())),
                   stage / "rejected" / "part-00000.parquet")
    return root


def test_sampled_prompts_come_from_pairs_and_ties(tmp_path):
    items = sampled_prompts(make_run(tmp_path))
    assert {s.example_id for s in items} == {EXAMPLES[0].id, EXAMPLES[1].id}
    assert all(s.candidates == ANSWERS for s in items)


def test_jsonl_round_trip_gives_pairs_with_the_annotator_and_time(tmp_path):
    run = make_run(tmp_path)
    (path,), n = annotate_export(run, "jsonl")
    assert n == 2
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0].update(ranks={"c1": 3, "c2": 1, "c3": 2}, annotator="ann-1", annotated_at="2026-12-01T10:00:00Z")
    rows[1].update(ranks={"c1": 1, "c2": 1, "c3": 3}, annotator="ann-2")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, rankings = annotate_import(run, path)
    assert out == run / "annotations" / "to-rank.rankings.jsonl" and len(load_rankings(out)) == 2

    scored = human_candidates(rankings, EXAMPLES, str(out))
    by_id = {ex.id: (ex, cs, meta) for ex, cs, meta in scored}
    _, cs, meta = by_id[rows[0]["example_id"]]
    b = binarize(cs, "lowest", random.Random(0))
    texts = dict(zip(["c1", "c2", "c3"], ANSWERS, strict=True))
    assert (b.chosen.text, b.rejected.text) == (texts["c2"], texts["c1"])
    who = json.loads(meta["annotators"])[0]
    assert (who["annotator"], who["annotated_at"]) == ("ann-1", "2026-12-01T10:00:00Z") and who["imported_at"]
    tie_ranks = [r["rank"] for r in ranking(by_id[rows[1]["example_id"]][1])]
    assert tie_ranks == [1, 1, 3]  # a tie written as equal ranks stays a tie


def test_csv_round_trip_and_bad_rows_name_the_row(tmp_path):
    run = make_run(tmp_path)
    (path,), _ = annotate_export(run, "csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 6 and rows[0]["response"] == ANSWERS[0]

    def write(rank_of, annotator="ann"):
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            for i, r in enumerate(rows):
                w.writerow({**r, "rank": rank_of(i), "annotator": annotator})

    write(lambda i: str(i % 3 + 1))
    _, rankings = annotate_import(run, path)
    assert sorted(r.annotator for r in rankings) == ["ann", "ann"]

    write(lambda i: "" if i == 4 else str(i % 3 + 1))
    with pytest.raises(InputError, match="missing rank for candidate c2") as e:
        annotate_import(run, path)
    assert e.value.file == str(path) and e.value.line == 5  # the prompt's first row (header is line 1)
    write(lambda i: "1=2" if i == 0 else str(i % 3 + 1))
    with pytest.raises(InputError, match="'1=2' of candidate c1 is not a whole number"):
        annotate_import(run, path)
    write(lambda i: str(i % 3 + 1), annotator="")
    with pytest.raises(InputError, match="missing annotator"):
        annotate_import(run, path)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(example_id="nope"), "unknown example id 'nope'"),
    (lambda r: r["ranks"].update(c9=1), "unknown candidate id"),
    (lambda r: r["ranks"].update(c1=2.5), "not a whole number"),
    (lambda r: r["ranks"].update(c1=7), "above the number of candidates"),
])
def test_bad_jsonl_rows_are_named(tmp_path, edit, message):
    run = make_run(tmp_path)
    (path,), _ = annotate_export(run, "jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.update(ranks={"c1": 1, "c2": 2, "c3": 3}, annotator="a")
    edit(rows[1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=message) as e:
        annotate_import(run, path)
    assert (e.value.file, e.value.line) == (str(path), 2)


def test_one_annotator_ranking_a_prompt_twice_is_an_error(tmp_path):
    run = make_run(tmp_path)
    (path,), _ = annotate_export(run, "jsonl")
    row = json.loads(path.read_text().splitlines()[0])
    row.update(ranks={"c1": 1, "c2": 2, "c3": 3}, annotator="a")
    path.write_text((json.dumps(row) + "\n") * 2)
    with pytest.raises(InputError, match="ranked prompt .* twice") as e:
        annotate_import(run, path)
    assert e.value.line == 2


def test_label_studio_tasks_and_its_export_read_back(tmp_path):
    run = make_run(tmp_path)
    (tasks_path, config), _ = annotate_export(run, "label-studio")
    assert "<Ranker" in config.read_text()
    tasks = json.loads(tasks_path.read_text())
    assert [i["id"] for i in tasks[0]["data"]["items"]] == ["c1", "c2", "c3"]
    # what Label Studio exports after annotation (List + Ranker: ids best first under the tag name)
    for t in tasks:
        t["annotations"] = [{"completed_by": {"id": 7, "email": "ann@example.org"},
                             "created_at": "2026-12-01T09:00:00Z", "was_cancelled": False,
                             "result": [{"type": "ranker", "from_name": "rank", "to_name": "responses",
                                         "value": {"ranker": {"rank": ["c3", "c1", "c2"]}}}]},
                            {"completed_by": 8, "was_cancelled": True, "result": []}]
    exported = tmp_path / "ls-export.json"
    exported.write_text(json.dumps(tasks))
    _, rankings = annotate_import(run, exported)
    assert len(rankings) == 2 and rankings[0].annotator == "ann@example.org"
    assert {c["id"]: c["rank"] for c in rankings[0].candidates} == {"c3": 1, "c1": 2, "c2": 3}
    assert rankings[0].annotated_at == "2026-12-01T09:00:00Z"

    tasks[0]["annotations"][0]["result"][0]["value"]["ranker"] = {"good": ["c1"], "bad": ["c2", "c3"]}
    exported.write_text(json.dumps(tasks))
    with pytest.raises(InputError, match="buckets are not supported"):
        annotate_import(run, exported)


def test_cli_verbs_write_and_read_back_and_a_bad_file_exits_3_naming_the_row(tmp_path):
    import subprocess
    import sys

    run = make_run(tmp_path)
    cli = [sys.executable, "-m", "instructforge.cli"]
    done = subprocess.run([*cli, "annotate", "export", str(run), "--format", "csv"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    path = run / "annotations" / "to-rank.csv"
    rows = list(csv.DictReader(path.open()))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({**r, "rank": "first" if i == 2 else str(i % 3 + 1), "annotator": "ann"})
    done = subprocess.run([*cli, "annotate", "import", str(run), str(path)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 3 and f"{path}:2" in done.stderr and "'first' of candidate c3" in done.stderr
    assert "Traceback" not in done.stderr


# -- the export stage, with the bundled model as the engine ------------------------------------------

PROMPTS = ["Write a long paragraph describing the sea.", "Write a long paragraph describing a mountain.",
           "Name one color.", "Name one fruit."]


def run_export(root: Path, preference: dict, engine=None) -> Path:
    from instructforge.config import parse_config
    from instructforge.export import stage as export_stage
    from instructforge.runs import RunDir

    examples = [Example(instruction=p, output="A fine answer.", task="mixed") for p in PROMPTS]
    section = {"formats": ["messages"], "splits": {"train": 1.0, "validation": 0.0, "test": 0.0},
               "preference": {"formats": ["preference", "ranked"], **preference}}
    cfg = parse_config({"run": {"name": "t", "root": str(root)}, "export": section})
    run = RunDir(root / "t")
    ingest, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="test",
                              fn=lambda ctx: ctx.write([e.model_dump() for e in examples]))
    run.run_stage(4, "export", config=section, inputs=[ingest], code="test", fn=export_stage.run,
                  section=cfg.export, run=cfg.context(), engine_factory=lambda: engine)
    return root / "t"


@pytest.mark.slow
def test_cut_off_answers_are_never_chosen_and_people_rankings_round_trip_into_pairs(tmp_path, hf_engine):
    from instructforge.export.formats import PREFERENCE_CONFIGS

    # 16 tokens (32 on the retry): paragraphs are cut off (the length judge would pick them), short answers finish
    run = run_export(tmp_path, {"k": 3, "temperatures": [0.7, 1.0], "max_tokens": 16, "judge": "length"},
                     hf_engine)
    stage = run / "04-export"
    pref = json.loads((stage / "stats.json").read_text())["preference"]
    assert pref["truncated_retried"] >= pref["truncated"] >= 3 and pref["prompts"] == len(PROMPTS)
    pairs = [json.loads(r["provenance"]) for f in (stage / "hub" / "data" / "preference").glob("*.parquet")
             for r in pq.read_table(f).to_pylist()]
    assert all(c["finish_reason"] != "length" for p in pairs for c in p["candidates"])

    # people rank what was sampled: this annotator prefers the shortest answer (equal texts tie)
    (path,), _ = annotate_export(run, "jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        lengths = sorted({len(c["text"]) for c in r["candidates"]})
        r.update(ranks={c["id"]: 1 + sum(x < len(c["text"]) for x in lengths) for c in r["candidates"]},
                 annotator="ann-1", annotated_at="2026-12-02T08:00:00Z")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rankings_file, _ = annotate_import(run, path)
    rankable = sum(len({c["text"] for c in r["candidates"]}) >= 2 for r in rows)
    assert rankable >= 1

    run_export(tmp_path, {"judge": "human", "rankings": str(rankings_file)})  # rerun: no engine needed
    assert json.loads((stage / "stats.json").read_text())["preference"]["judge"].startswith("human:")
    hub = stage / "hub" / "data"
    prefs = [r for f in (hub / "preference").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert len(prefs) == rankable
    for r in prefs:
        assert len(r["chosen"][0]["content"]) < len(r["rejected"][0]["content"])
        who = json.loads(r["provenance"])["annotators"][0]
        assert (who["annotator"], who["annotated_at"]) == ("ann-1", "2026-12-02T08:00:00Z")
    ranked = [r for f in (hub / PREFERENCE_CONFIGS["ranked"]).glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert len(ranked) == rankable and all(r["responses"][0]["rank"] == 1 for r in ranked)
