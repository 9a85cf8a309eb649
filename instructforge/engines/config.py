"""`engine:` section. (Owned by the engines module; extended there.)"""

from __future__ import annotations

from typing import Literal

from instructforge.config import Section


class EngineConfig(Section):
    backend: Literal["default", "vllm", "openai", "transformers"] = "default"
    model: str | None = None  # local folder or hub id; none = the bundled SmolLM2-135M-Instruct
