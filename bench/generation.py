"""Generation throughput: our batched vllm engine against raw vLLM, a one-request-at-a-time loop
(the reference Self-Instruct pattern) and the transformers engine, on the same prompts.

    .venv/bin/python bench/generation.py            # GPU: 512 prompts x 128 tokens
    .venv/bin/python bench/generation.py --small    # CPU: 16 prompts x 32 tokens

(a) raw `vllm.LLM.generate` on pre-rendered prompts, (b) `VLLMEngine.generate` with the same
requests in one call, (c) the same engine called once per request (on a subset: its rate is
what counts), (d) the transformers engine. All share one loaded vLLM; the request cache is off.
Goal: (b) >= 95% of (a), and (b) >= 20x (c) on GPU.
"""

from __future__ import annotations

import argparse
import os
import time

TOPICS = ["the sea", "tax forms", "a birthday party", "prime numbers", "a job interview", "bread baking",
          "bird migration", "a haiku", "SQL joins", "a train timetable", "recycling", "a chess opening",
          "the water cycle", "a product review", "climbing safety", "a cover letter"]


def requests(count: int, max_tokens: int) -> list:
    from instructforge.engines.base import GenerationRequest, SamplingParams

    return [GenerationRequest(
        messages=[{"role": "user", "content": f"Write a new task instruction about {TOPICS[i % len(TOPICS)]} "
                                              f"for a language model to follow (variant {i})."}],
        sampling=SamplingParams(temperature=0.7, max_tokens=max_tokens, seed=i)) for i in range(count)]


def timed(fn) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CPU size: 16 prompts x 32 tokens")
    parser.add_argument("--prompts", type=int, help="number of prompts")
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--sequential", type=int, help="prompts for the one-at-a-time loop (default: 1/4)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of (a) and (b); best counts")
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (faster start)")
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args()
    count = args.prompts or (16 if args.small else 512)
    max_tokens = args.max_tokens or (32 if args.small else 128)
    seq_count = args.sequential or max(4, count // 4)

    from instructforge.engines import create_engine
    from instructforge.engines.base import prompt_token_ids
    from instructforge.engines.config import EngineConfig

    batch = requests(count, max_tokens)
    started = time.perf_counter()
    engine = create_engine(EngineConfig(backend="vllm", max_model_len=2048, enforce_eager=args.eager))
    print(f"vLLM loaded in {time.perf_counter() - started:.1f} s")
    engine.generate(requests(4, 8))  # warm-up: first-call costs are not throughput

    rendered = [{"prompt_token_ids": prompt_token_ids(engine.tokenizer, r, engine.max_len)} for r in batch]
    params = [engine.sampling_params(r) for r in batch]

    def raw() -> int:
        outs = engine.llm.generate(rendered, params, use_tqdm=False)
        return sum(len(o.token_ids) for out in outs for o in out.outputs)

    def ours() -> int:
        return sum(r.completion_tokens for r in engine.generate(batch))

    def sequential() -> int:
        return sum(engine.generate([r])[0].completion_tokens for r in batch[:seq_count])

    # (a) and (b) alternate and the fastest run of each counts: on a shared machine load drifts
    runs: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
    for _ in range(args.repeat):
        runs["a"].append(timed(raw))
        runs["b"].append(timed(ours))
    rows = [("(a) raw vllm.LLM.generate", count, *min(runs["a"])),
            ("(b) our vllm engine, one batch", count, *min(runs["b"])),
            ("(c) our vllm engine, one request at a time", seq_count, *timed(sequential))]
    engine.close()

    if not args.no_transformers:
        hf = create_engine(EngineConfig(backend="transformers", batch_size=min(count, 32)))
        hf.generate(requests(2, 4))
        rows.append(("(d) transformers engine, batched", count,
                     *timed(lambda: sum(r.completion_tokens for r in hf.generate(batch)))))
        hf.close()

    rate = {name: tokens / seconds for name, _, seconds, tokens in rows}
    base = rate[rows[0][0]]
    print(f"\n{count} prompts, max_tokens={max_tokens}, threads={os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'method':44} {'prompts':>7} {'tokens':>7} {'seconds':>8} {'tok/s':>8} {'vs (a)':>7}")
    for name, n, seconds, tokens in rows:
        print(f"{name:44} {n:7d} {tokens:7d} {seconds:8.2f} {rate[name]:8.1f} {rate[name] / base:7.2f}")
    ours_rate = rate[rows[1][0]]
    print(f"\n(b)/(a) = {ours_rate / base:.1%}   (b)/(c) = {ours_rate / rate[rows[2][0]]:.1f}x")


if __name__ == "__main__":  # vLLM starts worker processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
