"""`selfinstruct:` section. Defaults are the published Self-Instruct method's parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from instructforge.section import SPEED_ONLY, Section

DEFAULT_BLACKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files",
                     "map", "maps", "draw", "plot", "go to"]


class InstructionSampling(Section):
    """Sampling for the instruction-generation prompts (the paper's settings)."""

    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.5, gt=0, le=1)
    presence_penalty: float = 2.0
    frequency_penalty: float = 0.0
    max_tokens: int = Field(1024, ge=1)


class SelfInstructConfig(Section):
    # selfinstruct: numbered-list continuation, then classification and instances per task.
    # alpaca: one prompt asks for whole tasks (instruction, input, output) at once.
    mode: Literal["selfinstruct", "alpaca"] = "selfinstruct"
    target: int = Field(100, ge=1)  # accepted tasks to reach
    # instruction prompts per round; none = what the engine takes at once (Engine.batch_hint:
    # 512 on vLLM with a GPU, 64 on CPU, 4 x concurrency for a server)
    prompts_per_round: int | None = Field(None, ge=1)
    # rounds overlap in the engine (round k+1's instruction prompts run beside round k's
    # classification and instances); false = one step at a time. The output is the same.
    overlap_rounds: bool = Field(True, json_schema_extra=SPEED_ONLY)
    # ask for instruction lists and instances as schema-constrained JSON instead of free text
    structured: bool = False
    max_rounds: int = Field(200, ge=1)  # stop even if the target is not reached (weak models)
    human_examples: int = Field(6, ge=0)  # in-context instructions from the seed pool per prompt
    machine_examples: int = Field(2, ge=0)  # ... and from the generated pool once it has any
    # the model continues the numbered list up to this item (stops before it)
    max_list_item: int = Field(16, ge=2)
    prompt_style: Literal["completion", "chat"] = "completion"
    sampling: InstructionSampling = Field(default_factory=InstructionSampling)

    # filters on each generated instruction
    min_words: int = Field(4, ge=1)  # fewer words: dropped (the paper drops <= 3)
    max_words: int = Field(150, ge=1)
    blacklist: list[str] = Field(default_factory=lambda: list(DEFAULT_BLACKLIST))
    banned_prefixes: list[str] = Field(default_factory=lambda: ["Write a program"])
    novelty_threshold: float = Field(0.7, ge=0, le=1)  # ROUGE-L F above this to the pool: dropped
    # each kept instruction's nearest neighbour (meta nearest_*) is exact when its score is above this
    nearest_exact_above: float = Field(0.5, ge=0, le=1)

    # classification identification and instance generation
    identify_classification: bool = True
    classification_max_tokens: int = Field(4, ge=1)
    instance_examples: int = Field(2, ge=0)  # seed tasks shown as examples per instance prompt
    instance_temperature: float = Field(0.0, ge=0)
    instance_max_tokens: int = Field(512, ge=1)
    max_instances: int = Field(5, ge=1)  # kept per task

    # alpaca mode
    alpaca_tasks_per_prompt: int = Field(20, ge=1)
    alpaca_seed_examples: int = Field(3, ge=1)
    alpaca_temperature: float = Field(1.0, ge=0)
    alpaca_max_tokens: int = Field(3072, ge=1)
