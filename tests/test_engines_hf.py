"""The transformers backend on the real bundled model (CPU, one thread)."""

from __future__ import annotations

import json
import re

from instructforge.engines.base import GenerationRequest, SamplingParams, StructuredOutput

pytestmark = __import__("pytest").mark.slow


def chat(text: str, structured: StructuredOutput | None = None, **sampling) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}],
                             sampling=SamplingParams(**{"max_tokens": 16, **sampling}), structured=structured)


PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def test_n_samples_seeds_and_stop_strings(hf_engine):
    seeded = chat("Write a short sentence about the sea.", n=3, seed=7, temperature=1.0)
    other = chat("List three colours.", seed=3)
    first = hf_engine.generate([seeded, other])
    assert first[0].ok and len(first[0].texts) == 3 and len(first[0].finish_reasons) == 3
    assert len(set(first[0].texts)) > 1  # n samples differ from each other
    alone = hf_engine.generate([seeded])[0]  # another batch composition, same seed: same texts
    assert alone.texts == first[0].texts
    reseeded = hf_engine.generate([chat("Write a short sentence about the sea.", n=3, seed=8,
                                        temperature=1.0)])[0]
    assert reseeded.texts != first[0].texts

    stopped = hf_engine.generate([GenerationRequest(
        prompt="1, 2, 3, 4, 5,", sampling=SamplingParams(temperature=0, max_tokens=16, stop=(" 7",)))])[0]
    assert stopped.finish_reasons == ["stop"] and " 7" not in stopped.text and "6" in stopped.text
    assert 0 < stopped.completion_tokens <= 16

    capped = hf_engine.generate([chat("Tell me a long story about a dragon.", max_tokens=5, temperature=0)])[0]
    assert capped.finish_reasons == ["length"] and capped.completion_tokens == 5


def test_structured_output_matches_its_spec(hf_engine):
    results = hf_engine.generate([
        chat("Describe a person as JSON.", StructuredOutput(json_schema=PERSON), max_tokens=32, temperature=0),
        chat("Is fire hot? Answer yes or no.", StructuredOutput(choice=("yes", "no"))),
        chat("Give a three-digit number.", StructuredOutput(regex=r"[1-9][0-9]{2}"), n=2, seed=1),
    ])
    assert all(r.ok for r in results)
    person = json.loads(results[0].text)
    assert set(person) == {"name", "age"} and isinstance(person["age"], int) and isinstance(person["name"], str)
    assert results[1].text in ("yes", "no")
    assert all(re.fullmatch(r"[1-9][0-9]{2}", t) for t in results[2].texts)


def test_failed_request_is_reported_and_the_rest_succeed(hf_engine):
    too_long = GenerationRequest(prompt="word " * 9000, sampling=SamplingParams(max_tokens=4))
    bad_regex = chat("x", StructuredOutput(regex="(unclosed"))
    results = hf_engine.generate([chat("Say hi.", max_tokens=4), too_long, bad_regex])
    assert results[0].ok and results[0].text
    assert not results[1].ok and "max_model_len" in results[1].error and results[1].finish_reasons == ["error"]
    assert not results[2].ok
