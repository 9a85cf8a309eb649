"""Tabular instruction sets: local files and folders, or datasets through `datasets.load_dataset`.

Presets map well-known layouts onto Example fields; `columns` overrides them or, with preset
`columns`, is the whole mapping:

    alpaca    instruction, input, output
    dolly     instruction, context -> input, response -> output, category -> task
    sharegpt  conversations: [{from: human|gpt|system, value}]
    messages  messages: [{role: user|assistant|system, content}]   (OpenAI chat format)

A conversation gives its first user -> assistant exchange, or with `turns: all` one row per
assistant reply with the earlier turns as the row's input (a `User:`/`Assistant:` transcript).
A user or assistant turn that is empty (or only whitespace) rejects the whole conversation, named
by its field: the transcript would not say what was asked or answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from instructforge.errors import InputError
from instructforge.ingest.config import FileSource
from instructforge.ingest.readers import BadInput, RawRow, clean_row, plain_stem, read_rows, string_field
from instructforge.ingest.shards import Shard, read_shard
from instructforge.records import example_id

COLUMN_PRESETS = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output"},
    "dolly": {"instruction": "instruction", "input": "context", "output": "response", "task": "category"},
    "columns": {},
}
CONVERSATION_PRESETS = {  # preset: (column, role key, text key)
    "sharegpt": ("conversations", "from", "value"),
    "messages": ("messages", "role", "content"),
}
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "model": "assistant", "system": "system"}


def read_file_source(cfg: FileSource, path: Path | None, on_bad: BadInput) -> Iterator[dict[str, Any]]:
    """Example rows of one `files:` entry; `path` is the resolved local path (None for a dataset id)."""
    if path is not None:
        return _examples(cfg, read_rows(path, on_bad), f"file:{path.name}", plain_stem(path), on_bad)
    name = cfg.dataset.rstrip("/").rsplit("/", 1)[-1]
    return _examples(cfg, _dataset_rows(cfg, on_bad), f"hf:{cfg.dataset}", name, on_bad)


def read_shard_examples(cfg: FileSource, path: Path, shard: Shard, on_bad: BadInput) -> Iterator[dict[str, Any]]:
    """Example rows of one shard of the local source at `path` (see shards.py), as the whole read
    gives them: the same task names, ids and locations."""
    return _examples(cfg, read_shard(shard, on_bad), f"file:{path.name}", plain_stem(path), on_bad)


def _examples(cfg: FileSource, rows: Iterator[RawRow], source: str, name: str,
              on_bad: BadInput) -> Iterator[dict[str, Any]]:
    convert = _converter(cfg)
    for n, row in enumerate(rows):
        if cfg.max_rows is not None and n >= cfg.max_rows:
            break
        try:
            examples = convert(row)
        except InputError as e:
            on_bad(e, row.data, source)
            continue
        where = str(row.line) if row.line is not None else row.field
        for ex in examples:
            task = cfg.task or ex.pop("task", "") or name
            meta = {"row": where, **ex.pop("meta", {})}
            yield {"id": example_id(task, ex["instruction"], ex["input"], ex["output"]), **ex, "task": task,
                   "source": source, "template": cfg.preset, "meta": meta}


def _dataset_rows(cfg: FileSource, on_bad: BadInput) -> Iterator[RawRow]:
    """Rows through `datasets`: a saved dataset folder, a local data folder, or a hub/cache id."""
    import datasets

    where = f"{cfg.dataset}[{cfg.split}]"
    try:
        local = Path(cfg.dataset)
        if (local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(local))
            ds = ds[cfg.split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(cfg.dataset, cfg.subset, split=cfg.split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "cannot load this"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load dataset: {first}", file=cfg.dataset) from None
    if len(ds) == 0:
        raise InputError("empty dataset", file=where)
    for i, rec in enumerate(ds):
        row = RawRow(rec, where, None, f"row {i}")
        if clean_row(row, on_bad, rec, f"hf:{cfg.dataset}"):
            yield row


def _converter(cfg: FileSource) -> Callable[[RawRow], list[dict[str, Any]]]:
    if cfg.preset in CONVERSATION_PRESETS:
        column, role_key, text_key = CONVERSATION_PRESETS[cfg.preset]
        return lambda row: _conversation(row, column, role_key, text_key, cfg.turns)
    columns = {**COLUMN_PRESETS[cfg.preset], **cfg.columns}
    return lambda row: [_columns(row, columns)]


def _columns(row: RawRow, columns: dict[str, str]) -> dict[str, Any]:
    d = row.data
    ex: dict[str, Any] = {"instruction": string_field(row, d, columns["instruction"]),
                          "input": string_field(row, d, columns["input"], required=False) if "input" in columns
                          else "",
                          "output": string_field(row, d, columns["output"]) if "output" in columns else ""}
    if not ex["instruction"].strip():
        raise row.error("empty", columns["instruction"])
    if "task" in columns:
        ex["task"] = string_field(row, d, columns["task"], required=False)
    if "system" in columns and string_field(row, d, columns["system"], required=False):
        ex["meta"] = {"system": d[columns["system"]]}
    return ex


def _conversation(row: RawRow, column: str, role_key: str, text_key: str, turns: str) -> list[dict[str, Any]]:
    conv = row.data.get(column)
    if not isinstance(conv, list) or not conv:
        raise row.error("missing" if conv is None else "expected a non-empty list of turns", column)
    parsed: list[tuple[str, str]] = []
    for j, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise row.error("expected an object", f"{column}[{j}]")
        role = string_field(row, turn, role_key, where=f"{column}[{j}].")
        if role not in ROLES:
            raise row.error(f"unknown role '{role}' (expected one of {', '.join(ROLES)})", f"{column}[{j}].{role_key}")
        text = string_field(row, turn, text_key, where=f"{column}[{j}].")
        if not text.strip() and ROLES[role] != "system":
            raise row.error("empty turn", f"{column}[{j}].{text_key}")
        parsed.append((ROLES[role], text))
    system = "\n".join(t for r, t in parsed if r == "system" and t.strip())
    system = system or string_field(row, row.data, "system", required=False)
    dialog = [(r, t) for r, t in parsed if r != "system"]
    out = []
    for j, (role, text) in enumerate(dialog):
        if role != "assistant" or j == 0 or dialog[j - 1][0] != "user":
            continue
        history = "\n\n".join(f"{'User' if r == 'user' else 'Assistant'}: {t}" for r, t in dialog[:j - 1])
        ex = {"instruction": dialog[j - 1][1], "input": history, "output": text, "meta": {"turn": str(len(out))}}
        if system:
            ex["meta"]["system"] = system
        out.append(ex)
        if turns == "first":
            break
    if not out:
        raise row.error("no user turn followed by an assistant reply", column)
    return out
