"""Training metrics to `metrics.jsonl`: every log the trainer emits, plus throughput.

Tokens/s counts non-padding input tokens (`num_input_tokens_seen`) over wall time since the
previous log of this process, so a resumed run does not credit itself the killed run's tokens.
The file describes one run across resumes: before a phase resumes from checkpoint step S, its
records after S (logged by the killed process, about to be logged again) are dropped, and so is a
line torn by the kill. Loss summaries are computed from the file, so they cover the whole run.
With several training processes only the main one writes; the Trainer gathers losses and token
counts over all of them first.
"""

from __future__ import annotations

import json
import os
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

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._start_time = time.perf_counter()
        self._tokens0 = self._start_tokens = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # every process logs the same (gathered) values
            return
        now = time.perf_counter()
        record: dict[str, Any] = {"phase": self.phase, "step": state.global_step,
                                  "epoch": round(state.epoch or 0.0, 4), "time": time.time(), **(logs or {})}
        tokens = state.num_input_tokens_seen
        if self._t0 is not None and "loss" in (logs or {}) and now > self._t0:
            record["tokens_per_second"] = round((tokens - self._tokens0) / (now - self._t0), 1)
            self._t0, self._tokens0 = now, tokens
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def throughput(self, state) -> dict[str, float]:
        """Tokens and tokens/s of this process's part of the run."""
        seconds = time.perf_counter() - self._start_time
        tokens = state.num_input_tokens_seen - self._start_tokens
        return {"tokens": float(tokens), "seconds": round(seconds, 3),
                "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else 0.0}

    def truncate(self, step: int) -> None:
        """Keep this phase's records up to `step` (the checkpoint resumed from; 0 = starting over)."""
        records = read_metrics(self.path)
        kept = [r for r in records if r.get("phase") != self.phase or r.get("step", 0) <= step]
        if not self.path.exists() or (kept == records and _ends_clean(self.path)):
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def loss_summary(self) -> dict[str, float | None]:
        """First, last and mean training loss of this phase over the whole run (every process).

        Each logged loss is the mean over the steps since the previous log, so weighting it by
        those steps gives the mean over every logged step."""
        logged = [(r["step"], float(r["loss"])) for r in read_metrics(self.path)
                  if r.get("phase") == self.phase and "loss" in r]
        if not logged:
            return {"first_loss": None, "last_loss": None, "train_loss": None}
        weights = [step - prev for (step, _), prev in zip(logged, [0] + [s for s, _ in logged[:-1]], strict=True)]
        total = sum(weights)
        mean = sum(w * loss for w, (_, loss) in zip(weights, logged, strict=True)) / total if total else None
        return {"first_loss": logged[0][1], "last_loss": logged[-1][1], "train_loss": mean}


def _ends_clean(path: Path) -> bool:
    data = path.read_bytes()
    return not data or data.endswith(b"\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record; a last line torn by a kill (not valid JSON) is left out."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
