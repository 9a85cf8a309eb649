"""FLAN-style task collections: a YAML or JSON file a user can write.

    name: my-collection            # optional; default: the file name without suffix
    tasks:
      - name: review_sentiment     # unique within the collection
        category: sentiment        # optional; free text, reported in stats and meta
        options: [positive, negative]   # optional answer options, the same for every row, or
        options_field: choices     #   a raw field holding each row's own list of options
        rows:                      # raw rows inline (mappings of field -> value), or
          - {review: "Great battery life.", label: positive}
        source: reviews.jsonl      #   a file/folder (.jsonl .json .csv .parquet .arrow), relative
                                   #   to the collection file
        templates:                 # >= 1 (input template, target template) pairs over the fields
          - ["Review: {review}\\nIs this review positive or negative?{options}", "{label}"]
          - {input: "{review}\\nHow does the writer feel?{options}", target: "{label}"}

Templates are `str.format` strings: `{field}` is a raw field, `{options}` the options block (see
instructforge.ingest.templates), literal braces are written `{{` and `}}`. Every row is rendered with
`render.templates_per_row` templates chosen by seed, each zero- or few-shot and with or without
options as `render` says; few-shot exemplars come from the task's other rows, never the row itself.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructforge.errors import InputError
from instructforge.ingest.config import RenderConfig
from instructforge.ingest.readers import BadInput, LineDict, RawRow, load_yaml_or_json, read_rows
from instructforge.ingest.templates import OPTION_STYLES, Template, TemplateError, few_shot, fill
from instructforge.records import content_id, example_id

TASK_KEYS = {"name", "category", "description", "options", "options_field", "rows", "source", "templates"}


@dataclass
class Task:
    name: str
    category: str
    templates: list[Template]
    rows: list[RawRow]
    options: list[str] = field(default_factory=list)
    options_field: str | None = None


@dataclass
class Collection:
    name: str
    path: Path
    tasks: list[Task]


def load_collection(path: Path, on_bad: BadInput, only: list[str] | None = None) -> Collection:
    """Parse and check a collection file. Structural mistakes raise; bad raw rows go to `on_bad`."""
    doc = load_yaml_or_json(path)
    file = str(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list) or not doc["tasks"]:
        raise InputError("a collection is a mapping with a non-empty `tasks` list", file=file, field="tasks")
    unknown = set(doc) - {"name", "description", "tasks"}
    if unknown:
        raise InputError("unknown key", file=file, line=_line(doc), field=min(unknown))
    name = doc.get("name") or path.stem
    tasks: list[Task] = []
    for i, spec in enumerate(doc["tasks"]):
        task = _task(spec, f"tasks[{i}]", path, on_bad)
        if any(t.name == task.name for t in tasks):
            raise InputError(f"duplicate task name '{task.name}'", file=file, line=_line(spec),
                             field=f"tasks[{i}].name")
        tasks.append(task)
    if only is not None:
        missing = sorted(set(only) - {t.name for t in tasks})
        if missing:
            raise InputError(f"no task named '{missing[0]}' in this collection", file=file, field="tasks")
        tasks = [t for t in tasks if t.name in only]
    return Collection(str(name), path, tasks)


def _line(node: Any) -> int | None:
    return node.line if isinstance(node, LineDict) else None


def _task(spec: Any, where: str, path: Path, on_bad: BadInput) -> Task:
    file = str(path)

    def err(message: str, key: str) -> InputError:
        return InputError(message, file=file, line=_line(spec), field=f"{where}.{key}")

    if not isinstance(spec, dict):
        raise InputError("a task is a mapping", file=file, field=where)
    if set(spec) - TASK_KEYS:
        raise err("unknown key", min(set(spec) - TASK_KEYS))
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise err("missing or not a string", "name")
    category = spec.get("category", "uncategorized")
    if not isinstance(category, str):
        raise err("expected a string", "category")
    options = spec.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str | int | float) for o in options):
        raise err("expected a list of strings", "options")
    options_field = spec.get("options_field")
    if options_field is not None and (not isinstance(options_field, str) or options):
        raise err("a field name, and only when `options` is not given", "options_field")
    templates = spec.get("templates")
    if not isinstance(templates, list) or not templates:
        raise err("a task needs a non-empty list of templates", "templates")
    parsed = [_template(t, err, f"templates[{j}]") for j, t in enumerate(templates)]
    if ("rows" in spec) == ("source" in spec):
        raise err("give either inline `rows` or a `source` file", "rows")
    if "rows" in spec:
        if not isinstance(spec["rows"], list) or not spec["rows"]:
            raise err("expected a non-empty list of rows", "rows")
        rows = []
        for j, r in enumerate(spec["rows"]):
            row = RawRow(r if isinstance(r, dict) else {}, file, _line(r) or _line(spec), f"{where}.rows[{j}]")
            if not isinstance(r, dict):
                on_bad(row.error(f"a row is a mapping of fields, got {type(r).__name__}"), r, f"collection:{path.name}")
                continue
            rows.append(row)
    else:
        if not isinstance(spec["source"], str):
            raise err("expected a path", "source")
        rows = list(read_rows(path.parent / spec["source"], on_bad))
    return Task(name.strip(), category, parsed, rows, [str(o) for o in options], options_field)


def _template(t: Any, err, where: str) -> Template:
    if isinstance(t, dict) and set(t) == {"input", "target"}:
        pair = (t["input"], t["target"])
    elif isinstance(t, list) and len(t) == 2:
        pair = (t[0], t[1])
    else:
        raise err("a template is [input, target] or {input: ..., target: ...}", where)
    if not all(isinstance(p, str) for p in pair):
        raise err("template input and target must be strings", where)
    try:
        return Template.parse(*pair)
    except TemplateError as e:
        raise err(str(e), f"{where}.{e.field}") from None


def variants(render: RenderConfig, has_options: bool) -> list[tuple[int, str | None]]:
    """Every (shots, options style or None) combination the render config allows for a task."""
    styles: list[str | None] = []
    if has_options and render.options in ("on", "both"):
        styles += list(OPTION_STYLES) if render.options_style == "both" else [render.options_style]
    if not has_options or render.options in ("off", "both"):
        styles.append(None)
    return [(k, s) for k in dict.fromkeys(render.shots) for s in styles]


def render_task(task: Task, collection: Collection, render: RenderConfig, seed: int,
                on_bad: BadInput) -> Iterator[dict[str, Any]]:
    """Example rows (as dicts) for every raw row of the task; rows that cannot render go to on_bad."""
    source = f"collection:{collection.path.name}"
    per_row = min(render.templates_per_row, len(task.templates))
    has_options = bool(task.options) or task.options_field is not None
    choices = variants(render, has_options)
    for i, row in enumerate(task.rows):
        rng = random.Random(content_id(str(seed), collection.name, task.name, str(i)))
        for t_index in sorted(rng.sample(range(len(task.templates)), per_row)):
            for shots, style in choices if render.variants == "all" else [rng.choice(choices)]:
                try:
                    yield _example(task, i, row, t_index, shots, style, rng, render, source, collection.name)
                except InputError as e:
                    on_bad(e, row.data, source)
                    break


def _row_options(task: Task, row: RawRow) -> list[str]:
    if task.options_field is None:
        return task.options
    opts = row.data.get(task.options_field)
    if not isinstance(opts, list) or not opts:
        raise row.error("expected a non-empty list of options", task.options_field)
    return [str(o) for o in opts]


def _example(task: Task, i: int, row: RawRow, t_index: int, shots: int, style: str | None,
             rng: random.Random, render: RenderConfig, source: str, collection: str) -> dict[str, Any]:
    template = task.templates[t_index]

    def one(r: RawRow) -> tuple[str, str]:
        try:
            return fill(template, r.data, _row_options(task, r), style)
        except TemplateError as e:
            raise r.error(f"{e} (template {t_index})", e.field) from None

    prompt, target = one(row)
    if not target:
        raise row.error(f"template {t_index} renders an empty target")
    exemplars = []
    for j in rng.sample(range(len(task.rows) - 1), min(shots, len(task.rows) - 1)):
        try:  # the task's other rows: skip index i; a bad exemplar row is reported on its own turn
            exemplars.append(one(task.rows[j + (j >= i)]))
        except InputError:
            continue
    k = len(exemplars)
    if k:
        prompt = few_shot(exemplars, prompt, render.example_separator, render.answer_separator)
    kind = ("zero-shot" if k == 0 else f"{k}-shot") + {None: "", "flan": "+options", "letters": "+letters"}[style]
    meta = {"collection": collection, "category": task.category, "template_id": f"{task.name}/{t_index}",
            "shots": str(k), "options": style or "none", "row": str(i)}
    if row.line is not None:
        meta["line"] = str(row.line)
    return {"id": example_id(task.name, prompt, "", target), "instruction": prompt, "input": "",
            "output": target, "task": task.name, "source": source, "template": kind, "meta": meta}
