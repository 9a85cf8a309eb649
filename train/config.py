"""`train:` section: a LoRA (or QLoRA) adapter trained on the run's export, by SFT, DPO, SFT then DPO,
or a reward model on the preference pairs; then evaluated against the base model (`eval:`).

Device-dependent settings (precision, optimizer, attention kernel, pinned memory) are not here:
`instructforge.train.device` chooses them for the machine the stage runs on, so one config works
on a laptop CPU and on a GPU.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from instructforge.filters.config import DatasetSource
from instructforge.section import Section


class LoraSection(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    # "all-linear" = every linear layer except the output head
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class DpoSection(Section):
    """Preference tuning on the `preference` export, on top of the SFT adapter when both run."""

    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair",
                       "apo_zero", "apo_down", "exo_pair", "aot", "aot_unpaired", "discopop",
                       "sigmoid_norm"] = "sigmoid"
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # none = `epochs` over the data


class EvalBenchmark(Section):
    """A benchmark to evaluate on, read like decontamination's benchmarks (JSONL/JSON/Parquet/CSV file,
    folder, saved or cached hub dataset): one prompt and one answer column per row."""

    name: str | None = None  # label in stats; default: the path's stem
    path: str
    split: str | None = None
    subset: str | None = None
    prompt_field: str = "question"
    answer_field: str = "answer"
    metric: Literal["exact_match", "rouge_l"] = "exact_match"
    max_rows: int | None = Field(None, ge=1)  # none = every row

    @property
    def source(self) -> DatasetSource:
        return DatasetSource(name=self.name, path=self.path, split=self.split, subset=self.subset,
                             fields=[self.prompt_field, self.answer_field])


class EvalSection(Section):
    """Base model vs trained adapter, greedy decoding, on the export's test split and on benchmarks.

    Tasks with answer options (ingest's `options`, Self-Instruct classification tasks) are scored by
    exact match, free-text tasks by ROUGE-L; every row also gives the loss on its reference answer.
    A reward model is scored by pairwise accuracy on the held-out preference pairs instead.
    """

    enabled: bool = True
    max_rows: int | None = Field(200, ge=1)  # test rows evaluated (first by id); none = all
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1)
    benchmarks: list[EvalBenchmark] = Field(default_factory=list)


class TrainConfig(Section):
    # local Hugging Face folder or hub id; "bundled" = the bundled SmolLM2-135M-Instruct
    base_model: str = "bundled"
    # sft_dpo: SFT first, then DPO continues the SFT adapter; reward: a reward model (sequence
    # classification head + LoRA) on the preference pairs, with TRL's RewardTrainer
    method: Literal["sft", "dpo", "sft_dpo", "reward"] = "sft"
    # 4bit = QLoRA: the frozen base in NF4 with double quantization and bf16 compute (bitsandbytes)
    quantization: Literal["none", "4bit"] = "none"
    lora: LoraSection = Field(default_factory=LoraSection)
    dpo: DpoSection = Field(default_factory=DpoSection)

    max_length: int = Field(512, ge=16)  # tokens per sequence (per packed block with `packing`)
    packing: bool = False  # concatenate examples into `max_length` blocks (fewer pad tokens)
    # loss on the assistant's reply only; false = on the whole conversation
    completion_only_loss: bool = True
    gradient_checkpointing: bool = False  # less memory, ~20-30% slower

    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # none = `epochs` over the data
    # data-parallel processes (DDP, one per GPU, started by the stage with torchrun); none = every
    # visible GPU, 1 on CPU. 1 trains in the stage's own process.
    processes: int | None = Field(None, ge=1)
    # examples per step over all processes: each process takes batch_size / processes (TRL's
    # per_device_train_batch_size), so adding GPUs keeps the recipe (steps, effective batch) and
    # only makes it faster. Effective batch = batch_size * gradient_accumulation.
    batch_size: int = Field(8, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)

    logging_steps: int = Field(5, ge=1)
    eval_steps: int | None = Field(None, ge=1)  # none = evaluate on the validation split at the end only
    save_steps: int = Field(50, ge=1)  # checkpoint interval; a killed run resumes from the last one
    save_total_limit: int = Field(2, ge=1)

    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPUs that have it, else fp32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    merge: bool = False  # also write the base model with the adapter merged in (merged/)

    samples: int = Field(4, ge=0)  # held-out prompts generated before vs after training
    sample_max_tokens: int = Field(64, ge=1)
    eval: EvalSection = Field(default_factory=EvalSection)
