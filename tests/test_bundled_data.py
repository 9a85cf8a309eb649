"""The bundled collection, seeds and benchmark sample: sizes the demo relies on, and the planted overlap."""

from __future__ import annotations

import json
import re

import pytest

from instructforge.ingest.collection import load_collection
from instructforge.ingest.readers import BadInput, bundled_data_dir

# The three benchmark rows that copy a 13-word span from the collection (planted contamination,
# for the decontamination filter's tests).
CONTAMINATED = {"bench-02", "bench-08", "bench-17"}


def _ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def collection():
    return load_collection(bundled_data_dir() / "flan_mini.yaml", BadInput(strict=True))


def test_collection_size_and_variety(collection):
    assert len(collection.tasks) >= 24
    assert len({t.category for t in collection.tasks}) >= 10
    assert all(len(t.rows) >= 12 and len(t.templates) >= 3 for t in collection.tasks)
    assert sum(bool(t.options) for t in collection.tasks) >= 6
    assert any(t.options_field for t in collection.tasks)
    assert all(tpl.fields <= set(r.data) for t in collection.tasks for tpl in t.templates for r in t.rows)


def test_seed_tasks_format():
    lines = (bundled_data_dir() / "seed_tasks.jsonl").read_text(encoding="utf-8").splitlines()
    tasks = [json.loads(line) for line in lines]
    assert len(tasks) >= 60
    assert len({t["id"] for t in tasks}) == len({t["name"] for t in tasks}) == len(tasks)
    assert 10 <= sum(t["is_classification"] for t in tasks) <= len(tasks) - 20
    for t in tasks:
        assert set(t) == {"id", "name", "instruction", "instances", "is_classification"}
        assert 1 <= len(t["instances"]) <= 3
        assert all(set(i) == {"input", "output"} and i["output"] for i in t["instances"])


def test_benchmark_sample_has_exactly_the_planted_overlaps(collection):
    bench = [json.loads(line) for line in
             (bundled_data_dir() / "benchmark_sample.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(bench) == 30
    grams = set().union(*(_ngrams(" ".join(str(v) for v in r.data.values()))
                          for t in collection.tasks for r in t.rows))
    hit = {b["id"] for b in bench if _ngrams(f"{b['question']} {b['answer']}") & grams}
    assert hit == CONTAMINATED
