"""Supervised fine-tuning of a LoRA adapter with TRL's `SFTTrainer` on the `sft` export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from instructforge.train.config import TrainConfig
from instructforge.train.data import sft_rows, to_dataset
from instructforge.train.device import DeviceSettings
from instructforge.train.loop import PhaseResult, common_args, is_done, load_result, train_phase
from instructforge.train.metrics import MetricsLog
from instructforge.train.model import load_model, load_tokenizer, lora_config


def sft_config(cfg: TrainConfig, settings: DeviceSettings, folder: Path, *, seed: int,
               has_eval: bool) -> SFTConfig:
    return SFTConfig(
        **common_args(cfg, settings, folder, seed=seed, has_eval=has_eval, epochs=cfg.epochs,
                      max_steps=cfg.max_steps, learning_rate=cfg.learning_rate),
        packing=cfg.packing,
        # without packing, batches of similar lengths waste fewer pad tokens
        train_sampling_strategy="random" if cfg.packing else "group_by_length",
        completion_only_loss=cfg.completion_only_loss,
        dataset_num_proc=None,
    )


def train_sft(cfg: TrainConfig, base: str, splits: dict[str, list[dict[str, Any]]], folder: Path,
              settings: DeviceSettings, metrics_path: Path, *, seed: int = 0,
              callbacks: list[TrainerCallback] | None = None) -> PhaseResult:
    """Train (or resume, or skip when already done) the SFT adapter in `folder`."""
    if is_done(folder):
        return load_result(folder)
    folder.mkdir(parents=True, exist_ok=True)
    has_eval = bool(splits.get("validation"))
    tokenizer = load_tokenizer(base)
    metrics = MetricsLog(metrics_path, "sft")
    trainer = SFTTrainer(
        model=load_model(base, settings, trainable=True, quantization=cfg.quantization),
        args=sft_config(cfg, settings, folder, seed=seed, has_eval=has_eval),
        train_dataset=to_dataset(sft_rows(splits["train"], cfg.completion_only_loss)),
        eval_dataset=to_dataset(sft_rows(splits["validation"], cfg.completion_only_loss)) if has_eval else None,
        processing_class=tokenizer,
        peft_config=lora_config(cfg.lora),
        callbacks=[metrics, *(callbacks or [])],
    )
    return train_phase(trainer, "sft", folder, settings, metrics, has_eval)
