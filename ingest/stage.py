"""Stage 01, ingest: every configured source -> canonical `Example` rows, mixed FLAN-style.

Collections are rendered through their templates, SNI task files and tabular sets are mapped to
Example fields, seed tasks are read as-is. Weighted sources are then capped and mixed; seeds never
are. Bad input raises (run.on_error: strict) or lands in rejected/ with file:line:field (record).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from rich.table import Table

from instructforge.fingerprints import files_digest
from instructforge.ingest.collection import load_collection, render_task
from instructforge.ingest.config import IngestConfig
from instructforge.ingest.mixing import Pool, mix
from instructforge.ingest.readers import BadInput, resolve_source
from instructforge.ingest.seeds import read_seeds
from instructforge.ingest.sni import read_sni
from instructforge.ingest.tabular import read_file_source
from instructforge.runs import RunContext, StageContext, StageOutput


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, seed = ctx.section, ctx.run.seed
    on_bad = BadInput(strict=ctx.run.on_error == "strict")
    resolve = ctx.run.resolve
    pools: list[Pool] = []
    for c in cfg.collections:
        collection = load_collection(resolve_source(c.path, resolve), on_bad, c.tasks)
        render = c.render or cfg.render
        rows = [ex for task in collection.tasks for ex in render_task(task, collection, render, seed, on_bad)]
        pools.append(Pool(f"collection:{collection.path.name}", c.weight, rows))
    for s in cfg.sni:
        path = resolve_source(s.path, resolve)
        pools.append(Pool(f"sni:{path.name}", s.weight, list(read_sni(path, s, on_bad))))
    for f in cfg.files:
        path = resolve_source(f.path, resolve) if f.path is not None else None
        name = f"file:{path.name}" if path is not None else f"hf:{f.dataset}"
        pools.append(Pool(name, f.weight, list(read_file_source(f, path, on_bad))))

    kept, rejected, stats = mix(pools, cfg.mixing, seed)
    seeds = [ex for s in cfg.seeds for ex in read_seeds(resolve_source(s.path, resolve), on_bad)]
    rows = kept + seeds
    ctx.write(rows)
    for group in rejected:
        ctx.reject(group.rows, group.filter)
    ctx.reject(on_bad.rows, "bad_input")
    stats["bad_input"] = len(on_bad.rows)
    stats.update(_counts(rows))
    return stats


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
