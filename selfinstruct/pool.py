"""The human seed pool Self-Instruct starts from, read from the ingest stage's rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from instructforge.errors import InputError


@dataclass
class Task:
    """An instruction with its examples; `key` names it in provenance and rejection evidence."""

    key: str
    instruction: str
    instances: list[tuple[str, str]] = field(default_factory=list)  # (input, output)
    is_classification: bool | None = None


def seed_pool(rows: list[dict[str, Any]]) -> list[Task]:
    """Seed tasks (source `seeds:*`, grouped by meta seed_id) or, when there are none, every
    distinct instruction of the ingested rows, in first-seen order."""
    seeds = [r for r in rows if r["source"].startswith("seeds:")]
    tasks: dict[str, Task] = {}
    if seeds:
        for r in seeds:
            meta = dict(r["meta"] or [])
            key = meta.get("seed_id") or r["task"]
            task = tasks.get(key)
            if task is None:
                is_cls = meta.get("is_classification")
                task = tasks[key] = Task(key, r["instruction"], [],
                                         None if is_cls is None else is_cls == "true")
            task.instances.append((r["input"], r["output"]))
    else:
        for r in rows:
            task = tasks.get(r["instruction"])
            if task is None:
                task = tasks[r["instruction"]] = Task(r["task"] or r["id"], r["instruction"])
            task.instances.append((r["input"], r["output"]))
    if not tasks:
        raise InputError("Self-Instruct needs seed tasks, but the ingest stage produced no rows",
                         field="selfinstruct")
    return list(tasks.values())
