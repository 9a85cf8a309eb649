"""Stage 03 filter: the configured filters, in order, over the ingested and generated rows.

The stage reads its inputs once in order, numbering rows with `_pos`, and hands blocks to the
run's executor (instructforge/executors): consecutive map filters run together as one map; a
filter that needs every row first (dedup, novelty: a `GlobalFilter`) starts a new pass, where a
map extracts its keys, `fit` builds its drop-map on the driver, and the map applies it. Every
removed row goes to rejected/ with the filter's name, the reason and the evidence, so kept +
rejected is exactly the input. Global filters save their index under index/<filter name>/, and an
incremental run loads the previous run's, so rows kept before count as earlier than new rows.
stats.json gets the funnel (rows in/out per filter) and each filter's figures.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.table import Table

from instructforge.executors import Executor, create_executor
from instructforge.filters.base import POS, Filter, GlobalFilter, merge_counts
from instructforge.filters.config import DatasetSource, FiltersConfig, FilterSpec
from instructforge.fingerprints import files_digest
from instructforge.ingest.readers import resolve_source
from instructforge.runs import RunContext, StageContext, StageOutput

REMOVED = "_removed"  # struct column set on removed rows: filter, reason, evidence (JSON)
_REMOVED_TYPE = pa.struct([("filter", pa.string()), ("reason", pa.string()), ("evidence", pa.string())])
INDEX = "index"


def build_filter(spec: FilterSpec, ctx: StageContext) -> Filter:
    """The filter for one config entry (modules load lazily: langid, datasets... only when used)."""
    if spec.type == "exact_dedup":
        from instructforge.filters.exact_dedup import ExactDedup
        return ExactDedup(spec)
    if spec.type == "minhash_dedup":
        from instructforge.filters.minhash_dedup import MinHashDedup
        return MinHashDedup(spec, ctx.work / "minhash-signatures" / spec.label if ctx.run.executor == "local" else None)
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
    executor = create_executor(ctx.run, ctx.work)
    try:
        return run_filters(ctx, filters, cfg.batch_size, executor)
    finally:
        executor.close()


def run_filters(ctx: StageContext, filters: list[Filter], batch_size: int, executor: Executor) -> dict[str, Any]:
    """Apply `filters` in order to every input row; write kept rows, reject the others."""
    data = executor.read(ctx.inputs, ctx.schema, batch_size)
    funnel: list[dict[str, Any]] = []
    tallies: dict[str, dict[str, Any]] = {f.name: {} for f in filters}
    passes = _passes(filters)
    rows_in = 0
    for i, group in enumerate(passes):
        head = group[0] if group else None
        if isinstance(head, GlobalFilter):
            head.fit(executor.keys(data, head.keys, stage=ctx.stage), _previous_index(ctx, head))
            head.save(ctx.work / INDEX / head.name)
        blocks = [f.drop if isinstance(f, GlobalFilter) else f for f in group]  # ship the drop-map, not the index
        data = executor.map(data, partial(mark, blocks), stage=ctx.stage, on_driver=any(f.on_driver for f in group))
        removed: Counter[str] = Counter()
        final = i == len(passes) - 1
        data, seen = executor.split(data, REMOVED, partial(_reject, ctx, filters, removed, tallies),
                                    on_kept=ctx.write if final else None)
        rows_in = rows_in if i else seen
        for f in group:
            funnel.append({"filter": f.name, "rows_in": seen, "rows_out": seen - removed[f.name]})
            seen -= removed[f.name]
    ctx.stats["rows_in"] = rows_in
    ctx.stats["funnel"] = funnel
    details = {f.name: d for f in filters if (d := merge_counts(f.stats(), tallies[f.name]))}
    if details:
        ctx.stats["filters"] = details
    matches: dict[str, int] = {}
    for d in details.values():
        merge_counts(matches, d.get("matches_per_benchmark", {}))
    if matches:
        ctx.stats["decontamination"] = matches
    return {}


def _passes(filters: list[Filter]) -> list[list[Filter]]:
    """Split the chain before every filter that needs to see all rows first."""
    passes: list[list[Filter]] = [[]]
    for f in filters:
        if isinstance(f, GlobalFilter) and passes[-1]:
            passes.append([])
        passes[-1].append(f)
    return passes


def _previous_index(ctx: StageContext, f: GlobalFilter) -> Path | None:
    """The index this filter saved in the previous finished run of this stage (incremental runs)."""
    if ctx.previous is None:
        return None
    folder = ctx.previous.path / INDEX / f.name
    return folder if folder.exists() else None


def mark(group: list[Filter], batch: pa.RecordBatch) -> pa.RecordBatch:
    """The map block of one pass: each filter of `group` in turn over the rows still kept; removed
    rows get the REMOVED column (as the filter that removed them returned them)."""
    parts: list[pa.RecordBatch] = []
    for f in group:
        if not batch.num_rows:
            break
        batch, removed = f.apply(batch)
        if not removed:
            continue
        rows = sorted(removed)
        status = pa.array([{"filter": f.name, "reason": removed[r][0], "evidence": json.dumps(removed[r][1])}
                           for r in rows], _REMOVED_TYPE)
        parts.append(batch.take(pa.array(rows)).append_column(REMOVED, status))
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[rows] = False
        batch = batch.filter(pa.array(keep))
    parts.insert(0, batch.append_column(REMOVED, pa.nulls(batch.num_rows, _REMOVED_TYPE)))
    if len(parts) == 1:
        return parts[0]
    table = pa.Table.from_batches(parts).combine_chunks()
    return table.take(np.argsort(np.asarray(table.column(POS)), kind="stable")).to_batches()[0]


def _reject(ctx: StageContext, filters: list[Filter], counts: Counter[str], tallies: dict[str, dict[str, Any]],
            batch: pa.RecordBatch) -> None:
    """Removed rows of one batch to rejected/, per filter, with reason and evidence; tallied."""
    by_filter: dict[str, list[tuple[dict[str, Any], dict[str, str]]]] = {}
    for row in batch.drop_columns([POS]).to_pylist():
        status = row.pop(REMOVED)
        row["reason"] = status["reason"]
        by_filter.setdefault(status["filter"], []).append((row, json.loads(status["evidence"])))
    for f in filters:
        if f.name in by_filter:
            rows, evidence = zip(*by_filter[f.name], strict=True)
            ctx.reject(list(rows), f.name, evidence=list(evidence))
            counts[f.name] += len(rows)
            merge_counts(tallies[f.name], f.tally(list(evidence)))


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


def input_fingerprint(section: FiltersConfig, run: RunContext) -> dict[str, str]:
    """Content of every dataset file a step reads (decontamination benchmarks, novelty references):
    editing one reruns this stage. Hub ids are identified by name (in the section)."""
    sources = [src for step in section.steps for value in dict(step).values()
               for src in (value if isinstance(value, list) else [value]) if isinstance(src, DatasetSource)]
    return files_digest([resolve_source(s.path, run.resolve) for s in sources], run.cache_dir)
