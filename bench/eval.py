"""Eval cost: seconds per 100 held-out rows, ours (batched) vs a per-row reference loop, same rows.

    .venv/bin/python bench/eval.py [--small] [--rows N] [--batch-size B] [--max-new-tokens T]

Rows: the bundled Self-Instruct seed tasks (ingest/data/seed_tasks.jsonl), one conversation per
instance, scored by ROUGE-L (free text). Model: the bundled SmolLM2-135M-Instruct with a freshly
initialised LoRA adapter (r=16, all linear layers): its outputs equal the base model's, and it
costs what a trained one costs. Both methods do the train stage's eval work for both sides (base =
adapter disabled, then adapter): a greedy generation and the answer loss of every row.
Ours: `instructforge.train.eval.evaluate` (left-padded batches). Reference: the loop a first
script writes, one `generate` and one loss forward per row. The script reports how many greedy
generations agree (left padding can flip a near-tie in fp32 arithmetic).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

SEEDS = Path(__file__).resolve().parent.parent / "ingest" / "data" / "seed_tasks.jsonl"


def rows(n: int):
    from instructforge.train.eval import ROUGE, EvalRow

    out = []
    for line in SEEDS.read_text(encoding="utf-8").splitlines():
        t = json.loads(line)
        for inst in t["instances"]:
            user = f"{t['instruction']}\n\n{inst['input']}" if inst["input"] else t["instruction"]
            out.append(EvalRow(t.get("name", "seed"), [{"role": "user", "content": user}], inst["output"], ROUGE))
    return out[:n]


def reference(model, tokenizer, eval_rows, max_new_tokens: int) -> list[str]:
    """One generate and one loss forward per row, both sides."""
    texts = []
    for disable in (True, False):
        ctx = model.disable_adapter() if disable else contextlib.nullcontext()
        with ctx, torch.inference_mode():
            for r in eval_rows:
                ids = tokenizer.apply_chat_template(r.prompt, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
                out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
                full = tokenizer.apply_chat_template([*r.prompt, {"role": "assistant", "content": r.reference}],
                                                     return_tensors="pt", return_dict=True)
                labels = full["input_ids"].clone()
                labels[:, :ids["input_ids"].shape[1]] = -100
                model(**full, labels=labels)
    return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="24 rows, 32 new tokens")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    if args.small:
        args.rows, args.max_new_tokens = 24, 32
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    from instructforge.engines.model import bundled_model_dir
    from instructforge.train.config import EvalSection, LoraSection
    from instructforge.train.device import detect
    from instructforge.train.eval import evaluate
    from instructforge.train.model import load_model, load_tokenizer, lora_config

    base = str(bundled_model_dir())
    from peft import get_peft_model  # after instructforge.train, which quiets bitsandbytes' import warning

    tokenizer = load_tokenizer(base)
    model = get_peft_model(load_model(base, detect("cpu")), lora_config(LoraSection()))
    model.eval()
    eval_rows = rows(args.rows)
    cfg = EvalSection(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    t0 = time.perf_counter()
    stats, records = evaluate(model, tokenizer, eval_rows, cfg, base, {})
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_texts = reference(model, tokenizer, eval_rows, args.max_new_tokens)
    ref = time.perf_counter() - t0

    ours_texts = [r["base"] for r in records] + [r["adapter"] for r in records]
    same = sum(a == b for a, b in zip(ours_texts, ref_texts, strict=True))
    load = os.getloadavg()[0]
    n = len(eval_rows)
    print(f"{n} rows x 2 sides (base, adapter), greedy, {args.max_new_tokens} new tokens max, "
          f"batch {args.batch_size}, {torch.get_num_threads()} torch thread(s), load average {load:.2f}")
    print("| method | seconds | seconds per 100 rows (both sides) |")
    print("| --- | --- | --- |")
    print(f"| ours (batched) | {ours:.1f} | {100 * ours / n:.1f} |")
    print(f"| reference (per-row loop) | {ref:.1f} | {100 * ref / n:.1f} |")
    print(f"speed-up {ref / ours:.2f}x; identical generations {same}/{len(ref_texts)}; "
          f"ROUGE-L base {stats['metrics']['rouge_l']['base']}, loss base {stats['metrics']['loss']['base']}")


if __name__ == "__main__":
    main()
