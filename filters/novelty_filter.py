"""Novelty as a standalone filter: the Self-Instruct ROUGE-L rule, with the generator's own index.

Rows whose text (default: the instruction) has ROUGE-L F above the threshold against the
reference pool are removed; with `within`, each kept row joins the pool, so later rows are also
compared with earlier kept ones (in input order), exactly as the generator grows its pool.
That makes it a driver block: `keys` (the text) is a map, `fit` walks the rows in `_pos` order on
the driver. The saved index is the kept rows' texts, so an incremental run checks new rows against
every row kept before, in the same order as one run over everything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from instructforge.filters.base import POS, DropMap, GlobalFilter, Keys, fmt
from instructforge.filters.config import NoveltyConfig
from instructforge.filters.novelty import NoveltyIndex
from instructforge.filters.sources import read_texts


class NoveltyFilter(GlobalFilter):
    def __init__(self, cfg: NoveltyConfig, resolve: Callable[[str], Path]):
        self.cfg, self.name = cfg, cfg.label
        self.index = NoveltyIndex(threshold=cfg.threshold)
        self.reference_size = 0
        for src in cfg.reference:
            for column, texts in read_texts(src, resolve).items():
                for i, text in enumerate(texts):
                    self.index.add(text, f"{src.label}:{column}:{i}")
                    self.reference_size += 1
        self._pool = pa.table({"key": pa.array([], pa.string()), "text": pa.array([], pa.string())})
        self.drop = DropMap.empty(self.name)

    def keys(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({POS: batch.column(POS), "id": batch.column("id"),
                                           "text": batch.column(self.cfg.field)})

    def fit(self, keys: Keys, previous: Path | None) -> None:
        if previous:
            self._pool = pq.read_table(previous / "pool.parquet")
            for key, text in zip(self._pool.column("key").to_pylist(), self._pool.column("text").to_pylist(),
                                 strict=True):
                self.index.add(text, key)
        table = keys.table(["id", "text"])
        added: list[tuple[str, str]] = []
        dropped, evidence = [], []
        reason = f"{self.cfg.field} too similar to an existing one (ROUGE-L)"
        for pos, row_id, text in zip(table.column(POS).to_pylist(), table.column("id").to_pylist(),
                                     table.column("text").to_pylist(), strict=True):
            text, key = text or "", f"row:{row_id}"
            d = self.index.add_if_novel(text, key) if self.cfg.within else self.index.check(text)
            if not d.novel:
                dropped.append(pos)
                evidence.append({"nearest": d.nearest_key or "", "rouge_l": fmt(d.score),
                                 "threshold": fmt(self.cfg.threshold)})
            elif self.cfg.within:
                added.append((key, text))
        self.drop = DropMap(self.name, np.array(dropped, dtype=np.int64), [reason] * len(dropped), evidence)
        self._pool = pa.concat_tables([self._pool, pa.table({
            "key": pa.array([k for k, _ in added], pa.string()), "text": pa.array([t for _, t in added], pa.string())})])

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(self._pool, folder / "pool.parquet")

    def stats(self) -> dict[str, Any]:
        return {"reference_size": self.reference_size, "pool_size": self._pool.num_rows}
