"""Training metrics to `metrics.jsonl`: every log the trainer emits, plus throughput.

Tokens/s counts non-padding input tokens (`num_input_tokens_seen`) over wall time since the
previous log of this process, so a resumed run does not credit itself the killed run's tokens.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class MetricsLog(TrainerCallback):
    def __init__(self, path: Path, phase: str):
        self.path, self.phase = path, phase
        self._t0: float | None = None
        self._tokens0 = 0
        self._start_tokens = 0
        self._start_time = 0.0
        self.losses: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._start_time = time.perf_counter()
        self._tokens0 = self._start_tokens = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        now = time.perf_counter()
        record: dict[str, Any] = {"phase": self.phase, "step": state.global_step,
                                  "epoch": round(state.epoch or 0.0, 4), "time": time.time(), **(logs or {})}
        tokens = state.num_input_tokens_seen
        if self._t0 is not None and "loss" in (logs or {}) and now > self._t0:
            record["tokens_per_second"] = round((tokens - self._tokens0) / (now - self._t0), 1)
            self._t0, self._tokens0 = now, tokens
        if "loss" in (logs or {}):
            self.losses.append(float(logs["loss"]))
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def throughput(self, state) -> dict[str, float]:
        """Tokens and tokens/s of this process's part of the run."""
        seconds = time.perf_counter() - self._start_time
        tokens = state.num_input_tokens_seen - self._start_tokens
        return {"tokens": float(tokens), "seconds": round(seconds, 3),
                "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else 0.0}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
