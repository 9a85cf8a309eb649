"""Reading raw rows from local files, with every bad row located by file, line (or row) and field.

Readers yield `RawRow`s. A bad row or file becomes an `InputError`, handed to `BadInput`: in strict
mode it is raised (the CLI prints it as one line), in record mode it is kept as a rejected row with
the reason, so nothing is ever skipped silently.

What counts as bad text, decided once for every source and field (ids are content hashes, so text
is never edited silently):
- a UTF-8 byte-order mark (at the start of a file, or of any JSONL line) is dropped; Windows line
  endings are read as `\n`;
- a lone surrogate (`"\ud800"` in JSON or YAML) cannot be stored as UTF-8, and NUL or another
  control character (C0 other than tab, newline, form feed and carriage return, or DEL) is almost
  always a broken export: either rejects its row naming the field and the character position;
- `.gz`, `.bz2`, `.xz` and `.zst` files (what `datasets` reads) load like the plain file; a corrupt
  archive is bad input naming the file;
- JSON or YAML nested deeper than Python can parse, and integers longer than Python converts, are
  named errors, not tracebacks.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
import zlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zstandard

import instructforge.ingest
from instructforge.errors import InputError
from instructforge.records import Example

BUNDLED_PREFIX = "bundled:"
TABULAR_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow")
RAW_PREVIEW_CHARS = 2000  # how much of a bad row is kept in rejected/ as evidence
CSV_FIELD_LIMIT = 1 << 30  # the csv module's default (128 KiB) rejects legitimate long cells
BAD_CHAR = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\ud800-\udfff]")
# JSON text that may decode to a BAD_CHAR: an escape of one, or a raw DEL (raw C0 controls are
# already malformed JSON, and text decoded from UTF-8 holds no surrogates). Text without a match
# needs no per-value check, which keeps the check off the common path.
JSON_SUSPECT = re.compile(r"\\u(?:00[01][0-9a-fA-F]|007[fF]|[dD][89a-fA-F])|\x7f")
# Set by incremental ingest (instructforge.incremental), per file path: "skip" for a file unchanged
# since the last version (all its rows were seen), or the span of a JSONL or CSV file to read (see
# read_jsonl): from the old end of one that only grew, up to its size when the run was planned.
READ_FROM: ContextVar[Mapping[str, Any]] = ContextVar("READ_FROM", default=MappingProxyType({}))


def _unzstd(data: bytes) -> bytes:
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as r:
        return r.read()


DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress, ".zst": _unzstd}
ARCHIVE_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


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
        location = {k: storable(v) for k, v in error.location().items()}
        row = Example(instruction="", input=storable(_preview(raw)), source=source, meta=location).model_dump()
        self.rows.append({**row, "reason": storable(str(error)), "evidence": location})


def storable(text: str) -> str:
    """Text that can be written as UTF-8: lone surrogates become `\\udXXX` escapes (evidence only)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _preview(raw: Any) -> str:
    """The start of a bad row as JSON, built from at most a few hundred values: a row nested thousands
    deep or expanding YAML aliases a billion-fold is shown in part, never walked whole."""
    if isinstance(raw, str):
        return raw[:RAW_PREVIEW_CHARS]
    budget = RAW_PREVIEW_CHARS // 4

    def prune(v: Any, depth: int) -> Any:
        nonlocal budget
        budget -= 1
        if budget < 0 or depth > 32:
            return "..."
        if isinstance(v, dict | list | tuple):
            items = v.items() if isinstance(v, dict) else enumerate(v)
            out = {}
            for k, x in items:
                if budget < 0:
                    out["..."] = "..."
                    break
                out[str(k)] = prune(x, depth + 1)
            return out if isinstance(v, dict) else list(out.values())
        return v

    return json.dumps(prune(raw, 0), ensure_ascii=False, default=str)[:RAW_PREVIEW_CHARS]


