"""Rows/s for rendering templated examples: our FLAN-style renderer against promptsource-style Jinja2.

Both render the bundled collection's tasks, with raw rows replicated up to the target count, one
template per row chosen by seed, the options block, and the content-hash id of every example.

    .venv/bin/python bench/ingest.py [--small]     # 100K examples (10K with --small)
"""

from __future__ import annotations

import argparse
import random
import re
import time
from dataclasses import replace

import jinja2
from rich.console import Console
from rich.table import Table

from instructforge.ingest.collection import load_collection, render_task
from instructforge.ingest.config import RenderConfig
from instructforge.ingest.readers import BadInput, RawRow, bundled_data_dir
from instructforge.ingest.templates import options_block
from instructforge.records import content_id, example_id


def scaled_collection(target: int):
    """The bundled collection with each task's rows replicated (numbered) to about `target` rows."""
    c = load_collection(bundled_data_dir() / "flan_mini.yaml", BadInput(strict=True))
    per_task = -(-target // len(c.tasks))
    tasks = []
    for t in c.tasks:
        rows = [RawRow(dict(t.rows[i % len(t.rows)].data), r.file, r.line)
                for i, r in enumerate(t.rows[j % len(t.rows)] for j in range(per_task))]
        for i, r in enumerate(rows):  # make every replicated row distinct text
            key = next(k for k, v in r.data.items() if isinstance(v, str) and k in t.templates[0].fields)
            r.data[key] = f"{r.data[key]} (#{i})"
        tasks.append(replace(t, rows=rows))
    return replace(c, tasks=tasks)


def ours(c, render: RenderConfig) -> int:
    on_bad = BadInput(strict=True)
    return sum(1 for t in c.tasks for _ in render_task(t, c, render, 0, on_bad))


def jinja_reference(c) -> int:
    """promptsource-style: each template pair compiled as Jinja2, rendered per row with the same choices."""
    env = jinja2.Environment(autoescape=False)
    to_jinja = lambda s: re.sub(r"\{(\w+)\}", r"{{ \1 }}", s)
    n = 0
    for t in c.tasks:
        compiled = [(env.from_string(to_jinja(tp.input)), env.from_string(to_jinja(tp.target))) for tp in t.templates]
        for i, row in enumerate(t.rows):
            rng = random.Random(content_id("0", c.name, t.name, str(i)))
            inp, tgt = compiled[rng.randrange(len(compiled))]
            opts = row.data.get(t.options_field) if t.options_field else t.options
            values = {**row.data, "options": options_block([str(o) for o in opts or []], "flan")}
            prompt, target = inp.render(values).rstrip(), tgt.render(values).strip()
            example_id(t.name, prompt, "", target)
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="10K examples instead of 100K")
    args = ap.parse_args()
    target = 10_000 if args.small else 100_000
    c = scaled_collection(target)
    table = Table(title=f"ingest rendering, {sum(len(t.rows) for t in c.tasks):,} raw rows")
    for col in ("method", "examples", "seconds", "rows/s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    runs = [("ours: zero-shot + options", lambda: ours(c, RenderConfig())),
            ("reference: Jinja2 (promptsource-style), same work", lambda: jinja_reference(c)),
            ("ours: FLAN mix (0/2-shot, options on/off, 2 styles)",
             lambda: ours(c, RenderConfig(shots=[0, 2], options="both", options_style="both")))]
    for name, fn in runs:
        start = time.perf_counter()
        n = fn()
        secs = time.perf_counter() - start
        table.add_row(name, f"{n:,}", f"{secs:.2f}", f"{n / secs:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
