"""Stage 03 filter: the configured filters, in order, over the ingested and generated rows.

Rows stream through in batches. A filter that needs the whole dataset first (dedup) starts a new
pass: the rows that survived the filters before it are written to a pass folder in the work
directory, the filter's index is built from one read of them, and a second read applies it.
Every removed row goes to rejected/ with the filter's name, the reason and the evidence, so
kept + rejected is exactly the input. stats.json gets the funnel (rows in/out per filter).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from rich.table import Table

from instructforge.filters.base import Filter
from instructforge.filters.config import FilterSpec
from instructforge.runs import ShardWriter, StageContext, StageOutput, iter_batches


def build_filter(spec: FilterSpec, ctx: StageContext) -> Filter:
    """The filter for one config entry (modules load lazily: langid, datasets... only when used)."""
    if spec.type == "exact_dedup":
        from instructforge.filters.exact_dedup import ExactDedup
        return ExactDedup(spec)
    if spec.type == "minhash_dedup":
        from instructforge.filters.minhash_dedup import MinHashDedup
        return MinHashDedup(spec)
    if spec.type == "heuristics":
        from instructforge.filters.heuristics import Heuristics
        return Heuristics(spec)
    if spec.type == "decontamination":
        from instructforge.filters.decontamination import Decontamination
        return Decontamination(spec, ctx.run.resolve)
    if spec.type == "novelty":
        from instructforge.filters.novelty_filter import NoveltyFilter
        return NoveltyFilter(spec, ctx.run.resolve)
    if spec.type == "judge":
        from instructforge.filters.judge import Judge
        return Judge(spec, lambda: ctx.engine)
    raise ValueError(f"unknown filter type {spec.type!r}")


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section
    filters = [build_filter(spec, ctx) for spec in cfg.steps]
    return run_filters(ctx, filters, cfg.batch_size)


def run_filters(ctx: StageContext, filters: list[Filter], batch_size: int) -> dict[str, Any]:
    """Apply `filters` in order to every input row; write kept rows, reject the others."""
    def inputs() -> Iterator[pa.RecordBatch]:
        for inp in ctx.inputs:
            for batch in inp.batches(batch_size):
                yield _as_schema(batch, ctx.schema)

    source: Callable[[], Iterator[pa.RecordBatch]] = inputs
    funnel: list[dict[str, Any]] = []
    passes = _passes(filters)
    rows_in = 0
    for i, group in enumerate(passes):
        final = i == len(passes) - 1
        if group and group[0].needs_fit:
            group[0].fit(source())
        folder = ctx.work / f"pass-{i}"
        writer = ctx.out if final else ShardWriter(folder, ctx.schema)
        counts = np.zeros((len(group), 2), dtype=np.int64)
        for batch in source():
            if i == 0:
                rows_in += batch.num_rows
            for j, f in enumerate(group):
                counts[j, 0] += batch.num_rows
                batch = _apply(ctx, f, batch, int(counts[j, 0]) - batch.num_rows)
                counts[j, 1] += batch.num_rows
            writer.write(batch)
        funnel += [{"filter": f.name, "rows_in": int(c[0]), "rows_out": int(c[1])}
                   for f, c in zip(group, counts, strict=True)]
        if i > 0:
            shutil.rmtree(ctx.work / f"pass-{i - 1}", ignore_errors=True)
        if not final:
            writer.close()
            source = lambda folder=folder: iter_batches(folder, batch_size)
    ctx.stats["rows_in"] = rows_in
    ctx.stats["funnel"] = funnel
    details = {f.name: f.stats() for f in filters if f.stats()}
    if details:
        ctx.stats["filters"] = details
    matches: dict[str, int] = {}
    for d in details.values():
        for bench, n in d.get("matches_per_benchmark", {}).items():
            matches[bench] = matches.get(bench, 0) + n
    if matches:
        ctx.stats["decontamination"] = matches
    return {}


def _passes(filters: list[Filter]) -> list[list[Filter]]:
    """Split the chain before every filter that needs to see all rows first."""
    passes: list[list[Filter]] = [[]]
    for f in filters:
        if f.needs_fit and passes[-1]:
            passes.append([])
        passes[-1].append(f)
    return passes


def _apply(ctx: StageContext, f: Filter, batch: pa.RecordBatch, start: int) -> pa.RecordBatch:
    batch, removed = f.apply(batch, start)
    if not removed:
        return batch
    rows = sorted(removed)
    ctx.reject([{**row, "reason": removed[r][0]}
                for r, row in zip(rows, batch.take(pa.array(rows)).to_pylist(), strict=True)],
               f.name, evidence=[removed[r][1] for r in rows])
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[rows] = False
    return batch.filter(pa.array(keep))


def _as_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([batch.column(n).cast(f.type) for n, f in zip(schema.names, schema)],
                                      schema=schema)


def summary(out: StageOutput) -> list[Table]:
    """The funnel, printed by the CLI after the stage."""
    stats = out.stats()
    table = Table(title=f"filter funnel ({stats.get('rows_in', 0):,} rows in)")
    for col in ("filter", "in", "out", "removed"):
        table.add_column(col, justify="left" if col == "filter" else "right")
    for step in stats.get("funnel", []):
        table.add_row(step["filter"], f"{step['rows_in']:,}", f"{step['rows_out']:,}",
                      f"{step['rows_in'] - step['rows_out']:,}")
    for bench, n in stats.get("decontamination", {}).items():
        table.add_row(f"  matches: {bench}", "", "", f"{n:,}")
    return [table]