def text_problem(value: Any) -> tuple[str, str] | None:
    """(field path, why) for the first string (key or value) that is not storable text, else None.

    Iterative, so a deeply nested row cannot exhaust the stack here, and each container is visited
    once, so YAML aliases (`*a` repeated: a "billion laughs" document) cost what they take in memory."""
    stack: list[tuple[str, Any]] = [("", value)]
    seen: set[int] = set()
    while stack:
        path, v = stack.pop()
        if isinstance(v, dict | list | tuple):
            if id(v) in seen:
                continue
            seen.add(id(v))
        if isinstance(v, str):
            m = BAD_CHAR.search(v)
            if m:
                c = m.group()
                kind = "lone surrogate" if "\ud800" <= c <= "\udfff" else "control character"
                return path, f"{kind} U+{ord(c):04X} at character {m.start()}"
        elif isinstance(v, dict):
            for k, x in reversed(list(v.items())):
                key = str(k)
                if BAD_CHAR.search(key):
                    return path, f"key {storable(key)!r} holds a control character or lone surrogate"
                stack.append((f"{path}.{key}" if path else key, x))
        elif isinstance(v, list | tuple):
            stack.extend((f"{path}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return None


def clean_row(row: RawRow, on_bad: BadInput, raw: Any, source: str = "", suspect: bool = True) -> bool:
    """True when every string of the row is storable text; otherwise the row goes to `on_bad`.

    `suspect=False`: the text the row was parsed from cannot hold a bad character (JSON_SUSPECT or
    BAD_CHAR found nothing in it), so the walk is skipped."""
    if not suspect:
        return True
    problem = text_problem(row.data)
    if problem is None:
        return True
    on_bad(row.error(problem[1], problem[0]), raw, source)
    return False


def parse_json(text: str, file: str, line: int | None = None, object_pairs_hook=None) -> Any:
    """`json.loads` whose failures are all InputErrors located by file and line (never a traceback)."""
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON: {e.msg} (column {e.colno})", file=file,
                         line=e.lineno if line is None else line) from None
    except RecursionError:
        raise InputError("JSON nested too deeply to read", file=file, line=line) from None
    except ValueError as e:  # integers longer than Python converts; duplicate keys (object_pairs_hook)
        raise InputError(str(e).split(";")[0], file=file, line=line) from None


def split_suffix(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix or ""): `x.jsonl.gz` -> (".jsonl", ".gz")."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in DECOMPRESS:
        return (suffixes[-2] if len(suffixes) > 1 else ""), suffixes[-1]
    return (suffixes[-1] if suffixes else ""), ""


def plain_stem(path: Path) -> str:
    """The name without its format and compression suffixes: `set.jsonl.gz` -> `set`."""
    return Path(path.stem).stem if split_suffix(path)[1] else path.stem


def read_bytes(path: Path, on_bad: BadInput, source: str = "") -> bytes | None:
    """The file's bytes, decompressed when its name says so; None (reported) for a corrupt archive."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise InputError("is a folder, expected a file", file=str(path)) from None
    except PermissionError:
        raise InputError("cannot read (permission denied)", file=str(path)) from None
    compression = split_suffix(path)[1]
    if not compression:
        return data
    try:
        return DECOMPRESS[compression](data)
    except ARCHIVE_ERRORS as e:
        on_bad(InputError(f"corrupt {compression[1:]} archive: {e}", file=str(path)), source=source)
        return None


def read_text(path: Path, on_bad: BadInput, source: str = "") -> str | None:
    """Whole file as UTF-8 text, or None (reported) when it is missing, not UTF-8 or empty."""
    data = read_bytes(path, on_bad, source)
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        on_bad(InputError(f"not UTF-8 text (byte 0x{data[e.start]:02x})", file=str(path), line=line),
               source=source)
        return None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text.strip():
        on_bad(InputError("empty file", file=str(path)), source=source)
        return None
    return text


def read_json_document(path: Path, on_bad: BadInput, source: str = "") -> tuple[str, Any] | None:
    """(text, parsed JSON) of a whole file, or None (reported) when it cannot be read or parsed."""
    text = read_text(path, on_bad, source)
    if text is None:
        return None
    try:
        return text, parse_json(text, str(path))
    except InputError as e:
        on_bad(e, source=source)
        return None


def read_jsonl(path: Path, on_bad: BadInput, span: tuple[int, int, int] | None = None, *,
               part: bool = False) -> Iterator[RawRow]:
    """One JSON object per line; blank lines are allowed, anything else bad is reported by line.
    `span` (first byte, lines before it, end byte): read only that part of an uncompressed file;
    `part`: the span is one of several the file is read in, so a blank one is not an empty file."""
    start, lines_before = span[:2] if span else (0, 0)
    if span:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read(span[2] - start)
    else:
        data = read_bytes(path, on_bad)
    if data is None:
        return
    if not start and not part and not data.replace(b"\xef\xbb\xbf", b"").strip():
        on_bad(InputError("empty file", file=str(path)))
        return
    for n, raw in enumerate(data.split(b"\n"), start=lines_before + 1):
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a BOM per line: files concatenated with `cat`
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            on_bad(InputError(f"not UTF-8 text (byte 0x{raw[e.start]:02x})", file=str(path), line=n),
                   raw.decode("utf-8", "replace"))
            continue
        try:
            obj = parse_json(line, str(path), n)
        except InputError as e:
            on_bad(e, line)
            continue
        if not isinstance(obj, dict):
            on_bad(InputError(f"expected a JSON object, got {type(obj).__name__}", file=str(path), line=n),
                   line)
            continue
        row = RawRow(obj, str(path), n)
        if clean_row(row, on_bad, line, suspect=JSON_SUSPECT.search(line) is not None):
            yield row


def read_json(path: Path, on_bad: BadInput) -> Iterator[RawRow]:
    """A JSON array of objects (or an object whose `data`/`rows` key holds one), located by index."""
    doc = read_json_document(path, on_bad)
    if doc is None:
        return
    obj = doc[1]
    suspect = JSON_SUSPECT.search(doc[0]) is not None
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("data", "rows", "examples") if isinstance(obj.get(k), list)), obj)
    if not isinstance(obj, list):
        on_bad(InputError("expected a JSON array of objects", file=str(path)))
        return
    if not obj:
        on_bad(InputError("no rows (an empty array)", file=str(path)))
        return
    for i, item in enumerate(obj):
        row = RawRow(item if isinstance(item, dict) else {}, str(path), None, f"[{i}]")
        if not isinstance(item, dict):
            on_bad(row.error(f"expected an object, got {type(item).__name__}"), item)
            continue
        if clean_row(row, on_bad, item, suspect=suspect):
            yield row


def _csv_part(path: Path, on_bad: BadInput, span: tuple[int, int, int]) -> str | None:
    """The header line and then only `span` of a CSV file (as read_text reads a whole one)."""
    with path.open("rb") as f:
        header = f.readline() if span[0] else b""
        f.seek(span[0])
        data = f.read(span[2] - span[0])
    try:
        text = (header + data).decode("utf-8")
    except UnicodeDecodeError as e:
        at = max(e.start - len(header), 0)
        on_bad(InputError(f"not UTF-8 text (byte 0x{(header + data)[e.start]:02x})", file=str(path),
                          line=span[1] + data.count(b"\n", 0, at) + 1))
        return None
    if not span[0] and not text.strip():
        on_bad(InputError("empty file", file=str(path)))
        return None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def read_csv(path: Path, on_bad: BadInput, span: tuple[int, int, int] | None = None) -> Iterator[RawRow]:
    """`span` as in read_jsonl; the header is the file's first line, rows are numbered by their line."""
    tail = span is not None and span[0] > 0
    text = _csv_part(path, on_bad, span) if span else read_text(path, on_bad)
    shift = span[1] - 1 if tail else 0  # lines between the header and the first line read
    if text is None:
        return
    csv.field_size_limit(CSV_FIELD_LIMIT)
    suspect = BAD_CHAR.search(text) is not None
    # strict: an unclosed quote would otherwise swallow the rest of the file into one cell, silently
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows = 0
    try:
        header = reader.fieldnames or []
        duplicate = next((h for i, h in enumerate(header) if h in header[:i]), None)
        if duplicate is not None:  # DictReader would silently keep the last column of that name
            on_bad(InputError("duplicate column in the header", file=str(path), line=1, field=duplicate))
            return
        for rec in reader:
            rows += 1
            if None in rec:  # more cells than header columns
                on_bad(InputError(f"{len(rec[None])} cells more than the header has", file=str(path),
                                  line=reader.line_num + shift), rec)
                continue
            row = RawRow({k: v for k, v in rec.items() if v is not None}, str(path), reader.line_num + shift)
            if clean_row(row, on_bad, rec, suspect=suspect):
                yield row
    except csv.Error as e:  # line_num still counts the lines of the records read before the bad one
        on_bad(InputError(f"malformed CSV: {e}", file=str(path), line=reader.line_num + shift + 1))
        return
    if not rows and not tail:
        on_bad(InputError("no rows (only a header)", file=str(path)))


def read_parquet_or_arrow(path: Path, on_bad: BadInput, rows: tuple[int, int] | None = None) -> Iterator[RawRow]:
    """Parquet, Arrow IPC file or Arrow stream (what `datasets` writes); rows are located by index.
    `rows` (first, end): only those rows of an uncompressed Parquet file, still located file-wide."""
    data = read_bytes(path, on_bad) if rows is None else None
    if rows is None and data is None:
        return
    kind = split_suffix(path)[0][1:]
    try:
        table = _parquet_rows(path, *rows) if rows else _arrow_table(data, kind)
    except (pa.ArrowException, OSError) as e:
        on_bad(InputError(f"unreadable {kind} file: {e}", file=str(path)))
        return
    if table.num_rows == 0 and rows is None:
        on_bad(InputError("empty file", file=str(path)))
        return
    for i, rec in enumerate(table.to_pylist(), start=rows[0] if rows else 0):
        row = RawRow(rec, str(path), None, f"row {i}")
        if clean_row(row, on_bad, rec):
            yield row


def _arrow_table(data: bytes, kind: str) -> pa.Table:
    if kind == "parquet":
        return pq.read_table(pa.BufferReader(data))
    try:
        return pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


def _parquet_rows(path: Path, first: int, end: int) -> pa.Table:
    """Rows [first, end) of a Parquet file, reading only the row groups that hold them."""
    file = pq.ParquetFile(path)
    groups, start, offset = [], None, 0
    for g in range(file.num_row_groups):
        n = file.metadata.row_group(g).num_rows
        if offset < end and offset + n > first:
            groups.append(g)
            start = offset if start is None else start
        offset += n
    return file.read_row_groups(groups).slice(first - (start or 0), end - first)


READERS = {".jsonl": read_jsonl, ".json": read_json, ".csv": read_csv,
           ".parquet": read_parquet_or_arrow, ".arrow": read_parquet_or_arrow}
SUPPORTED = f"{', '.join(TABULAR_SUFFIXES)} (optionally {', '.join(DECOMPRESS)})"


def folder_files(path: Path) -> list[tuple[Path, bool]]:
    """(file, whether it is of a supported type) for every file of a folder, in the order it is read:
    sorted, so the order is stable; hidden files are left out."""
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    listed = [(f, split_suffix(f)[0] in READERS) for f in files]
    if not any(ok for _, ok in listed):
        raise InputError(f"no {SUPPORTED} files in this folder", file=str(path))
    return listed


def unsupported_in_folder(path: Path) -> InputError:
    return InputError(f"unsupported file type in the folder, not read; expected {SUPPORTED}", file=str(path))


def check_supported(path: Path) -> None:
    """Raise for a single file whose type no reader reads."""
    if split_suffix(path)[0] not in READERS:
        raise InputError(f"unsupported file type {''.join(path.suffixes) or '(none)'}; expected one of "
                         f"{SUPPORTED}", file=str(path))


def read_rows(path: Path, on_bad: BadInput) -> Iterator[RawRow]:
    """Rows of one file, or of every supported file in a folder (see folder_files).

    In a folder, a file of an unsupported type is bad input (named, so a stray file is never
    skipped silently)."""
    if path.is_dir():
        for f, supported in folder_files(path):
            if supported:
                yield from READERS[split_suffix(f)[0]](f, on_bad)
            else:
                on_bad(unsupported_in_folder(f))
        return
    check_supported(path)
    span = READ_FROM.get().get(str(path))
    if span != "skip":
        reader = READERS[split_suffix(path)[0]]
        yield from reader(path, on_bad, span) if span else reader(path, on_bad)


class LineDict(dict):
    """A YAML mapping that remembers the line it started on and each key's line, so errors can point."""

    line: int | None = None
    key_lines: Mapping[Any, int] = MappingProxyType({})


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    key_lines: dict[Any, int] = {}
    for key_node, _ in node.value:  # before merge keys (`<<`) are flattened: those may override
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            continue  # unhashable; construct_mapping reports it
        if key in key_lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {key_lines[key]})", key_node.start_mark)
        key_lines[key] = key_node.start_mark.line + 1
    d = LineDict(loader.construct_mapping(node, deep=True))
    d.line, d.key_lines = node.start_mark.line + 1, key_lines
    return d


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, file: str) -> Any:
    """YAML with line-numbered mappings; duplicate keys, bad syntax and absurd nesting are InputErrors."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(e, 'problem', None) or e}", file=file,
                         line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise InputError("YAML nested too deeply to read", file=file) from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    duplicate = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if duplicate is not None:
        raise ValueError(f"duplicate key '{duplicate}'")
    return dict(pairs)


def load_yaml_or_json(path: Path) -> Any:
    """A user-written YAML or JSON document; YAML mappings carry their line numbers (`LineDict`).

    Duplicate keys and characters that are not storable text are errors: such a file is ambiguous."""
    strict = BadInput(strict=True)
    text = read_text(path, strict)
    if split_suffix(path)[0] == ".json":
        doc = parse_json(text, str(path), object_pairs_hook=_no_duplicate_keys)
    else:
        doc = parse_yaml(text, str(path))
    problem = text_problem(doc)
    if problem is not None:
        raise InputError(problem[1], file=str(path), field=problem[0] or None)
    return doc


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
