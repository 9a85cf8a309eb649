"""Loading the base model, its tokenizer and the LoRA configuration."""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

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


def load_model(path: str, settings: DeviceSettings, adapter: Path | None = None,
               trainable: bool = False) -> PreTrainedModel | PeftModel:
    """The base model on the chosen device, optionally with a saved adapter on top."""
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **settings.model_kwargs())
    except OSError as e:
        raise ConfigError(f"train.base_model: cannot load a model from {path!r}: {e}") from None
    model.to(settings.device)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    return model


def lora_config(cfg: LoraSection) -> LoraConfig:
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
