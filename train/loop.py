"""What SFT and DPO share: trainer arguments, resume from the last checkpoint, saving the adapter.

Each phase works in its own folder: `checkpoints/` (Trainer checkpoints, the resume point after a
kill), `adapter/` (the final PEFT adapter) and `DONE` (written last, so a phase that finished is
never trained again when a later phase crashes).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from instructforge.train.config import TrainConfig
from instructforge.train.device import DeviceSettings, peak_memory_bytes
from instructforge.train.metrics import MetricsLog

DONE = "DONE"


@dataclass
class PhaseResult:
    phase: str
    adapter: str  # relative to the stage folder, e.g. "sft/adapter"
    steps: int
    resumed_from: str | None
    train_loss: float | None  # mean over this process's steps
    first_loss: float | None  # first and last logged training loss
    last_loss: float | None
    eval: dict[str, float]
    tokens: float
    seconds: float
    tokens_per_second: float
    peak_memory_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def common_args(cfg: TrainConfig, settings: DeviceSettings, folder: Path, *, seed: int, has_eval: bool,
                epochs: float, max_steps: int | None, learning_rate: float) -> dict[str, Any]:
    """TrainingArguments shared by SFTConfig and DPOConfig."""
    periodic_eval = has_eval and cfg.eval_steps is not None
    return {
        "output_dir": str(folder / "checkpoints"),
        "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation,
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "max_steps": max_steps or -1,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,  # transformers reads a value below 1 as a ratio of the steps
        "weight_decay": cfg.weight_decay,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "logging_steps": cfg.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "eval_strategy": "steps" if periodic_eval else "no",
        "eval_steps": cfg.eval_steps if periodic_eval else None,
        "include_num_input_tokens_seen": "non_padding",
        "report_to": "none",
        "seed": seed,
        "max_length": cfg.max_length,
        **settings.trainer_kwargs(),
    }


def is_done(folder: Path) -> bool:
    return (folder / DONE).exists()


def load_result(folder: Path) -> PhaseResult:
    return PhaseResult(**json.loads((folder / DONE).read_text(encoding="utf-8")))


def train_phase(trainer: Trainer, phase: str, folder: Path, settings: DeviceSettings,
                metrics: MetricsLog, has_eval: bool) -> PhaseResult:
    """Train (resuming from the newest checkpoint in `folder/checkpoints` if any), evaluate on the
    validation split, save the adapter, mark the phase done, drop its checkpoints."""
    ckpt_dir = folder / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    output = trainer.train(resume_from_checkpoint=last)
    throughput = metrics.throughput(trainer.state)
    eval_metrics: dict[str, float] = {}
    if has_eval:
        eval_metrics = {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, int | float)}
    adapter = folder / "adapter"
    trainer.model.save_pretrained(str(adapter), selected_adapters=["default"])
    trainer.processing_class.save_pretrained(str(adapter))
    result = PhaseResult(
        phase=phase, adapter=f"{folder.name}/adapter", steps=trainer.state.global_step,
        resumed_from=Path(last).name if last else None,
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        first_loss=metrics.losses[0] if metrics.losses else None,
        last_loss=metrics.losses[-1] if metrics.losses else None, eval=eval_metrics,
        tokens=throughput["tokens"], seconds=throughput["seconds"],
        tokens_per_second=throughput["tokens_per_second"],
        peak_memory_mb=round(peak_memory_bytes(settings) / 2**20, 1))
    (folder / DONE).write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return result
