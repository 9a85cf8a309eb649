"""The filter seam: results depend on `_pos`, never on batching, and incremental == whole.

Filtering the first half of a corpus and then the second half with the first half's saved
indexes (ctx.previous) must keep and remove exactly the rows one run over the whole does, with
the same reasons and evidence, for every filter type.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_filters import ex, make_input

from instructforge.config import parse_config
from instructforge.filters import stage as filter_stage
from instructforge.filters.base import merge_counts
from instructforge.runs import RunDir, StageOutput, read_table

BENCH = ["What is the boiling point of water at sea level measured in degrees Celsius on a normal day",
         "Name the largest planet in our solar system and describe its famous great red spot storm"]
TOPICS = [
    "Write a detailed travel guide for a weekend in Lisbon including food museums and long walks",
    "Explain how vaccines train the immune system to recognise a virus before an infection starts",
    "Summarise the plot of a famous novel in five sentences for a student who has not read it",
    "Describe the water cycle for a class of ten year old children using a simple everyday example",
    "List the main causes of the first world war and explain how they were connected to each other",
    "Give three tips for a beginner who wants to start running regularly without getting injured",
    "Compare electric cars and petrol cars in terms of running cost maintenance and pollution",
    "Write a short poem about the sea at night with the moon shining over the quiet harbour",
]


def corpus() -> list[dict]:
    """Rows with exact and near duplicates (chains too), bad rows and benchmark quotes, shuffled so
    that duplicates and their originals fall in different halves."""
    rows = []
    for i, t in enumerate(TOPICS):
        words = t.split()
        rows += [ex(t, f"Answer {i}."), ex(t.upper() + "!", f"Copy {i}."),  # exact duplicate
                 ex(t + " please", f"Near {i}."),  # near duplicate
                 ex(" ".join(words[:-3] + ["in", "plain", "words"]), f"Drift {i}."),  # chain link
                 ex(" ".join(words[:-6] + ["for", "my", "friends", "at", "the", "club"]), f"Far {i}.")]
    rows += [ex("Hi", "Hello."), ex("Say something nice to a friend today.", "   "),
             ex(f"Answer this question: {BENCH[0]}", "100 degrees."), ex("Tell me about space.", BENCH[1] + ".")]
    random.Random(3).shuffle(rows)
    return rows


def steps(tmp_path: Path) -> dict[str, list[dict]]:
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": q}) + "\n" for q in BENCH), encoding="utf-8")
    return {
        "exact_dedup": [{"type": "exact_dedup"}],
        "minhash_dedup": [{"type": "minhash_dedup", "threshold": 0.5, "num_perm": 64}],
        "novelty": [{"type": "novelty", "threshold": 0.6}],
        "heuristics": [{"type": "heuristics", "languages": None}],
        "decontamination": [{"type": "decontamination", "benchmarks": [{"name": "b", "path": str(bench)}]}],
    }


def run(folder: Path, rows: list[dict], filters: list[dict], previous: StageOutput | None = None,
        batch_size: int = 7) -> StageOutput:
    run_dir = RunDir(folder)
    cfg = parse_config({"filters": {"steps": filters, "batch_size": batch_size}}, base_dir=folder)
    inp = make_input(run_dir, rows)
    out, _ = run_dir.run_stage(3, "filter", config=cfg.filters.model_dump(mode="json"), inputs=[inp], code="t",
                               fn=filter_stage.run, section=cfg.filters, run=cfg.context(), previous=previous)
    return out


def decisions(*outs: StageOutput) -> tuple[list[str], list[tuple]]:
    kept = [r["id"] for o in outs for r in o.table().to_pylist()]
    gone = [(r["id"], r["filter"], r["reason"], sorted(dict(r["evidence"]).items()))
            for o in outs for r in read_table(o.rejected).to_pylist()]
    return sorted(kept), sorted(gone)


@pytest.mark.parametrize("name", ["exact_dedup", "minhash_dedup", "novelty", "heuristics", "decontamination",
                                  "all"])
def test_incremental_halves_equal_one_run(tmp_path, name):
    all_steps = steps(tmp_path)
    chain = [s for group in all_steps.values() for s in group] if name == "all" else all_steps[name]
    rows = corpus()
    half = len(rows) // 2
    whole = run(tmp_path / "whole", rows, chain)
    first = run(tmp_path / "first", rows[:half], chain)
    second = run(tmp_path / "second", rows[half:], chain, previous=first)
    kept, gone = decisions(whole)
    assert decisions(first, second) == (kept, gone)
    removed_by = {g[1] for g in gone}
    assert removed_by == {s["type"] for s in chain}  # every filter removed something: the test can fail
    first_ids = {r["id"] for r in rows[:half]}
    second_gone = {g[0] for g in gone} - first_ids
    if name in ("exact_dedup", "minhash_dedup", "novelty"):  # some new row was caught by an old one
        assert any(dict(g[3]).get("kept_id", dict(g[3]).get("nearest", "")[4:]) in first_ids
                   for g in gone if g[0] in second_gone)
        assert (second.path / "index" / chain[0].get("name", chain[0]["type"])).is_dir()
    assert len(kept) + len(gone) == len(rows)


def test_batching_does_not_change_results(tmp_path):
    chain = [s for group in steps(tmp_path).values() for s in group]
    rows = corpus()
    small = run(tmp_path / "small", rows, chain, batch_size=3)
    big = run(tmp_path / "big", rows, chain, batch_size=1000)
    assert decisions(small) == decisions(big)
    assert [r["id"] for r in small.table().to_pylist()] == [r["id"] for r in big.table().to_pylist()]
    assert small.stats()["funnel"] == big.stats()["funnel"] and small.stats()["filters"] == big.stats()["filters"]


def test_merge_counts_sums_nested_histograms():
    total = merge_counts({}, {"a": 1, "h": {"x": 2}})
    merge_counts(total, {"a": 2, "h": {"x": 1, "y": 5}})
    assert total == {"a": 3, "h": {"x": 3, "y": 5}}


@pytest.mark.parametrize("keep", ["first", "lowest_id", "longest_output"])
def test_identical_rows_keep_the_earliest_position(tmp_path, keep):
    """Rows with the same id (the same content) tie under every keep rule: `_pos` decides."""
    row, other = ex("Name three primary colours.", "Red, yellow and blue."), ex("List two prime numbers.")
    rows = [other, row, dict(row), dict(row)]
    for name in ("exact_dedup", "minhash_dedup"):
        out = run(tmp_path / f"{name}-{keep}", rows, [{"type": name, "keep": keep}], batch_size=1)
        assert [r["id"] for r in out.table().to_pylist()] == [other["id"], row["id"]]
        gone = read_table(out.rejected).to_pylist()
        assert len(gone) == 2 and all(dict(r["evidence"])["kept_id"] == row["id"] for r in gone)


@pytest.mark.parametrize("keep", ["first", "longest_output"])
def test_minhash_spilled_signatures_equal_key_table_ones(tmp_path, keep):
    """Signatures spilled per batch (local executor) give the same drops, evidence and saved index as
    signatures in the key table (Ray), also on top of a previous run's index and in reordered keep order."""
    import pyarrow as pa

    from instructforge.executors.local import fit_in_process
    from instructforge.filters.base import with_positions
    from instructforge.filters.config import MinHashDedupConfig
    from instructforge.filters.minhash_dedup import MinHashDedup
    from instructforge.records import Example

    rows = corpus()
    batch = with_positions(pa.RecordBatch.from_pylist(rows, schema=Example.arrow_schema()), 0)
    first, second = batch.slice(0, 20), batch.slice(20)
    cfg = MinHashDedupConfig(threshold=0.5, num_perm=64, keep=keep)
    results = []
    for spill in (None, tmp_path / "spill"):
        index = tmp_path / f"index-{spill is not None}"
        f = MinHashDedup(cfg, spill)
        fit_in_process(f, [first.slice(i, 7) for i in range(0, 20, 7)])
        f.save(index / "a")
        f = MinHashDedup(cfg, spill)
        fit_in_process(f, [second.slice(i, 7) for i in range(0, second.num_rows, 7)], previous=index / "a")
        drop = (f.drop.positions.tolist(), f.drop.reasons, f.drop.evidence)
        f.save(index / "b")
        results.append((drop, *((index / "b" / n).read_bytes() for n in ("bands.npy", "signatures.npy"))))
        assert spill is None or not spill.exists()  # spilled files go once the index is saved
    assert results[0][0][0] and results[0] == results[1]
