"""LoRA SFT throughput: our trainer vs a plain TRL `SFTTrainer` + PEFT script, same data and model.

    .venv/bin/python bench/train.py [--small] [--steps N] [--batch-size B] [--max-length L] [--qlora]

Data: the bundled Self-Instruct seed tasks (ingest/data/seed_tasks.jsonl), one conversation per
instance, repeated to fill the run. Model: the bundled SmolLM2-135M-Instruct (or --model).
Both methods: LoRA r=16, alpha=32 on all linear layers, the same batch size, max length, steps,
learning rate and seed. The reference is what the TRL docs show: `SFTConfig` defaults (which turn
gradient checkpointing on) plus what the machine needs to run at all (`use_cpu`, no bf16 on CPU).
Ours: `instructforge.train.sft.train_sft` with its defaults and `device.detect()` settings.
`--qlora` adds ours with `quantization: 4bit` (NF4 base, bf16 compute): QLoRA vs 16-bit LoRA memory
and tokens/s on the same model and data (meant for a GPU; bitsandbytes' CPU path is slow).

Each method runs in its own child process (peak memory measured there). Tokens/s counts
non-padding input tokens from step 2 on (step 1 pays one-time warm-up). MFU = 4 N tokens/s over
the peak: N = the base model's parameters (forward 2N + backward through frozen weights 2N, LoRA
weights are negligible); the peak is the GPU's dense bf16 figure, or on CPU a measured fp32 matmul.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from transformers import TrainerCallback

SEEDS = Path(__file__).resolve().parent.parent / "ingest" / "data" / "seed_tasks.jsonl"
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def conversations(n: int) -> list[dict]:
    tasks = [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines() if line.strip()]
    convs = []
    for t in tasks:
        for inst in t["instances"]:
            user = f"{t['instruction']}\n\n{inst['input']}" if inst["input"] else t["instruction"]
            convs.append({"messages": [{"role": "user", "content": user},
                                       {"role": "assistant", "content": inst["output"]}]})
    return [convs[i % len(convs)] for i in range(n)]


class Throughput(TrainerCallback):
    """Non-padding tokens/s from the end of step 1 to the end of training."""

    def __init__(self):
        self.t1, self.tok1 = 0.0, 0
        self.result: dict = {}

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 1:
            _sync()
            self.t1, self.tok1 = time.perf_counter(), state.num_input_tokens_seen

    def on_train_end(self, args, state, control, **kw):
        _sync()
        secs = time.perf_counter() - self.t1
        tokens = state.num_input_tokens_seen - self.tok1
        self.result = {"tokens": tokens, "seconds": secs, "tokens_per_second": tokens / secs}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_ours(model: str, rows: list[dict], work: Path, a: argparse.Namespace, cb, quantization: str = "none") -> None:
    from instructforge.train.config import TrainConfig
    from instructforge.train.device import apply, detect
    from instructforge.train.sft import train_sft

    cfg = TrainConfig(max_steps=a.steps, batch_size=a.batch_size, max_length=a.max_length,
                      logging_steps=a.steps, save_steps=10 * a.steps, learning_rate=2e-4, quantization=quantization)
    settings = detect()
    apply(settings)
    train_sft(cfg, model, {"train": rows}, work / "ours", settings, work / "metrics.jsonl", callbacks=[cb])


def run_trl(model: str, rows: list[dict], work: Path, a: argparse.Namespace, cb) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    gpu = torch.cuda.is_available()
    args = SFTConfig(output_dir=str(work / "trl"), max_steps=a.steps, per_device_train_batch_size=a.batch_size,
                     max_length=a.max_length, learning_rate=2e-4, logging_steps=a.steps, save_strategy="no",
                     report_to="none", use_cpu=not gpu, bf16=gpu and torch.cuda.is_bf16_supported(),
                     include_num_input_tokens_seen="non_padding", seed=0)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), peft_config=peft,
                         callbacks=[cb])
    trainer.train()


def worker(method: str, model: str, a: argparse.Namespace, queue: mp.Queue) -> None:
    import resource

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rows = conversations(a.rows)
    cb = Throughput()
    with tempfile.TemporaryDirectory() as tmp:
        if method == "trl":
            run_trl(model, rows, Path(tmp), a, cb)
        else:
            run_ours(model, rows, Path(tmp), a, cb, quantization="4bit" if method == "qlora" else "none")
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    queue.put({**cb.result, "peak_mb": peak / 2**20})


def peak_tflops() -> tuple[float, str]:
    """The GPU's dense bf16 peak, or this CPU's measured fp32 matmul rate (one torch thread)."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tf in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tf, f"{name} dense bf16 spec"
        return float("nan"), f"{name} (peak unknown)"
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    x = torch.randn(1024, 1024)
    x @ x
    t, reps = time.perf_counter(), 20
    for _ in range(reps):
        x @ x
    return 2 * 1024**3 * reps / (time.perf_counter() - t) / 1e12, "measured fp32 matmul, 1 thread"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="CPU-sized run: 8 steps, batch 4, max length 256")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--model", default="bundled")
    p.add_argument("--qlora", action="store_true", help="also ours with train.quantization: 4bit")
    a = p.parse_args()
    a.steps = a.steps or (8 if a.small else 60)
    a.batch_size = a.batch_size or (4 if a.small else 16)
    a.max_length = a.max_length or (256 if a.small else 1024)
    a.rows = a.steps * a.batch_size

    from transformers import AutoConfig, AutoModelForCausalLM

    from instructforge.engines.model import resolve_model

    model = resolve_model(a.model)
    with torch.device("meta"):
        n_params = sum(t.numel() for t in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
                       .parameters())
    peak, peak_src = peak_tflops()

    ctx = mp.get_context("spawn")
    results = {}
    methods = ("trl", "ours", "qlora") if a.qlora else ("trl", "ours")
    for method in methods:
        q = ctx.Queue()
        proc = ctx.Process(target=worker, args=(method, model, a, q))
        proc.start()
        results[method] = q.get()
        proc.join()

    print(f"\nLoRA SFT, {Path(model).name} ({n_params / 1e6:.0f}M params), {a.steps} steps, batch {a.batch_size}, "
          f"max length {a.max_length}; peak {peak:.3g} TFLOPS ({peak_src})")
    print(f"{'method':<28}{'tokens/s':>10}{'peak MB':>10}{'TFLOPS':>9}{'MFU':>8}")
    labels = {"trl": "TRL SFTTrainer + PEFT (ref)", "ours": "instructforge train_sft", "qlora": "ours, QLoRA 4bit"}
    for method in methods:
        label, r = labels[method], results[method]
        tflops = 4 * n_params * r["tokens_per_second"] / 1e12
        print(f"{label:<28}{r['tokens_per_second']:>10.1f}{r['peak_mb']:>10.0f}{tflops:>9.3f}"
              f"{tflops / peak:>8.1%}")
    print(f"speed-up: {results['ours']['tokens_per_second'] / results['trl']['tokens_per_second']:.2f}x")


if __name__ == "__main__":
    main()
