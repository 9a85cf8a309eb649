"""`export:` section: which datasets to write, how an example becomes a chat turn, splits, card."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from instructforge.section import Section

SftFormat = Literal["messages", "prompt_completion", "alpaca", "sharegpt", "text"]
PreferenceFormat = Literal["preference", "kto", "ranking", "ranked"]


class PromptConfig(Section):
    """How an `Example` becomes the user turn. Recorded in the card and in stats.json."""

    system: str | None = None  # system prompt; none = no system turn
    # `{instruction}` and `{input}` are replaced; the second template is used when input is empty
    user_template: str = "{instruction}\n\n{input}"
    user_template_no_input: str = "{instruction}"

    @model_validator(mode="after")
    def _placeholders(self) -> PromptConfig:
        if "{instruction}" not in self.user_template or "{input}" not in self.user_template:
            raise ValueError("user_template must contain {instruction} and {input}")
        if "{instruction}" not in self.user_template_no_input:
            raise ValueError("user_template_no_input must contain {instruction}")
        return self


class SplitConfig(Section):
    """Fractions of train/validation/test, assigned by a hash of the example id (stable across runs)."""

    train: float = Field(0.9, ge=0, le=1)
    validation: float = Field(0.05, ge=0, le=1)
    test: float = Field(0.05, ge=0, le=1)
    stratify_by_task: bool = False

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if abs(self.train + self.validation + self.test - 1.0) > 1e-6:
            raise ValueError("train + validation + test must be 1")
        return self


class PreferenceConfig(Section):
    """Sample k responses per prompt, score them, keep (best, worse) pairs."""

    k: int = Field(4, ge=2)
    # sample i uses temperatures[i % len]: several temperatures give the judge real choices
    temperatures: list[float] = Field(default_factory=lambda: [0.3, 0.7, 1.0], min_length=1)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    max_prompts: int | None = Field(None, ge=1)  # none = every exported example
    # llm: a rubric judged by the engine with JSON-schema output; reference: ROUGE-L F to the
    # example's own output; length: longer non-empty answers win (a cheap baseline); reward: a
    # trained reward adapter scores each answer (best-of-k); human: people's ranks (`rankings`)
    judge: Literal["llm", "reference", "length", "reward", "human"] = "llm"
    reward_model: str | None = None  # judge reward: a reward adapter folder (train.method: reward)
    rankings: str | None = None  # judge human: a file written by `instructforge annotate import`
    aspects: list[str] = Field(default_factory=lambda: ["helpfulness", "honesty", "instruction_following"],
                               min_length=1)
    judge_max_tokens: int = Field(128, ge=16)
    rejected: Literal["lowest", "random"] = "lowest"
    # ranked: every scored answer per prompt with its rank (the k-way ranking, not only the pair)
    formats: list[PreferenceFormat] = Field(default_factory=lambda: ["preference", "kto", "ranking"],
                                            min_length=1)

    @model_validator(mode="after")
    def _judge_inputs(self) -> PreferenceConfig:
        if self.judge == "reward" and not self.reward_model:
            raise ValueError("judge reward needs reward_model: a reward adapter folder")
        if self.judge == "human" and not self.rankings:
            raise ValueError("judge human needs rankings: a file from `instructforge annotate import`")
        return self


class CardConfig(Section):
    pretty_name: str | None = None  # none = the run name
    language: list[str] = Field(default_factory=lambda: ["en"])
    license: str = "other"
    # with license "other": the Hub shows this name and link (default: the card's own source table)
    license_name: str = "mixed-sources"  # see the Provenance section
    license_link: str = "README.md#provenance"
    source_licenses: dict[str, str] = Field(default_factory=dict)  # source (as in the card) -> license
    model_license: str | None = None  # none = known for the bundled model, else "not recorded"
    tags: list[str] = Field(default_factory=lambda: ["instruction-tuning", "synthetic", "instructforge"])
    examples: int = Field(3, ge=0)  # example rows shown in the card


class ExportConfig(Section):
    formats: list[SftFormat] = Field(default_factory=lambda: ["messages", "prompt_completion", "alpaca",
                                                              "sharegpt", "text"])
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    # the `text` format: "tokenizer" = the chat template of `template_model` (none = the engine's
    # model, else the bundled one), or a built-in: chatml, llama3, alpaca
    chat_template: Literal["tokenizer", "chatml", "llama3", "alpaca"] = "tokenizer"
    template_model: str | None = None
    splits: SplitConfig = Field(default_factory=SplitConfig)
    preference: PreferenceConfig | None = None
    card: CardConfig = Field(default_factory=CardConfig)
    shard_rows: int = Field(100_000, ge=1)  # rows per Parquet file in the Hub layout
    # `run` publishes the export to this Hub dataset repo after the run (export/hub.py: only changed
    # files, nothing when unchanged); where it goes does not change the export, so it is left out of
    # the stage's fingerprint
    push_to: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$", exclude=True)
