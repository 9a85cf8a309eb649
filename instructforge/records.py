"""The rows that flow between stages, defined once; Arrow schemas are derived from these models.

`id` is a content hash, so the same example gets the same id in every run and on every machine.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

ID_LENGTH = 16  # hex chars of blake2b: 64 bits, collision-free at dataset scale


def content_id(*parts: str) -> str:
    """Stable id for a tuple of strings (unit-separator joined, so ("ab","c") != ("a","bc"))."""
    h = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=ID_LENGTH // 2)
    return h.hexdigest()


def example_id(task: str, instruction: str, input: str, output: str) -> str:
    return content_id(task, instruction, input, output)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def arrow_schema(cls) -> pa.Schema:
        return pa.schema([pa.field(name, _arrow_type(f.annotation)) for name, f in cls.model_fields.items()])

    @classmethod
    def empty_table(cls) -> pa.Table:
        return cls.arrow_schema().empty_table()


class Example(Record):
    """One instruction-tuning example: what every stage from ingest to export reads and writes."""

    id: str = ""
    instruction: str
    input: str = ""
    output: str = ""
    task: str = ""
    source: str = ""
    template: str = ""
    meta: dict[str, str] = Field(default_factory=dict)

    def model_post_init(self, _: Any) -> None:
        if not self.id:
            self.id = example_id(self.task, self.instruction, self.input, self.output)


class PreferencePair(Record):
    """A prompt with a preferred and a dispreferred response, and the evidence for the choice."""

    id: str = ""
    prompt: str
    chosen: str
    rejected: str
    scores: dict[str, float] = Field(default_factory=dict)
    judge: str = ""
    meta: dict[str, str] = Field(default_factory=dict)

    def model_post_init(self, _: Any) -> None:
        if not self.id:
            self.id = content_id(self.prompt, self.chosen, self.rejected)


# Columns every rejected row carries besides its own: which stage and filter removed it, why,
# the evidence (kept duplicate's id, score, matched n-gram, ...) as a string map, and an event id
# that tells two rejections of the same row apart (deterministic: the same on every rerun).
REJECTION_FIELDS = [
    pa.field("stage", pa.string()),
    pa.field("filter", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("evidence", pa.map_(pa.string(), pa.string())),
    pa.field("event_id", pa.string()),
]


def rejected_schema(record_schema: pa.Schema) -> pa.Schema:
    return pa.schema(list(record_schema) + REJECTION_FIELDS)


def _arrow_type(annotation: Any) -> pa.DataType:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        return _arrow_type(next(a for a in args if a is not type(None)))
    if origin is dict:
        return pa.map_(_arrow_type(args[0]), _arrow_type(args[1]))
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    scalar = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    if annotation in scalar:
        return scalar[annotation]
    raise TypeError(f"no Arrow type for {annotation!r}")


def meta_json(meta: dict[str, Any]) -> dict[str, str]:
    """Provenance maps hold strings; structured values are stored as compact JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))
            for k, v in meta.items()}
