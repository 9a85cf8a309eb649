"""What SFT and DPO share: trainer arguments, resume from the last checkpoint, saving the adapter.

Each phase works in its own folder: `checkpoints/` (Trainer checkpoints, the resume point after a
kill), `adapter/` (the final PEFT adapter) and `DONE` (written last, so a phase that finished is
never trained again when a later phase crashes).

A kill or a full disk can leave the newest `checkpoint-N` half-written; a resume only takes a
complete one (trainer state, weights, optimizer, scheduler and RNG files whole) and deletes the
others, so it falls back to the previous checkpoint (or starts over). A full disk is a one-line
StorageError naming the phase folder; the rerun resumes once space is freed.

With several processes (`instructforge.train.launch`) every process runs this code; only the main
one writes files (metrics, adapter, DONE) or deletes them, as the Trainer saves only there.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peft import set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback, TrainerState

from instructforge import faults
from instructforge.errors import storage_error
from instructforge.runs import write_json_atomic
from instructforge.train.config import TrainConfig
from instructforge.train.device import DeviceSettings, peak_memory_bytes
from instructforge.train.metrics import MetricsLog

DONE = "DONE"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = ("adapter_model.safetensors", "model.safetensors")
log = logging.getLogger("instructforge.train")


@dataclass
class PhaseResult:
    phase: str
    adapter: str  # relative to the stage folder, e.g. "sft/adapter"
    steps: int
    resumed_from: str | None
    train_loss: float | None  # mean over every logged step of the run, across resumes
    first_loss: float | None  # first and last logged training loss of the run
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
        "per_device_train_batch_size": cfg.batch_size // settings.processes,
        "per_device_eval_batch_size": cfg.batch_size // settings.processes,
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
        # every LoRA weight gets a gradient each step: DDP need not search the graph for unused ones
        # (which also breaks with gradient checkpointing)
        "ddp_find_unused_parameters": False,
        **settings.trainer_kwargs(),
    }


def is_done(folder: Path) -> bool:
    return (folder / DONE).exists()


def load_result(folder: Path) -> PhaseResult:
    return PhaseResult(**json.loads((folder / DONE).read_text(encoding="utf-8")))


def train_phase(trainer: Trainer, phase: str, folder: Path, settings: DeviceSettings,
                metrics: MetricsLog, has_eval: bool) -> PhaseResult:
    """Train (resuming from the newest complete checkpoint in `folder/checkpoints` if any), evaluate
    on the validation split, save the adapter, mark the phase done, drop its checkpoints."""
    ckpt_dir = folder / "checkpoints"
    main = trainer.is_world_process_zero()
    last = last_complete_checkpoint(ckpt_dir, trainer.args.world_size, delete=main)
    if main:
        metrics.truncate(checkpoint_step(last) if last else 0)
    trainer.add_callback(FaultPoints())
    # killed after the last step's checkpoint: Trainer.train would take one step more than max_steps
    finished = (last is not None and 0 < trainer.args.max_steps <= checkpoint_step(last)
                and (last / WEIGHTS[0]).exists())
    try:
        if finished:
            load_finished(trainer, last)
            metrics.on_train_begin(trainer.args, trainer.state, trainer.control)
        else:
            trainer.train(resume_from_checkpoint=str(last) if last else None)
        throughput = metrics.throughput(trainer.state)
        eval_metrics: dict[str, float] = {}
        if has_eval:
            eval_metrics = {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, int | float)}
        if main:
            adapter = folder / "adapter"
            trainer.model.save_pretrained(str(adapter), selected_adapters=["default"])
            trainer.processing_class.save_pretrained(str(adapter))
    except (OSError, RuntimeError) as e:
        err = storage_error(e, folder)
        if err is None:
            raise
        raise err from e
    result = PhaseResult(
        phase=phase, adapter=f"{folder.name}/adapter", steps=trainer.state.global_step,
        resumed_from=last.name if last else None, **metrics.loss_summary(), eval=eval_metrics,
        tokens=throughput["tokens"], seconds=throughput["seconds"],
        tokens_per_second=throughput["tokens_per_second"],
        peak_memory_mb=round(peak_memory_bytes(settings) / 2**20, 1))
    if main:
        write_json_atomic(folder / DONE, result.as_dict())
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return result


def load_finished(trainer: Trainer, checkpoint: Path) -> None:
    """The adapter weights and trainer state of a checkpoint taken after the last step."""
    set_peft_model_state_dict(trainer.model, load_file(str(checkpoint / WEIGHTS[0])))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


class FaultPoints(TrainerCallback):
    """`train:step` after each optimizer step, `train:save` after each checkpoint (instructforge.faults),
    in the main process: with several, a kill there is one process dying, as a real failure is."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            faults.point("train:step")

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            faults.point("train:save")


def checkpoint_step(path: Path) -> int:
    return int(CHECKPOINT.match(path.name).group(1))


def last_complete_checkpoint(ckpt_dir: Path, processes: int = 1, *, delete: bool = True) -> Path | None:
    """The newest complete `checkpoint-N` of a run in `processes` processes; incomplete ones (a kill or
    a full disk while saving) are deleted (`delete`: by the main process only), so neither this resume
    nor the Trainer's checkpoint rotation ever picks them."""
    if not ckpt_dir.is_dir():
        return None
    found = sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)),
                   key=checkpoint_step, reverse=True)
    complete = None
    for path in found:
        problem = None if complete else checkpoint_problem(path, processes)
        if complete is None and problem is None:
            complete = path
        elif problem is not None and delete:
            log.warning("%s is incomplete (%s): deleted, resuming from an earlier checkpoint", path, problem)
            shutil.rmtree(path, ignore_errors=True)
    return complete


def torch_files(processes: int) -> tuple[str, ...]:
    """The torch.save zip archives of a checkpoint: the main process's optimizer and scheduler, and
    every process's RNG state (the Trainer names them by rank when there are several)."""
    rng = ["rng_state.pth"] if processes == 1 else [f"rng_state_{rank}.pth" for rank in range(processes)]
    return ("optimizer.pt", "scheduler.pt", *rng)


def checkpoint_problem(path: Path, processes: int = 1) -> str | None:
    """Why `path` is not a checkpoint a resume can load (None: it is complete)."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    if state.get("global_step") != checkpoint_step(path):
        return "trainer_state.json is for another step"
    weights = next((path / w for w in WEIGHTS if (path / w).exists()), None)
    if weights is None:
        return "no weights"
    try:  # opening checks that the file holds every tensor its header lists
        with safe_open(str(weights), "pt"):
            pass
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types for a truncated file
        return f"{weights.name} unreadable: {e}"
    for name in torch_files(processes):
        file = path / name
        if not file.exists():
            return f"no {name}"
        try:
            with zipfile.ZipFile(file) as z:
                if z.testzip() is not None:
                    return f"{name} is corrupt"
        except (OSError, zipfile.BadZipFile):
            return f"{name} is truncated"
    return None
