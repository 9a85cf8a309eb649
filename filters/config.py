"""`filters:` section: an ordered list of filters, each a small named unit with its own config.

    filters:
      steps:
        - type: exact_dedup
        - type: minhash_dedup
          threshold: 0.8
        - type: heuristics
          languages: [en]
        - type: decontamination
          benchmarks: [{name: my-bench, path: data/bench.jsonl, fields: [question]}]
        - type: judge
          min_score: 7

Each entry's `name` (default: its type) labels its funnel line and its rejected rows, so the same
type can appear twice with different settings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from instructforge.section import SPEED_ONLY, Section

# Which row of a duplicate group survives. Ties (and "first") fall back to input order, so the
# choice is the same on every run over the same input.
KeepRule = Literal["first", "lowest_id", "longest_output", "highest_score"]
TEXT_FIELDS = ("instruction", "input", "output")
FieldName = Literal["instruction", "input", "output"]


class DatasetSource(Section):
    """Rows read from a JSONL/JSON/Parquet/CSV file, a folder of them, a saved HF dataset or a hub id."""

    name: str | None = None  # label in evidence and stats; default: the path's stem
    path: str
    fields: list[str] | None = None  # text columns to use; none = every string column
    split: str | None = None  # for hub datasets / DatasetDicts; none = every split
    subset: str | None = None  # hub dataset configuration name

    @property
    def label(self) -> str:
        return self.name or self.path.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]


class FilterEntry(Section):
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]


class ExactDedupConfig(FilterEntry):
    type: Literal["exact_dedup"] = "exact_dedup"
    fields: list[FieldName] = Field(default_factory=lambda: ["instruction", "input"], min_length=1)
    keep: KeepRule = "first"
    score_key: str = "judge_score"  # meta key read by keep: highest_score


class MinHashDedupConfig(FilterEntry):
    type: Literal["minhash_dedup"] = "minhash_dedup"
    fields: list[FieldName] = Field(default_factory=lambda: ["instruction", "input"], min_length=1)
    ngram: int = Field(5, ge=1, le=64)  # word n-gram shingles
    num_perm: int = Field(128, ge=4, le=1024)
    threshold: float = Field(0.7, gt=0, lt=1)  # Jaccard similarity; LSH bands chosen from it
    seed: int = 1
    keep: KeepRule = "first"
    score_key: str = "judge_score"


class NoveltyConfig(FilterEntry):
    """Keep rows whose text is not too similar (ROUGE-L F) to a reference pool (Self-Instruct rule)."""

    type: Literal["novelty"] = "novelty"
    field: FieldName = "instruction"
    threshold: float = Field(0.7, gt=0, le=1)
    reference: list[DatasetSource] = Field(default_factory=list)
    within: bool = True  # also compare each row with the rows kept before it


class HeuristicsConfig(FilterEntry):
    """Cheap quality rules; set a rule's value to null (or false) to switch it off."""

    type: Literal["heuristics"] = "heuristics"
    min_words: dict[FieldName, int] = Field(default_factory=lambda: {"instruction": 3})
    max_words: dict[FieldName, int] = Field(
        default_factory=lambda: {"instruction": 500, "input": 2000, "output": 2000})
    empty_output: bool = True
    echo: bool = True  # output is the instruction or the input again (after normalisation)
    # Gopher repetition rules on the output: share of its words covered by the most frequent n-gram
    top_ngram_share: dict[int, float] | None = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    duplicate_line_share: float | None = Field(0.3, ge=0, le=1)  # share of lines that repeat an earlier one
    repetition_min_words: int = 30  # shorter outputs are too short for the repetition rules
    max_non_alpha: float | None = Field(0.8, ge=0, le=1)  # non-letter share of non-space characters
    non_alpha_min_chars: int = 20
    refusal_phrases: list[str] | None = Field(default_factory=lambda: [
        "as an ai language model", "as an ai assistant", "i'm sorry, but i cannot", "i am sorry, but i cannot",
        "i cannot help with", "i can't help with", "i cannot assist with", "i can't assist with",
        "i'm unable to", "i am unable to provide", "as a large language model", "i do not have personal",
        "i don't have personal opinions", "my knowledge cutoff",
    ])
    code_fences: bool = True  # every ``` opened is closed, in each field
    languages: list[str] | None = Field(default_factory=lambda: ["en"])  # ISO 639 codes (fastText lid.176) to keep
    language_min_chars: int = 40  # shorter instruction+output texts are not language-checked
    language_min_letters: int = 12  # nor are texts with fewer letters (numbers, formulas, code)
    language_min_confidence: float = Field(0.5, ge=0, le=1)  # a less sure foreign label keeps the row


class DecontaminationConfig(FilterEntry):
    """Drop rows sharing a word n-gram with a benchmark (GPT-3's 13-gram overlap rule)."""

    type: Literal["decontamination"] = "decontamination"
    ngram: int = Field(13, ge=1, le=64)
    # a benchmark text shorter than `ngram` words is matched whole when it has at least this many
    # words; shorter ones (one-word answers, numbers) would match ordinary text and are skipped
    min_short_words: int = Field(5, ge=1)
    fields: list[FieldName] = Field(default_factory=lambda: list(TEXT_FIELDS), min_length=1)
    benchmarks: list[DatasetSource] = Field(min_length=1)


class JudgeConfig(FilterEntry):
    """Score each row 1-10 with the engine on a rubric (AlpaGasus); keep rows scoring >= min_score."""

    type: Literal["judge"] = "judge"
    min_score: float = Field(7, ge=1, le=10)
    rubric: str | None = None  # none = the bundled rubric
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(48, ge=8)
    on_failure: Literal["reject", "keep"] = "reject"  # when the engine fails or the answer is unusable


FilterSpec = Annotated[
    ExactDedupConfig | MinHashDedupConfig | NoveltyConfig | HeuristicsConfig | DecontaminationConfig
    | JudgeConfig,
    Field(discriminator="type"),
]


def _default_steps() -> list[FilterSpec]:
    return [ExactDedupConfig(), MinHashDedupConfig(), HeuristicsConfig()]


class FiltersConfig(Section):
    steps: list[FilterSpec] = Field(default_factory=_default_steps)
    batch_size: int = Field(10_000, ge=1, json_schema_extra=SPEED_ONLY)  # rows per batch streamed

    @model_validator(mode="after")
    def _unique_names(self) -> FiltersConfig:
        labels = [s.label for s in self.steps]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"filter names must be unique (give repeated types a name): {', '.join(dup)}")
        return self
