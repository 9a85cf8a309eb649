"""Super-NaturalInstructions task files (`tasks/taskNNN_name.json`).

Both schemas are read: the final one (`Definition` a list of strings, instances with `id`) and the
older one (`Definition` a string, no instance ids, outputs sometimes a bare string). The instruction
is the definition, optionally followed by k positive examples; one row per instance (its first
output) or one per listed output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from instructforge.errors import InputError
from instructforge.ingest.config import SniSource
from instructforge.ingest.readers import (
    BadInput,
    RawRow,
    clean_row,
    read_json_document,
    string_field,
    text_problem,
)
from instructforge.records import example_id


def sni_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if p.is_file())
        if not files:
            raise InputError("no task .json files in this folder", file=str(path))
        return files
    if not path.exists():
        raise InputError("file not found", file=str(path))
    return [path]


def read_sni(path: Path, cfg: SniSource, on_bad: BadInput) -> Iterator[dict[str, Any]]:
    for file in sni_files(path):
        yield from read_task(cfg, file, on_bad)


def read_task(cfg: SniSource, path: Path, on_bad: BadInput) -> Iterator[dict[str, Any]]:
    """The rows of one task file (one executor item when a folder of them is read)."""
    source = f"sni:{path.name}"
    loaded = read_json_document(path, on_bad, source)
    if loaded is None:
        return
    text, doc = loaded
    top = RawRow(doc if isinstance(doc, dict) else {}, str(path))
    try:
        if not isinstance(doc, dict):
            raise top.error("a task file is a JSON object")
        problem = text_problem({k: v for k, v in doc.items() if k != "Instances"})
        if problem is not None:
            raise top.error(problem[1], problem[0])
        instruction = _definition(top) + _positive_examples(top, cfg.positive_examples)
        instances = doc.get("Instances")
        if not isinstance(instances, list) or not instances:
            raise top.error("expected a non-empty list of instances", "Instances")
    except InputError as e:
        on_bad(e, text, source)
        return
    categories = doc.get("Categories") or []
    meta = {"categories": json.dumps(categories, ensure_ascii=False) if isinstance(categories, list) else
            str(categories)}
    template = f"sni+{cfg.positive_examples}pos" if cfg.positive_examples else "sni"
    task = path.stem
    for i, inst in enumerate(instances[:cfg.max_instances]):
        row = RawRow(inst if isinstance(inst, dict) else {}, str(path), None, f"Instances[{i}]")
        if not clean_row(row, on_bad, inst, source):
            continue
        try:
            if not isinstance(inst, dict):
                raise row.error("expected an object with input and output")
            inp = string_field(row, inst, "input")
            outputs = _outputs(row, inst.get("output"))
        except InputError as e:
            on_bad(e, inst, source)
            continue
        instance_id = str(inst.get("id", f"{task}-{i}"))
        for out in outputs if cfg.outputs == "all" else outputs[:1]:
            yield {"id": example_id(task, instruction, inp, out), "instruction": instruction, "input": inp,
                   "output": out, "task": task, "source": source, "template": template,
                   "meta": {**meta, "instance_id": instance_id}}


def _definition(top: RawRow) -> str:
    d = top.data.get("Definition")
    if isinstance(d, list) and d and all(isinstance(x, str) for x in d):
        d = "\n".join(d)
    if not isinstance(d, str) or not d.strip():
        raise top.error("missing" if d is None else "expected a string or a list of strings", "Definition")
    return d.strip()


def _positive_examples(top: RawRow, k: int) -> str:
    if not k:
        return ""
    examples = top.data.get("Positive Examples")
    if not isinstance(examples, list):
        raise top.error("expected a list of examples (positive_examples is set)", "Positive Examples")
    parts = []
    for j, ex in enumerate(examples[:k]):
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
            raise top.error("expected an object with string input and output", f"Positive Examples[{j}]")
        out = ex.get("output")
        out = out[0] if isinstance(out, list) and out else out
        if not isinstance(out, str):
            raise top.error("expected a string", f"Positive Examples[{j}].output")
        parts.append(f"Positive Example {j + 1} -\nInput: {ex['input'].strip()}\nOutput: {out.strip()}")
    return "\n\n" + "\n\n".join(parts) if parts else ""


def _outputs(row: RawRow, out: Any) -> list[str]:
    if isinstance(out, str):
        out = [out]
    if not isinstance(out, list) or not out or not all(isinstance(o, str) for o in out):
        raise row.error("missing" if out is None else "expected a non-empty list of strings", "output")
    return out
