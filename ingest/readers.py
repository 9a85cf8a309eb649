"""Reading raw rows from local files, with every bad row located by file, line (or row) and field.

Readers yield `RawRow`s. A bad row or file becomes an `InputError`, handed to `BadInput`: in strict
mode it is raised (the CLI prints it as one line), in record mode it is kept as a rejected row with
the reason, so nothing is ever skipped silently.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

import instructforge.ingest
from instructforge.errors import InputError
from instructforge.records import Example

BUNDLED_PREFIX = "bundled:"
TABULAR_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow")
RAW_PREVIEW_CHARS = 2000  # how much of a bad row is kept in rejected/ as evidence


def bundled_data_dir() -> Path:
    return Path(instructforge.ingest.__file__).parent / "data"


def resolve_source(path: str, resolve) -> Path:
    """`bundled:NAME` is a file shipped in ingest/data; anything else is resolved by the config."""
    if path.startswith(BUNDLED_PREFIX):
        return bundled_data_dir() / path[len(BUNDLED_PREFIX):]
    return Path(resolve(path))


@dataclass
class RawRow:
    data: dict[str, Any]
    file: str
    line: int | None = None  # 1-based line in the file, when the format has lines
    field: str = ""  # position inside the file when there is no line, e.g. "[12]" or "tasks[3].rows[4]"

    def error(self, message: str, field: str | None = None) -> InputError:
        path = ".".join(p for p in (self.field, field) if p) or None
        return InputError(message, file=self.file, line=self.line, field=path)


class BadInput:
    """Where bad input goes: raised at once (strict) or collected as rejected rows (record)."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.rows: list[dict[str, Any]] = []

    def __call__(self, error: InputError, raw: Any = "", source: str = "") -> None:
        if self.strict:
            raise error
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        row = Example(instruction="", input=text[:RAW_PREVIEW_CHARS], source=source,
                      meta=error.location()).model_dump()
        self.rows.append({**row, "reason": str(error), "evidence": error.location()})


def read_text(path: Path, on_bad: BadInput, source: str = "") -> str | None:
    """Whole file as UTF-8 text, or None (reported) when it is missing, not UTF-8 or empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise InputError("is a folder, expected a file", file=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        on_bad(InputError(f"not UTF-8 text (byte 0x{data[e.start]:02x})", file=str(path), line=line),
               source=source)
        return None
    if not text.strip():
        on_bad(InputError("empty file", file=str(path)), source=source)
        return None
    return text.removeprefix("\ufeff")


def read_json_document(path: Path, on_bad: BadInput, source: str = "") -> tuple[str, Any] | None:
    """(text, parsed JSON) of a whole file, or None (reported) when it cannot be read or parsed."""
    text = read_text(path, on_bad, source)
    if text is None:
        return None
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as e:
        on_bad(InputError(f"malformed JSON: {e.msg} (column {e.colno})", file=str(path), line=e.lineno),
               source=source)
        return None


def read_jsonl(path: Path, on_bad: BadInput) -> Iterator[RawRow]:
    """One JSON object per line; blank lines are allowed, anything else bad is reported by line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    if not data.strip():
        on_bad(InputError("empty file", file=str(path)))
        return
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            on_bad(InputError(f"not UTF-8 text (byte 0x{raw[e.start]:02x})", file=str(path), line=n),
                   raw.decode("utf-8", "replace"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            on_bad(InputError(f"malformed JSON: {e.msg} (column {e.colno})", file=str(path), line=n), line)
            continue
        if not isinstance(obj, dict):
            on_bad(InputError(f"expected a JSON object, got {type(obj).__name__}", file=str(path), line=n),
                   line)
            continue
        yield RawRow(obj, str(path), n)


def read_json(path: Path, on_bad: BadInput) -> Iterator[RawRow]:
    """A JSON array of objects (or an object whose `data`/`rows` key holds one), located by index."""
    doc = read_json_document(path, on_bad)
    if doc is None:
        return
    obj = doc[1]
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("data", "rows", "examples") if isinstance(obj.get(k), list)), obj)
    if not isinstance(obj, list):
        on_bad(InputError("expected a JSON array of objects", file=str(path)))
        return
    for i, item in enumerate(obj):
        row = RawRow(item if isinstance(item, dict) else {}, str(path), None, f"[{i}]")
        if not isinstance(item, dict):
            on_bad(row.error(f"expected an object, got {type(item).__name__}"), item)
            continue
        yield row


def read_csv(path: Path, on_bad: BadInput) -> Iterator[RawRow]:
    text = read_text(path, on_bad)
    if text is None:
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for rec in reader:
            if None in rec:  # more cells than header columns
                on_bad(InputError(f"{len(rec[None])} cells more than the header has", file=str(path),
                                  line=reader.line_num), rec)
                continue
            yield RawRow({k: v for k, v in rec.items() if v is not None}, str(path), reader.line_num)
    except csv.Error as e:
        on_bad(InputError(f"malformed CSV: {e}", file=str(path), line=reader.line_num))


def read_parquet_or_arrow(path: Path, on_bad: BadInput) -> Iterator[RawRow]:
    """Parquet, Arrow IPC file or Arrow stream (what `datasets` writes); rows are located by index."""
    if not path.exists():
        raise InputError("file not found", file=str(path))
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        else:
            try:
                table = pa.ipc.open_file(path).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_stream(path).read_all()
    except (pa.ArrowException, OSError) as e:
        on_bad(InputError(f"unreadable {path.suffix[1:]} file: {e}", file=str(path)))
        return
    if table.num_rows == 0:
        on_bad(InputError("empty file", file=str(path)))
        return
    for i, rec in enumerate(table.to_pylist()):
        yield RawRow(rec, str(path), None, f"row {i}")


READERS = {".jsonl": read_jsonl, ".json": read_json, ".csv": read_csv,
           ".parquet": read_parquet_or_arrow, ".arrow": read_parquet_or_arrow}


def read_rows(path: Path, on_bad: BadInput) -> Iterator[RawRow]:
    """Rows of one file, or of every supported file in a folder (sorted, so the order is stable)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in TABULAR_SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"no {', '.join(TABULAR_SUFFIXES)} files in this folder", file=str(path))
        for f in files:
            yield from READERS[f.suffix](f, on_bad)
        return
    reader = READERS.get(path.suffix)
    if reader is None:
        raise InputError(f"unsupported file type {path.suffix or '(none)'}; expected one of "
                         f"{', '.join(TABULAR_SUFFIXES)}", file=str(path))
    yield from reader(path, on_bad)


class LineDict(dict):
    """A YAML mapping that remembers the line it started on, so errors can point at it."""

    line: int | None = None


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    d = LineDict(loader.construct_mapping(node, deep=True))
    d.line = node.start_mark.line + 1
    return d


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_or_json(path: Path) -> Any:
    """A user-written YAML or JSON document; YAML mappings carry their line numbers (`LineDict`)."""
    strict = BadInput(strict=True)
    if path.suffix == ".json":
        return read_json_document(path, strict)[1]
    text = read_text(path, strict)
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(e, 'problem', e)}", file=str(path),
                         line=mark.line + 1 if mark else None) from None


def string_field(row: RawRow, data: dict[str, Any], key: str, *, required: bool = True,
                 where: str = "") -> str:
    """A field that must be a string (missing optional fields and nulls read as "")."""
    value = data.get(key)
    if value is None:
        if required:
            raise row.error("missing", f"{where}{key}")
        return ""
    if not isinstance(value, str):
        raise row.error(f"expected a string, got {type(value).__name__}", f"{where}{key}")
    return value
