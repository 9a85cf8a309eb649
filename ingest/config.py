"""`ingest:` section: which sources to read, how to render templated tasks, how to mix them.

With no source listed at all, ingest reads the bundled FLAN-style collection and seed tasks
(`bundled:flan_mini.yaml`, `bundled:seed_tasks.jsonl`), the defaults for the demo and the tests.
Paths starting with `bundled:` name files shipped in ingest/data; others are relative to the config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from instructforge.section import Section

SOURCE_KEYS = ("collections", "seeds", "sni", "files")
BUNDLED_DEFAULTS = {"collections": [{"path": "bundled:flan_mini.yaml"}],
                    "seeds": [{"path": "bundled:seed_tasks.jsonl"}]}


class RenderConfig(Section):
    """How the templated tasks of a collection become examples (FLAN's formatting variety)."""

    templates_per_row: int = Field(1, ge=1)  # distinct templates each raw row is rendered with
    shots: list[int] = Field(default_factory=lambda: [0])  # exemplar counts (0 = zero-shot)
    options: Literal["on", "off", "both"] = "on"  # render the answer options block, or not, or either
    options_style: Literal["flan", "letters", "both"] = "flan"  # `- a` lines, `(A) a` lines, or either
    # one: each (row, template) gets one (shots, options) variant chosen by seed; all: every variant
    variants: Literal["one", "all"] = "one"
    example_separator: str = "\n\n"  # between few-shot exemplars and before the query
    answer_separator: str = "\nAnswer: "  # between an exemplar's input and its answer (and after the query)

    @model_validator(mode="after")
    def _shots_valid(self) -> RenderConfig:
        if not self.shots or any(k < 0 for k in self.shots):
            raise ValueError("shots must be a non-empty list of counts >= 0")
        return self


class CollectionSource(Section):
    """A FLAN-style task collection file (YAML or JSON; format in instructforge.ingest.collection)."""

    path: str
    weight: float = Field(1.0, gt=0)  # mixture weight against the other weighted sources
    tasks: list[str] | None = None  # only these tasks of the collection
    render: RenderConfig | None = None  # overrides ingest.render for this collection


class SeedSource(Section):
    """Self-Instruct seed tasks (JSONL). Seeds are never capped or mixed: they are the seed pool."""

    path: str


class SniSource(Section):
    """Super-NaturalInstructions task files: one `taskNNN_*.json` file, or a folder of them."""

    path: str
    weight: float = Field(1.0, gt=0)
    positive_examples: int = Field(0, ge=0)  # worked examples appended to the definition
    outputs: Literal["first", "all"] = "first"  # one row per instance, or one per listed output
    max_instances: int | None = Field(None, ge=1)  # per task file, the first N instances


class FileSource(Section):
    """A tabular instruction set: a local file/folder, or a dataset through `datasets.load_dataset`."""

    path: str | None = None  # .jsonl .json .csv .parquet .arrow file (or .gz .bz2 .xz .zst of one), or a folder
    dataset: str | None = None  # Hugging Face dataset id, or a local dataset folder
    subset: str | None = None  # the dataset's configuration name
    split: str = "train"
    preset: Literal["alpaca", "dolly", "sharegpt", "messages", "columns"] = "alpaca"
    # Example field -> column: the whole mapping for `columns`, overrides for the other presets
    columns: dict[Literal["instruction", "input", "output", "task", "system"], str] = Field(default_factory=dict)
    task: str | None = None  # task name of every row (default: the file or dataset name)
    turns: Literal["first", "all"] = "first"  # conversations: first exchange, or one row per reply
    max_rows: int | None = Field(None, ge=1)
    weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _one_location(self) -> FileSource:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of path (a local file or folder) or dataset (a dataset id)")
        if self.preset == "columns" and "instruction" not in self.columns:
            raise ValueError("preset 'columns' needs columns.instruction (and usually columns.output)")
        return self


class MixingConfig(Section):
    """FLAN-style mixing of the weighted sources (collections, sni, files; never seeds).

    Each task keeps at most `max_per_task` examples, which also makes its mixing rate
    examples-proportional with that cap. With `total`, the mixture is subsampled to that many
    rows: sources get shares by `weight`, tasks within a source by their capped size.
    Rows left out go to rejected/ with filter `task_cap` or `mixture`.
    """

    max_per_task: int | None = Field(None, ge=1)
    total: int | None = Field(None, ge=1)


class IngestConfig(Section):
    collections: list[CollectionSource] = Field(default_factory=list)
    seeds: list[SeedSource] = Field(default_factory=list)
    sni: list[SniSource] = Field(default_factory=list)
    files: list[FileSource] = Field(default_factory=list)
    render: RenderConfig = Field(default_factory=RenderConfig)
    mixing: MixingConfig = Field(default_factory=MixingConfig)

    @model_validator(mode="before")
    @classmethod
    def _bundled_when_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and not any(k in data for k in SOURCE_KEYS):
            return {**BUNDLED_DEFAULTS, **data}
        return data
