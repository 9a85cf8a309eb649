"""Novelty as a standalone filter: the Self-Instruct ROUGE-L rule, with the generator's own index.

Rows whose text (default: the instruction) has ROUGE-L F above the threshold against the
reference pool are removed; with `within`, each kept row joins the pool, so later rows are also
compared with earlier kept ones (in input order), exactly as the generator grows its pool.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from instructforge.filters.base import Filter, Rejections, fmt
from instructforge.filters.config import NoveltyConfig
from instructforge.filters.novelty import NoveltyIndex
from instructforge.filters.sources import read_texts


class NoveltyFilter(Filter):
    def __init__(self, cfg: NoveltyConfig, resolve: Callable[[str], Path]):
        self.cfg, self.name = cfg, cfg.label
        self.index = NoveltyIndex(threshold=cfg.threshold)
        self.reference_size = 0
        for src in cfg.reference:
            for column, texts in read_texts(src, resolve).items():
                for i, text in enumerate(texts):
                    self.index.add(text, f"{src.label}:{column}:{i}")
                    self.reference_size += 1

    def apply(self, batch: pa.RecordBatch, start: int) -> tuple[pa.RecordBatch, Rejections]:
        out: Rejections = {}
        texts = batch.column(self.cfg.field).to_pylist()
        ids = batch.column("id").to_pylist()
        for i, (text, row_id) in enumerate(zip(texts, ids, strict=True)):
            text = text or ""
            d = self.index.add_if_novel(text, f"row:{row_id}") if self.cfg.within else self.index.check(text)
            if not d.novel:
                out[i] = (f"{self.cfg.field} too similar to an existing one (ROUGE-L)", {
                    "nearest": d.nearest_key or "", "rouge_l": fmt(d.score), "threshold": fmt(self.cfg.threshold)})
        return batch, out

    def stats(self) -> dict[str, Any]:
        return {"reference_size": self.reference_size}
