"""Stage 01, ingest: every configured source -> canonical `Example` rows, mixed FLAN-style.

Collections are rendered through their templates, SNI task files and tabular sets are mapped to
Example fields, seed tasks are read as-is. Weighted sources are then capped and mixed; seeds never
are. Bad input raises (run.on_error: strict) or lands in rejected/ with file:line:field (record).

The heavy part runs through the run's executor (`executor.each`, in item order, so `local` and
`ray` give the same rows): a local `files:` source is read and converted shard by shard
(shards.py), a collection is rendered a few thousand raw rows of tasks at a time, an SNI folder a
task file at a time. Parsing collection files, Hub datasets, seeds, mixing and writing stay on the
driver: mixing needs every row, so the driver holds the mixed rows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from rich.table import Table

from instructforge.executors import Executor, create_executor
from instructforge.fingerprints import files_digest
from instructforge.ingest.collection import Collection, Task, load_collection, render_task
from instructforge.ingest.config import IngestConfig, RenderConfig
from instructforge.ingest.mixing import Pool, mix
from instructforge.ingest.readers import BadInput, resolve_source
from instructforge.ingest.seeds import read_seeds
from instructforge.ingest.shards import plan_source
from instructforge.ingest.sni import read_task, sni_files
from instructforge.ingest.tabular import read_file_source, read_shard_examples
from instructforge.runs import RunContext, StageContext, StageOutput

RENDER_ROWS = 2000  # raw rows of a collection's tasks per executor item: most tasks have a few dozen

Rows = list[dict[str, Any]]


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, seed = ctx.section, ctx.run.seed
    on_bad = BadInput(strict=ctx.run.on_error == "strict")
    executor = create_executor(ctx.run, ctx.work)
    try:
        pools = _pools(cfg, ctx, executor, on_bad)
    finally:
        executor.close()
    kept, rejected, stats = mix(pools, cfg.mixing, seed)
    seeds = [ex for s in cfg.seeds for ex in read_seeds(resolve_source(s.path, ctx.run.resolve), on_bad)]
    rows = kept + seeds
    ctx.write(rows)
    for group in rejected:
        ctx.reject(group.rows, group.filter)
    ctx.reject(on_bad.rows, "bad_input")
    stats["bad_input"] = len(on_bad.rows)
    stats.update(_counts(rows))
    return stats


def _pools(cfg: IngestConfig, ctx: StageContext, executor: Executor, on_bad: BadInput) -> list[Pool]:
    """The rows of every weighted source, source by source in config order (so in strict mode the
    first bad input raised is the one a plain read meets first)."""
    resolve = ctx.run.resolve

    def each(read: Callable[[Any, BadInput], Iterable[dict[str, Any]]], items: list[Any]) -> Rows:
        return _gather(executor.each(partial(_collect, read, on_bad.strict), items, stage=ctx.stage), on_bad)

    pools: list[Pool] = []
    for c in cfg.collections:
        collection = load_collection(resolve_source(c.path, resolve), on_bad, c.tasks)
        named = Collection(collection.name, collection.path, [])  # what each item needs besides its tasks
        render = partial(_render, named, c.render or cfg.render, ctx.run.seed)
        pools.append(Pool(f"collection:{collection.path.name}", c.weight, each(render, _task_groups(collection.tasks))))
    for s in cfg.sni:
        path = resolve_source(s.path, resolve)
        pools.append(Pool(f"sni:{path.name}", s.weight, each(partial(read_task, s), sni_files(path))))
    for f in cfg.files:
        if f.path is None:  # a Hub or saved dataset: `datasets` loads it here
            pools.append(Pool(f"hf:{f.dataset}", f.weight, list(read_file_source(f, None, on_bad))))
            continue
        path = resolve_source(f.path, resolve)
        read = partial(read_shard_examples, f, path)
        pools.append(Pool(f"file:{path.name}", f.weight, each(read, plan_source(path, f.max_rows))))
    return pools


def _collect(read: Callable[[Any, BadInput], Iterable[dict[str, Any]]], strict: bool, item: Any) -> tuple[Rows, Rows]:
    """One executor item: the rows `read` gives for it and the bad input it met (record mode), or
    the first bad input raised (strict mode)."""
    on_bad = BadInput(strict)
    return list(read(item, on_bad)), on_bad.rows


def _gather(results: Iterator[tuple[Rows, Rows]], on_bad: BadInput) -> Rows:
    """The items' rows in item order; their bad input joins `on_bad`'s in the same order."""
    rows: Rows = []
    for kept, bad in results:
        rows += kept
        on_bad.rows += bad
    return rows


def _render(collection: Collection, render: RenderConfig, seed: int, tasks: list[Task],
            on_bad: BadInput) -> Iterator[dict[str, Any]]:
    for task in tasks:
        yield from render_task(task, collection, render, seed, on_bad)


def _task_groups(tasks: list[Task]) -> list[list[Task]]:
    """Consecutive tasks in groups of about RENDER_ROWS raw rows (a task per item would cost more in
    shipping and scheduling than rendering its rows)."""
    groups: list[list[Task]] = []
    size = 0
    for task in tasks:
        if not groups or size + len(task.rows) > RENDER_ROWS:
            groups.append([])
            size = 0
        groups[-1].append(task)
        size += len(task.rows)
    return groups


def input_fingerprint(section: IngestConfig, run: RunContext) -> dict[str, str]:
    """Content hashes of every local source file (bundled ones too) and local dataset folder, so
    editing a data file reruns ingest. Hub dataset ids are identified by name (in the section)."""
    paths = [resolve_source(s.path, run.resolve) for s in (*section.collections, *section.seeds, *section.sni)]
    paths += [resolve_source(f.path, run.resolve) for f in section.files if f.path is not None]
    paths += [run.resolve(f.dataset) for f in section.files if f.dataset and run.resolve(f.dataset).exists()]
    return files_digest(paths, run.cache_dir)


def _counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    per_task: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        per_task[r["task"]][r["template"]] += 1
    return {"per_task": {t: dict(c) for t, c in sorted(per_task.items())},
            "per_source": dict(Counter(r["source"] for r in rows).most_common()),
            "per_template": dict(Counter(r["template"] for r in rows).most_common()),
            "categories": dict(Counter(r["meta"].get("category", "") for r in rows if "category" in r["meta"])
                               .most_common())}


def summary(out: StageOutput) -> list[Table]:
    """Rows per task (seed tasks folded into one line) and rows per template kind."""
    st = out.stats()
    title = (f"ingest: {st.get('rows_out', 0):,} rows, {st.get('rows_rejected', 0):,} rejected "
             f"({st.get('bad_input', 0):,} bad input)")
    tasks = Table(title=title)
    for col, justify in (("task", "left"), ("template kinds", "right"), ("rows", "right")):
        tasks.add_column(col, justify=justify)
    seed_tasks, seed_rows = 0, 0
    for task, counts in st.get("per_task", {}).items():
        if set(counts) == {"seed"}:
            seed_tasks, seed_rows = seed_tasks + 1, seed_rows + counts["seed"]
            continue
        tasks.add_row(task, str(len(counts)), f"{sum(counts.values()):,}")
    if seed_tasks:
        tasks.add_row(f"seed tasks ({seed_tasks})", "1", f"{seed_rows:,}")
    kinds = Table(title="rows per template kind")
    kinds.add_column("template kind")
    kinds.add_column("rows", justify="right")
    for kind, n in st.get("per_template", {}).items():
        kinds.add_row(kind, f"{n:,}")
    return [tasks, kinds]
