"""QLoRA (`train.quantization: 4bit`): the exact bitsandbytes settings, and a real 4-bit SFT run on CPU
(bitsandbytes >= 0.50 runs NF4 layers on CPU), so the path a GPU run takes is exercised here."""

from __future__ import annotations

import sys

import pytest
import torch

from instructforge.errors import ConfigError
from instructforge.train.device import detect
from instructforge.train.model import quantization_kwargs


def test_4bit_builds_nf4_double_quant_bf16_compute_on_the_chosen_device():
    assert quantization_kwargs("none", detect("cpu")) == {}
    kw = quantization_kwargs("4bit", detect("cpu"))
    q = kw["quantization_config"]
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant) == (True, "nf4", True)
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and kw["device_map"] == {"": "cpu"}


def test_4bit_without_bitsandbytes_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="train.quantization: 4bit needs bitsandbytes"):
        quantization_kwargs("4bit", detect("cpu"))


@pytest.mark.slow
def test_qlora_sft_trains_a_lora_adapter_over_4bit_layers(tmp_path, bundled_model_dir):
    import bitsandbytes as bnb

    from instructforge.train.config import TrainConfig
    from instructforge.train.data import load_splits
    from instructforge.train.model import load_model
    from instructforge.train.sft import train_sft
    from tests.test_train import make_export

    settings = detect("cpu")
    model = load_model(str(bundled_model_dir), settings, trainable=True, quantization="4bit")
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_state.quant_type == "nf4"
    del model

    splits = load_splits(make_export(tmp_path, n=8).path / "hub" / "data" / "sft", ("messages",))
    cfg = TrainConfig.model_validate({"quantization": "4bit", "max_steps": 3, "batch_size": 4, "max_length": 64,
                                      "learning_rate": 1e-3, "logging_steps": 1,
                                      "lora": {"r": 4, "alpha": 8, "dropout": 0.0}})
    result = train_sft(cfg, str(bundled_model_dir), splits, tmp_path / "sft", settings, tmp_path / "m.jsonl")
    assert result.steps == 3 and result.last_loss < result.first_loss
    assert (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").exists()
