"""`python -m instructforge.engines`: a few generations from the bundled model via the default engine."""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="default", choices=["default", "vllm", "transformers"])
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    from instructforge.engines import create_engine
    from instructforge.engines.base import GenerationRequest, SamplingParams
    from instructforge.engines.config import EngineConfig

    engine = create_engine(EngineConfig(backend=args.backend))
    questions = ["Write one instruction a language model could follow, about cooking.",
                 "Give a one-sentence tip for writing clear emails.",
                 "What is 12 times 7? Answer with the number only."]
    sampling = SamplingParams(temperature=0.7, max_tokens=args.max_tokens, seed=0)
    results = engine.generate([GenerationRequest(messages=[{"role": "user", "content": q}], sampling=sampling)
                               for q in questions])
    print(f"engine: {engine.backend}, model: {engine.model_identity()}")
    for question, result in zip(questions, results, strict=True):
        print(f"\n> {question}\n{result.text if result.ok else 'ERROR: ' + str(result.error)}")
    engine.close()


if __name__ == "__main__":  # vLLM starts worker processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
