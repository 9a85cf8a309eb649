"""A local `files:` source as shards: pieces the run's executor reads and converts one per item.

Every row of a shard is still located file-wide (line numbers, `row {i}`), and the shards are in
reading order, so their rows and bad rows, taken in order, are those of reading the source whole:

- a folder: its files in the order `read_rows` reads them, each planned as a file below; an
  unsupported file is a shard that only reports it, at its place in that order;
- an uncompressed JSONL file over SHARD_BYTES: byte spans that start at line starts, the lines
  before each counted here (one `bytes.count` pass over the file);
- an uncompressed Parquet file of several row groups: runs of whole row groups of about SHARD_BYTES;
- anything else is one shard: a quoted CSV cell may hold newlines (only parsing from the top finds
  where a record starts), a JSON array is one document, a compressed file one stream, and an Arrow
  file is read whole by pyarrow anyway.

Planning runs on the driver, which alone sees READ_FROM (incremental runs): a file to "skip" has
no shard, and a grown file is planned from the span given (only its new part, split if large).
A source with `max_rows` is one shard: where its first n rows end is only known by reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from instructforge.ingest.readers import (
    READ_FROM,
    READERS,
    BadInput,
    RawRow,
    check_supported,
    folder_files,
    read_jsonl,
    read_parquet_or_arrow,
    read_rows,
    split_suffix,
    unsupported_in_folder,
)

SHARD_BYTES = 64 << 20  # about this many bytes of a file per shard
SCAN_BYTES = 1 << 22  # read at a time when looking for line starts


@dataclass(frozen=True)
class Shard:
    path: Path
    span: tuple[int, int, int] | None = None  # JSONL or CSV: (first byte, lines before it, end byte)
    part: bool = False  # the span is one of several of its file
    rows: tuple[int, int] | None = None  # Parquet: rows [first, end)
    unsupported: bool = False  # a folder's file no reader reads: reported, not read
    source: bool = False  # a whole folder as `read_rows` reads it


def plan_source(path: Path, max_rows: int | None = None) -> list[Shard]:
    """The shards of the `files:` source at `path`, in reading order."""
    if path.is_dir():
        if max_rows is not None:
            return [Shard(path, source=True)]
        return [s for f, supported in folder_files(path)
                for s in (plan_file(f) if supported else [Shard(f, unsupported=True)])]
    check_supported(path)
    span = READ_FROM.get().get(str(path))  # looked up here: workers do not see the driver's READ_FROM
    if span == "skip":
        return []
    return [Shard(path, span)] if max_rows is not None else plan_file(path, span)


def plan_file(path: Path, span: tuple[int, int, int] | None = None) -> list[Shard]:
    """One file's shards; `span`: only that part of it (a grown JSONL or CSV file)."""
    kind, compression = split_suffix(path)
    if compression or not path.is_file():  # not found: its one shard reports it
        return [Shard(path, span)]
    if kind == ".jsonl":
        spans = line_spans(path, *(span or (0, 0, path.stat().st_size)), SHARD_BYTES)
        if len(spans) > 1 and (span or not _blank(path)):  # a blank file is read whole: "empty file"
            return [Shard(path, s, part=True) for s in spans]
    elif kind == ".parquet":
        ranges = row_group_ranges(path, SHARD_BYTES)
        if len(ranges) > 1:
            return [Shard(path, rows=r) for r in ranges]
    return [Shard(path, span)]


def line_spans(path: Path, start: int, lines_before: int, end: int, size: int) -> list[tuple[int, int, int]]:
    """Bytes [start, end) of a file as spans of about `size` bytes, each from a line start:
    (first byte, lines before it in the file, end byte)."""
    cuts = [(start, lines_before)]
    with path.open("rb") as f:
        f.seek(start)
        pos, lines, look_from = start, lines_before, start + size  # a cut is after the first newline from here
        while look_from < end and (chunk := f.read(min(SCAN_BYTES, end - pos))):
            counted = 0  # newlines of the chunk before this index are in `lines`
            while (at := look_from - pos) < len(chunk):
                newline = chunk.find(b"\n", at)
                if newline < 0:
                    look_from = pos + len(chunk)
                    break
                lines += chunk.count(b"\n", counted, newline + 1)
                counted = newline + 1
                if pos + counted < end:
                    cuts.append((pos + counted, lines))
                look_from = pos + counted + size
            lines += chunk.count(b"\n", counted)
            pos += len(chunk)
    ends = [c for c, _ in cuts[1:]] + [end]
    return [(first, before, stop) for (first, before), stop in zip(cuts, ends, strict=True)]


def _blank(path: Path) -> bool:
    """Only whitespace (and byte-order marks) in the file: stops at the first chunk with text."""
    with path.open("rb") as f:
        while chunk := f.read(SCAN_BYTES):
            if chunk.replace(b"\xef\xbb\xbf", b"").strip():
                return False
    return True


def row_group_ranges(path: Path, size: int) -> list[tuple[int, int]]:
    """Row ranges [first, end) of runs of whole row groups of about `size` bytes (uncompressed);
    none for a file whose footer cannot be read (read whole, its reader reports it)."""
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowException, OSError):
        return []
    ranges, first, end, run_bytes = [], 0, 0, 0
    for g in range(meta.num_row_groups):
        end += meta.row_group(g).num_rows
        run_bytes += meta.row_group(g).total_byte_size
        if run_bytes >= size and end > first:
            ranges.append((first, end))
            first, run_bytes = end, 0
    if end > first:
        ranges.append((first, end))
    return ranges


def read_shard(shard: Shard, on_bad: BadInput) -> Iterator[RawRow]:
    """The rows of one shard, bad ones reported to `on_bad` located file-wide."""
    if shard.unsupported:
        on_bad(unsupported_in_folder(shard.path))
    elif shard.source:
        yield from read_rows(shard.path, on_bad)
    elif shard.rows is not None:
        yield from read_parquet_or_arrow(shard.path, on_bad, shard.rows)
    elif shard.part:
        yield from read_jsonl(shard.path, on_bad, shard.span, part=True)
    else:
        reader = READERS[split_suffix(shard.path)[0]]
        yield from reader(shard.path, on_bad, shard.span) if shard.span else reader(shard.path, on_bad)
