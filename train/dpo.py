"""Preference tuning of a LoRA adapter with TRL's `DPOTrainer` on the `preference` export.

On top of the base model, DPO trains a fresh adapter and the base is its reference. On top of the
SFT adapter, DPO keeps training that adapter and TRL uses a frozen copy of it as the reference,
so the reference is the SFT model, as DPO intends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from instructforge.train.config import TrainConfig
from instructforge.train.data import to_dataset
from instructforge.train.device import DeviceSettings
from instructforge.train.loop import PhaseResult, common_args, is_done, load_result, train_phase
from instructforge.train.metrics import MetricsLog
from instructforge.train.model import load_model, load_tokenizer, lora_config


def dpo_config(cfg: TrainConfig, settings: DeviceSettings, folder: Path, *, seed: int,
               has_eval: bool) -> DPOConfig:
    return DPOConfig(
        **common_args(cfg, settings, folder, seed=seed, has_eval=has_eval, epochs=cfg.dpo.epochs,
                      max_steps=cfg.dpo.max_steps, learning_rate=cfg.dpo.learning_rate),
        beta=cfg.dpo.beta,
        loss_type=[cfg.dpo.loss_type],
        dataset_num_proc=None,
    )


def train_dpo(cfg: TrainConfig, base: str, splits: dict[str, list[dict[str, Any]]], folder: Path,
              settings: DeviceSettings, metrics_path: Path, *, init_adapter: Path | None = None, seed: int = 0,
              callbacks: list[TrainerCallback] | None = None) -> PhaseResult:
    """Train (or resume, or skip when already done) the DPO adapter in `folder`."""
    if is_done(folder):
        return load_result(folder)
    folder.mkdir(parents=True, exist_ok=True)
    has_eval = bool(splits.get("validation"))
    metrics = MetricsLog(metrics_path, "dpo")
    trainer = DPOTrainer(
        model=load_model(base, settings, adapter=init_adapter, trainable=True, quantization=cfg.quantization),
        args=dpo_config(cfg, settings, folder, seed=seed, has_eval=has_eval),
        train_dataset=to_dataset(splits["train"]),
        eval_dataset=to_dataset(splits["validation"]) if has_eval else None,
        processing_class=load_tokenizer(base),
        peft_config=None if init_adapter else lora_config(cfg.lora),
        callbacks=[metrics, *(callbacks or [])],
    )
    return train_phase(trainer, "dpo", folder, settings, metrics, has_eval)
