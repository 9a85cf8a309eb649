"""Stage 02 generate: expand the ingested seed tasks with Self-Instruct through the engine.

Resumable: progress lives in the stage's work directory (see `bootstrap`), so a killed run
continues from its last finished round.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from instructforge.runs import StageContext, StageOutput
from instructforge.selfinstruct.bootstrap import Bootstrap
from instructforge.selfinstruct.pool import seed_pool


def run(ctx: StageContext) -> dict[str, Any]:
    # an incremental run hands over only the new ingest rows: the seed pool is every version's
    inputs = [StageOutput(o.path, o.fingerprint, o.manifest) for o in ctx.inputs]
    rows = [row for out in inputs for row in out.table().to_pylist()]
    boot = Bootstrap(ctx, ctx.section, seed_pool(rows), ctx.run.seed)
    boot.resume()
    if ctx.previous is not None:
        boot.continue_from(ctx.previous)
    return boot.run()


def summary(out: StageOutput) -> list[Table]:
    stats = out.stats()
    table = Table(title="Self-Instruct", show_header=False)
    for key in ("accepted_tasks", "target", "rounds", "requests", "failed_requests", "responses",
                "parse_yield", "candidates_per_response", "novelty_rate", "instances_per_task",
                "completion_tokens"):
        table.add_row(key, str(stats.get(key, "")))
    run = stats.get("this_run", {})
    if run:
        table.add_row("tokens/s (this run)", str(run.get("completion_tokens_per_s", "")))
        table.add_row("engine busy (this run)", f"{run.get('engine_busy_fraction', 0):.0%}")
    for reason, n in stats.get("rejected_by_reason", {}).items():
        table.add_row(f"rejected: {reason}", str(n))
    return [table]
