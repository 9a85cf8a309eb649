"""Self-Instruct seed tasks: JSONL, one task a line, the format the generate stage takes its pool from.

    {"id": "seed_task_0", "name": "...", "instruction": "...", "is_classification": false,
     "instances": [{"input": "...", "output": "..."}]}

Each instance becomes one Example with task=name, source="seeds:<file name>", template="seed" and
meta seed_id / is_classification, so the seed pool can be regrouped by task downstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from instructforge.errors import InputError
from instructforge.ingest.readers import BadInput, RawRow, read_jsonl, string_field
from instructforge.records import example_id


def read_seeds(path: Path, on_bad: BadInput) -> Iterator[dict[str, Any]]:
    source = f"seeds:{path.name}"
    seen: dict[str, int | None] = {}
    for row in read_jsonl(path, on_bad):
        try:
            examples = _seed_examples(row, source)
            seed_id = examples[0]["meta"]["seed_id"]
            if seed_id in seen:
                raise row.error(f"duplicate seed id '{seed_id}' (first on line {seen[seed_id]})", "id")
            seen[seed_id] = row.line
        except InputError as e:
            on_bad(e, row.data, source)
            continue
        yield from examples


def _seed_examples(row: RawRow, source: str) -> list[dict[str, Any]]:
    d = row.data
    seed_id = string_field(row, d, "id")
    name = string_field(row, d, "name")
    instruction = string_field(row, d, "instruction")
    if not instruction.strip():
        raise row.error("empty", "instruction")
    is_cls = d.get("is_classification", False)
    if not isinstance(is_cls, bool):
        raise row.error(f"expected true or false, got {type(is_cls).__name__}", "is_classification")
    instances = d.get("instances")
    if not isinstance(instances, list) or not instances:
        raise row.error("expected a non-empty list of {input, output}", "instances")
    out = []
    for j, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise row.error("expected an object with input and output", f"instances[{j}]")
        inp = string_field(row, inst, "input", required=False, where=f"instances[{j}].")
        output = string_field(row, inst, "output", where=f"instances[{j}].")
        meta = {"seed_id": seed_id, "is_classification": "true" if is_cls else "false", "line": str(row.line)}
        out.append({"id": example_id(name, instruction, inp, output), "instruction": instruction, "input": inp,
                    "output": output, "task": name, "source": source, "template": "seed", "meta": meta})
    return out
