"""Torch and TRL settings for the machine at hand, so nothing asks for hardware that is not there.

CPU: fp32 weights and math (bf16 autocast on CPU is slower and lossy), the plain AdamW, no pinned
memory, no loader workers (they would fight the one torch thread for the cores).
GPU: bf16 weights and autocast where the card supports it (fp16 with loss scaling otherwise),
TF32 matmuls, the fused AdamW, FlashAttention 2 when it is installed, else SDPA.
Processes: data-parallel training processes (`train.processes`, see `instructforge.train.launch`);
by default one per visible GPU, one on CPU.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from instructforge.errors import ConfigError


@dataclass(frozen=True)
class DeviceSettings:
    device: str  # "cpu" | "cuda"
    precision: str  # "fp32" | "bf16" | "fp16"
    attn_implementation: str
    optim: str
    tf32: bool
    threads: int
    processes: int = 1

    @property
    def model_dtype(self) -> torch.dtype:
        """Weights dtype: the frozen base in bf16 on GPU halves memory traffic; fp16 weights stay fp32
        (fp16 mixed precision needs fp32 master weights for the trainable adapter)."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def model_kwargs(self) -> dict[str, Any]:
        return {"dtype": self.model_dtype, "attn_implementation": self.attn_implementation}

    def trainer_kwargs(self) -> dict[str, Any]:
        """Arguments of TRL's SFTConfig/DPOConfig (TrainingArguments) that depend on the machine."""
        cpu = self.device == "cpu"
        return {
            "use_cpu": cpu,
            "bf16": self.precision == "bf16",
            "fp16": self.precision == "fp16",
            "tf32": self.tf32 or None,
            "optim": self.optim,
            "dataloader_pin_memory": not cpu,
            "dataloader_num_workers": 0 if cpu else 2,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect(device: str = "auto", precision: str = "auto", processes: int | None = 1) -> DeviceSettings:
    """Choose the settings; an explicit `cuda`, `bf16` or process count the machine cannot honour is a
    config error. `processes` none: one per visible GPU (what `accelerate launch` and `torchrun
    --nproc-per-node gpu` start), one on CPU."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError("train.device: cuda was asked for, but torch sees no GPU")
    dev = "cuda" if (device == "cuda" or (device == "auto" and has_cuda)) else "cpu"
    if dev == "cpu":
        if precision in ("bf16", "fp16"):
            raise ConfigError(f"train.precision: {precision} is for GPUs; on CPU use fp32 (or auto)")
        return DeviceSettings("cpu", "fp32", "sdpa", "adamw_torch", False, cpu_threads(), processes or 1)
    gpus = torch.cuda.device_count()
    if processes is not None and processes > gpus:
        raise ConfigError(f"train.processes: {processes} asked for, but torch sees {gpus} GPU(s); "
                          "each process trains on a GPU of its own")
    bf16_ok = torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16_ok:
        raise ConfigError("train.precision: bf16 is not supported by this GPU; use fp16 or auto")
    chosen = ("bf16" if bf16_ok else "fp16") if precision == "auto" else precision
    ampere = torch.cuda.get_device_capability()[0] >= 8
    flash = ampere and chosen != "fp32" and importlib.util.find_spec("flash_attn") is not None
    return DeviceSettings("cuda", chosen, "flash_attention_2" if flash else "sdpa", "adamw_torch_fused",
                          ampere, cpu_threads(), processes or gpus)


def cpu_threads() -> int:
    """Torch threads: OMP_NUM_THREADS when set (shared machines set 1), else what torch chose."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else torch.get_num_threads()


def apply(settings: DeviceSettings) -> None:
    """Process-wide torch settings (threads, TF32) before a model is built."""
    torch.set_num_threads(settings.threads)
    if settings.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def peak_memory_bytes(settings: DeviceSettings) -> int:
    """Peak accelerator memory on GPU; the process's peak resident set on CPU."""
    if settings.device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
