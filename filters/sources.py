"""Text columns of a dataset the user names: a benchmark to decontaminate against, a novelty pool.

A path is read by its suffix (.jsonl/.json lines, .parquet, .csv/.tsv), a folder as every such
file in it, or as a saved Hugging Face dataset (`save_to_disk`); anything else that is not a
path is tried as a hub dataset id (from the local cache: runs are offline).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from instructforge.errors import InputError
from instructforge.filters.config import DatasetSource
from instructforge.ingest.readers import BadInput, read_bytes, read_jsonl, resolve_source, split_suffix

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")


def read_texts(src: DatasetSource, resolve: Callable[[str], Path]) -> dict[str, list[str]]:
    """{column: non-empty string values} for the source's text fields (all string columns by default)."""
    table, where = read_table(src, resolve)
    fields = src.fields or [f.name for f in table.schema if pa.types.is_string(f.type)
                            or pa.types.is_large_string(f.type)]
    if not fields:
        raise InputError("no text columns to read (set `fields`)", file=where)
    out = {}
    for f in fields:
        if f not in table.column_names:
            raise InputError(f"no such column (columns: {', '.join(table.column_names)})", file=where, field=f)
        out[f] = [str(v) for v in table.column(f).to_pylist() if v not in (None, "")]
    return out


def read_table(src: DatasetSource, resolve: Callable[[str], Path]) -> tuple[pa.Table, str]:
    """The whole source as one table (rows aligned across columns), and where it was read from."""
    path = resolve_source(src.path, resolve)  # `bundled:NAME` = a file shipped with the project
    if path.exists():
        return _read_path(path), str(path)
    return _read_hub(src), src.path


def _read_path(path: Path) -> pa.Table:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            from datasets import load_from_disk

            ds = load_from_disk(str(path))
            parts = list(ds.values()) if hasattr(ds, "values") else [ds]
            return pa.concat_tables([p.data.table for p in parts], promote_options="default")
        files = sorted(p for p in path.rglob("*") if split_suffix(p)[0] in SUFFIXES)
        if not files:
            raise InputError(f"no {'/'.join(SUFFIXES)} files in folder", file=str(path))
        return pa.concat_tables([_read_file(f) for f in files], promote_options="permissive")
    return _read_file(path)


def _read_file(path: Path) -> pa.Table:
    """One file, compressed or not (.gz .bz2 .xz .zst); an unreadable one is a named error."""
    suffix = split_suffix(path)[0]
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if suffix not in SUFFIXES:
        raise InputError(f"unsupported file type (use one of {', '.join(SUFFIXES)})", file=str(path))
    data = pa.BufferReader(read_bytes(path, BadInput(strict=True)))
    try:
        if suffix == ".parquet":
            return pq.read_table(data)
        opts = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        return pcsv.read_csv(data, parse_options=opts)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"unreadable {suffix[1:]} file: {str(e).splitlines()[0]}", file=str(path)) from None


def _read_jsonl(path: Path) -> pa.Table:
    """JSON lines through ingest's reader: a bad line, a non-UTF-8 byte or an empty file stops the
    run with the file and line. Non-string values become JSON text."""
    rows = read_jsonl(path, BadInput(strict=True))
    return pa.Table.from_pylist([{k: v if isinstance(v, str) else json.dumps(v) for k, v in row.data.items()}
                                 for row in rows])


def _read_hub(src: DatasetSource) -> pa.Table:
    try:
        from datasets import load_dataset

        ds = load_dataset(src.path, src.subset, split=src.split)
    except Exception as e:  # noqa: BLE001 - any failure here means: not readable offline
        raise InputError(f"not a file or folder, and not loadable as a dataset: {e}", file=src.path) from None
    parts = list(ds.values()) if hasattr(ds, "values") else [ds]
    return pa.concat_tables([p.data.table for p in parts], promote_options="default")
