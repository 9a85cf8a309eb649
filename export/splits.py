"""Deterministic train/validation/test assignment from a hash of each example's id.

Plain mode decides each row alone (hash -> [0, 1) -> split), so adding rows never moves an existing
row to another split. Stratified mode ranks each task's rows by hash and cuts the ranking at the
split fractions, so every task gets its share even when it has few rows.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from instructforge.export.config import SplitConfig

SPLITS = ("train", "validation", "test")


def hash_unit(example_id: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) fixed by (seed, id)."""
    digest = hashlib.blake2b(f"{seed}:{example_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split_at(u: float, cfg: SplitConfig) -> str:
    if u < cfg.train:
        return "train"
    if u < cfg.train + cfg.validation:
        return "validation"
    return "test" if cfg.test > 0 else ("validation" if cfg.validation > 0 else "train")


def assign_splits(ids: Sequence[str], tasks: Sequence[str], cfg: SplitConfig, seed: int = 0) -> list[str]:
    """The split of each row, in input order."""
    units = [hash_unit(i, seed) for i in ids]
    if not cfg.stratify_by_task:
        return [_split_at(u, cfg) for u in units]
    by_task: dict[str, list[int]] = defaultdict(list)
    for row, task in enumerate(tasks):
        by_task[task].append(row)
    out = [""] * len(ids)
    for rows in by_task.values():
        rows.sort(key=lambda r: (units[r], ids[r]))
        for rank, row in enumerate(rows):  # the first-ranked row always lands in train
            out[row] = _split_at(rank / len(rows), cfg)
    return out
