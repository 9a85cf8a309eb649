"""Loading the base model (16-bit, or 4-bit NF4 for QLoRA), its tokenizer and the LoRA configuration.

QLoRA goes through bitsandbytes: NF4 weights with double quantization and bf16 compute, then PEFT's
`prepare_model_for_kbit_training` (norms and head in fp32, input gradients on) before the adapter is
added. bitsandbytes >= 0.50 also runs 4-bit layers on CPU (slowly), so the same path is tested there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from instructforge.errors import ConfigError
from instructforge.train.config import LoraSection
from instructforge.train.device import DeviceSettings


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise ConfigError(f"train.base_model: cannot load a tokenizer from {path!r}: {e}") from None
    if tokenizer.chat_template is None:
        raise ConfigError(f"train.base_model: {path!r} has no chat template; the export is conversational")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_kwargs(quantization: str, settings: DeviceSettings) -> dict[str, Any]:
    """`from_pretrained` arguments for `train.quantization` (none: nothing)."""
    if quantization == "none":
        return {}
    try:
        import bitsandbytes  # noqa: F401 - the 4-bit layers come from it
    except ImportError as e:
        raise ConfigError(f"train.quantization: 4bit needs bitsandbytes ({e}); pip install bitsandbytes") from None
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    # this process's GPU: with several training processes, each has its own (torch.cuda.set_device)
    device = settings.device if settings.device == "cpu" else f"cuda:{torch.cuda.current_device()}"
    return {"quantization_config": config, "device_map": {"": device}}


def load_model(path: str, settings: DeviceSettings, adapter: Path | None = None, trainable: bool = False,
               quantization: str = "none", reward: bool = False) -> PreTrainedModel | PeftModel:
    """The base model on the chosen device (a one-score classifier for a reward model), optionally
    with a saved adapter on top; `trainable`: it will be trained (a 4-bit base is prepared for it)."""
    quant = quantization_kwargs(quantization, settings)
    auto = AutoModelForSequenceClassification if reward else AutoModelForCausalLM
    extra = {"num_labels": 1} if reward else {}
    try:
        model = auto.from_pretrained(path, **settings.model_kwargs(), **quant, **extra)
    except OSError as e:
        raise ConfigError(f"train.base_model: cannot load a model from {path!r}: {e}") from None
    if reward and model.config.pad_token_id is None:  # the score is read at the last non-pad token
        model.config.pad_token_id = load_tokenizer(path).pad_token_id
    if not quant:
        model.to(settings.device)  # a quantized model is placed by its device_map
    elif trainable:  # gradient checkpointing is the trainer's to switch on (train.gradient_checkpointing)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    return model


def lora_config(cfg: LoraSection, reward: bool = False) -> LoraConfig:
    """A reward model also trains its new score head (PEFT keeps it with the adapter for SEQ_CLS)."""
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=cfg.target_modules, task_type="SEQ_CLS" if reward else "CAUSAL_LM")
