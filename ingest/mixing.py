"""FLAN-style mixing: per-task caps (examples-proportional rates with a cap) and source weights.

Which rows a cap or quota keeps is decided by a seeded hash of each row's id, so the choice is
deterministic, independent of input order, and stable when unrelated rows are added.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from instructforge.ingest.config import MixingConfig
from instructforge.records import content_id


@dataclass
class Pool:
    """The rows of one weighted source (a collection, an SNI path, a file entry)."""

    name: str
    weight: float
    rows: list[dict[str, Any]]


@dataclass
class Rejected:
    filter: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # each carries its own reason and evidence


def allocate(total: int, weights: list[float], capacities: list[int]) -> list[int]:
    """Split `total` into integer shares proportional to `weights`, none above its capacity.

    Shares a capacity cannot take are handed on to the others (water-filling); rounding uses
    largest remainders, so the shares add up to min(total, sum(capacities)) exactly.
    """
    quotas = [0] * len(weights)
    active = [i for i, (w, c) in enumerate(zip(weights, capacities, strict=True)) if w > 0 and c > 0]
    remaining = min(total, sum(capacities[i] for i in active))
    while remaining > 0 and active:
        wsum = sum(weights[i] for i in active)
        shares = {i: remaining * weights[i] / wsum for i in active}
        full = [i for i in active if quotas[i] + shares[i] >= capacities[i]]
        if full:
            for i in full:
                remaining -= capacities[i] - quotas[i]
                quotas[i] = capacities[i]
            active = [i for i in active if i not in full]
            continue
        floors = {i: int(shares[i]) for i in active}
        for i in active:
            quotas[i] += floors[i]
        by_remainder = sorted(active, key=lambda i: (floors[i] - shares[i], i))
        for i in by_remainder[:remaining - sum(floors.values())]:
            quotas[i] += 1
        remaining = 0
    return quotas


def _pick(rows: list[dict[str, Any]], n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, left out): the n rows with the smallest seeded hash of their id, in input order."""
    if n >= len(rows):
        return rows, []
    ranked = sorted(range(len(rows)), key=lambda i: (content_id(str(seed), rows[i]["id"]), i))
    keep = set(ranked[:n])
    return [r for i, r in enumerate(rows) if i in keep], [r for i, r in enumerate(rows) if i not in keep]


def _by_task(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    tasks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        tasks[r["task"]].append(r)
    return tasks


def mix(pools: list[Pool], cfg: MixingConfig, seed: int) -> tuple[list[dict[str, Any]], list[Rejected], dict]:
    """Apply the task cap, then the mixture total. Returns (kept rows, rejected groups, stats)."""
    cap, total = cfg.max_per_task, cfg.total
    capped = Rejected("task_cap")
    tasks_per_pool: list[dict[str, list[dict[str, Any]]]] = []
    for pool in pools:
        tasks = _by_task(pool.rows)
        if cap is not None:
            for name, rows in tasks.items():
                tasks[name], out = _pick(rows, cap, seed)
                capped.rows += [{**r, "reason": f"task '{name}' has {len(rows)} examples, over "
                                 f"max_per_task={cap}", "evidence": {"task_rows": str(len(rows)), "cap": str(cap)}}
                                for r in out]
        tasks_per_pool.append(tasks)

    mixed = Rejected("mixture")
    sizes = [sum(len(v) for v in tasks.values()) for tasks in tasks_per_pool]
    quotas = allocate(total, [p.weight for p in pools], sizes) if total is not None else sizes
    kept: list[dict[str, Any]] = []
    stats = {"sources": {}}
    for pool, tasks, size, quota in zip(pools, tasks_per_pool, sizes, quotas, strict=True):
        names = list(tasks)
        task_quotas = allocate(quota, [float(len(tasks[t])) for t in names], [len(tasks[t]) for t in names])
        for name, q in zip(names, task_quotas, strict=True):
            rows, out = _pick(tasks[name], q, seed)
            kept += rows
            mixed.rows += [{**r, "reason": f"mixture total={total}: source '{pool.name}' (weight {pool.weight:g}) "
                            f"gets {quota} of its {size} rows, task '{name}' {q}",
                            "evidence": {"source_quota": str(quota), "task_quota": str(q)}} for r in out]
        stats["sources"][pool.name] = {"weight": pool.weight, "rows": len(pool.rows), "after_cap": size,
                                       "kept": quota}
    funnel = []
    rows_in = sum(len(p.rows) for p in pools)
    if cap is not None:
        funnel.append({"filter": "task_cap", "rows_in": rows_in, "rows_out": rows_in - len(capped.rows)})
    if total is not None:
        funnel.append({"filter": "mixture", "rows_in": sum(sizes), "rows_out": len(kept)})
    if funnel:
        stats["funnel"] = funnel
    if total is not None and len(kept) < total:
        stats["mixture_short"] = f"asked for {total} rows, the sources have {len(kept)} after caps"
    return kept, [capped, mixed], stats
