"""Read the export's Hub-layout datasets (`hub/data/<config>/<split>-*.parquet`) for training.

Rows are checked here, so a malformed export fails with the file, row and field at fault instead
of a traceback deep inside TRL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset

from instructforge.errors import InputError
from instructforge.export.splits import SPLITS

ROLES = {"system", "user", "assistant"}


def split_files(folder: Path, split: str) -> list[Path]:
    return sorted(folder.glob(f"{split}-*.parquet"))


def load_splits(folder: Path, columns: tuple[str, ...], keep: tuple[str, ...] = ()) -> dict[str, list[dict[str, Any]]]:
    """Rows of every split present in `folder` (empty splits are not written by the export): the
    chat `columns`, checked, and the `keep` columns (e.g. id, task) when the file has them."""
    if not folder.is_dir():
        raise InputError("the export has no such dataset; enable it in export config", file=str(folder))
    out = {}
    for split in SPLITS:
        files = split_files(folder, split)
        if not files:
            continue
        rows: list[dict[str, Any]] = []
        for f in files:
            table = pq.read_table(f)
            for col in columns:
                if col not in table.column_names:
                    raise InputError(f"missing column (has {table.column_names})", file=str(f), field=col)
            extra = [c for c in keep if c in table.column_names]
            for i, row in enumerate(table.select([*columns, *extra]).to_pylist()):
                for col in columns:
                    _check_messages(row[col], str(f), i + 1, col)
                rows.append(row)
        out[split] = rows
    if not out.get("train"):
        raise InputError("no train split rows", file=str(folder))
    return out


def _check_messages(messages: Any, file: str, row: int, field: str) -> None:
    """`messages` is a whole conversation ending with the reply; `prompt` ends before a reply;
    `chosen`/`rejected` are replies."""
    if not isinstance(messages, list) or not messages:
        raise InputError("expected a non-empty list of chat messages", file=file, line=row, field=field)
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InputError(f"bad chat message {m!r}: needs role in {sorted(ROLES)} and string content",
                             file=file, line=row, field=field)
    last = messages[-1]["role"]
    if field == "messages" and (last != "assistant" or len(messages) < 2):
        raise InputError("a conversation must end with the assistant's reply to a prompt",
                         file=file, line=row, field=field)
    if field == "prompt" and last == "assistant":
        raise InputError("a prompt must not end with an assistant reply", file=file, line=row, field=field)
    if field in ("chosen", "rejected") and any(m["role"] != "assistant" for m in messages):
        raise InputError("a reply holds assistant messages only", file=file, line=row, field=field)


def sft_rows(rows: list[dict[str, Any]], completion_only: bool) -> list[dict[str, Any]]:
    """Conversations as TRL rows: prompt/completion (loss on the last assistant reply only) or
    messages (loss on everything). The split works with any chat template, unlike TRL's
    assistant-only loss, which needs `{% generation %}` markers in the template."""
    if not completion_only:
        return [{"messages": r["messages"]} for r in rows]
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]


def prompts_of(rows: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    """The conversation up to (not including) the final assistant reply: what a model answers."""
    return [r["messages"][:-1] for r in rows]


def to_dataset(rows: list[dict[str, Any]]) -> Dataset:
    return Dataset.from_list(rows)


def write_split(folder: Path, split: str, rows: list[dict[str, Any]]) -> Path:
    """One Hub-layout shard (used by tests and the benchmark to build small exports)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
