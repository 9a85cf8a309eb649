"""The Hub files of an export, written as a map over output shards by the run's executor.

The driver plans one `Shard` per file (each config's split cut every `shard_rows` rows, named by
`hub.split_shards`), carrying only the examples or pairs its rows come from. `write_shard` renders
them with the format functions and writes the file atomically, and returns what the card needs
(`Written`: rows, Arrow bytes, the first row), so no formatted table is held on the driver. A
shard's file is a function of its item alone: a Ray task rerun after its worker died writes the
same bytes (`remove_partials` then deletes what the dead worker had half written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from instructforge.export.chat_templates import ChatTemplate
from instructforge.export.config import PromptConfig
from instructforge.export.formats import ROWS_PER_PAIR, format_rows, format_schema
from instructforge.export.hub import split_shards
from instructforge.export.splits import SPLITS
from instructforge.runs import write_table_atomic


@dataclass(frozen=True)
class Shard:
    config: str
    fmt: str
    split: str
    index: int
    path: str  # relative to the hub folder
    units: list[Any]  # the examples (SFT) or (pair, example) (preference) its rows come from
    skip: int  # rows of the first unit that are in the shard before (a KTO pair is two rows)
    rows: int


@dataclass(frozen=True)
class Written:
    config: str
    split: str
    path: str
    rows: int
    nbytes: int  # Arrow bytes of the shard's table
    first: dict[str, Any] | None  # the first row of the split (its first shard only), for the card


@dataclass
class Published:
    """config -> split -> its files, rows, Arrow bytes (summed over shards); config -> sample row."""

    files: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    split_bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, w: Written) -> None:
        """Shards come in plan order, so a config's first sample is from train when it has one."""
        self.files.setdefault(w.config, {}).setdefault(w.split, []).append(w.path)
        counts, size = self.counts.setdefault(w.config, {}), self.split_bytes.setdefault(w.config, {})
        counts[w.split] = counts.get(w.split, 0) + w.rows
        size[w.split] = size.get(w.split, 0) + w.nbytes
        if w.first is not None:
            self.samples.setdefault(w.config, w.first)


def plan_shards(config: str, fmt: str, units: dict[str, list[Any]], shard_rows: int,
                version: int | None = None) -> list[Shard]:
    """The shards of one config, split by split (empty splits have none); `units`: split -> its
    examples or (pair, example), in output order."""
    per = ROWS_PER_PAIR.get(fmt, 1)
    shards = []
    for split in SPLITS:
        rows = len(units[split]) * per
        for i, path in enumerate(split_shards(config, split, rows, shard_rows, version)):
            start, stop = i * shard_rows, min(rows, (i + 1) * shard_rows)
            first, end = start // per, -(-stop // per)
            shards.append(Shard(config, fmt, split, i, path, units[split][first:end], start - first * per,
                                stop - start))
    return shards


def write_shard(hub: Path, prompt: PromptConfig, template: ChatTemplate | None, shard: Shard) -> Written:
    """Render a shard's rows and write its file (the map's function; a worker's template is built once)."""
    rows = format_rows(shard.fmt, shard.units, prompt, template)[shard.skip:shard.skip + shard.rows]
    if len(rows) != shard.rows:
        raise ValueError(f"{shard.path}: {len(rows)} rows rendered, {shard.rows} planned (see ROWS_PER_PAIR)")
    table = pa.Table.from_pylist(rows, schema=format_schema(shard.fmt, prompt))
    write_table_atomic(hub / shard.path, table)
    return Written(shard.config, shard.split, shard.path, table.num_rows, table.nbytes,
                   table.slice(0, 1).to_pylist()[0] if shard.index == 0 else None)


def remove_partials(hub: Path) -> None:
    """Temporary files of workers killed while writing (write_table_atomic's `.<name>.tmp-<pid>`):
    their shards were written again by the retried tasks."""
    for partial in hub.glob("data/*/.*.tmp-*"):
        partial.unlink()
