"""LLM judge (AlpaGasus): the engine scores each example 1-10 on a rubric; low scores are removed.

The answer is constrained by a JSON schema ({"score": integer 1..10}), so even a small model
returns something parseable; the whole batch goes to the engine in one call (results are cached
as they arrive). Requests the engine failed after its retries stop the stage unless
`engine.on_failure: continue`, which records them like unusable answers. Kept rows carry the
score in meta["judge_score"]; removed rows carry it (or the failure) in their evidence.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from instructforge.engines.base import (
    Engine,
    GenerationRequest,
    SamplingParams,
    StructuredOutput,
    check_failures,
)
from instructforge.filters.base import Filter, Rejections, fmt
from instructforge.filters.config import JudgeConfig

RUBRIC = """\
Rate how useful this example would be for teaching an assistant to follow instructions.
Give 10 when the response answers the instruction completely, correctly and clearly; around 5
when it is partly right, vague or padded; 1 when it is wrong, off-topic, empty or refuses.
Judge the response against the instruction (and the input, when there is one), not its style."""

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
          "required": ["score"], "additionalProperties": False}


def judge_messages(rubric: str, instruction: str, input: str, output: str) -> tuple[dict[str, str], ...]:
    example = f"Instruction:\n{instruction}\n\n" + (f"Input:\n{input}\n\n" if input else "") + f"Response:\n{output}"
    return ({"role": "system", "content": "You grade instruction-tuning examples. Answer with JSON only."},
            {"role": "user", "content": f"{rubric}\n\n{example}\n\nReply as {{\"score\": <1-10>}}."})


def parse_score(text: str) -> float | None:
    """The score from the judge's JSON answer, or None when it has none in 1..10."""
    try:
        value = json.loads(text.strip()).get("score")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 10:
        return None
    return float(value)


class Judge(Filter):
    on_driver = True  # the engine lives in the driver's process

    def __init__(self, cfg: JudgeConfig, engine: Callable[[], Engine]):
        self.cfg, self.name = cfg, cfg.label
        self._engine = engine
        self.scores: Counter[int] = Counter()
        self.failures = 0

    def apply(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rejections]:
        rows = batch.to_pylist()
        sampling = SamplingParams(temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens, seed=0)
        structured = StructuredOutput(json_schema=SCHEMA)
        rubric = self.cfg.rubric or RUBRIC
        requests = [GenerationRequest(messages=judge_messages(rubric, r["instruction"], r["input"], r["output"]),
                                      sampling=sampling, structured=structured) for r in rows]
        engine = self._engine()
        results = engine.generate(requests) if requests else []
        check_failures(engine, results, f"filter {self.name}")  # engine.on_failure: fail stops here
        out: Rejections = {}
        metas = []
        for i, (row, res) in enumerate(zip(rows, results, strict=True)):
            meta = dict(row["meta"] or [])
            score = parse_score(res.text) if res.ok else None
            if score is None:
                self.failures += 1
                why = res.error or f"unusable answer: {res.text[:200]!r}"
                if self.cfg.on_failure == "reject":
                    out[i] = ("judge failed", {"error": why})
                else:
                    meta["judge_error"] = why
            else:
                self.scores[int(score)] += 1
                meta["judge_score"] = fmt(score)
                if score < self.cfg.min_score:
                    out[i] = (f"judge score below {fmt(self.cfg.min_score)}",
                              {"judge_score": fmt(score), "min_score": fmt(self.cfg.min_score)})
            metas.append(meta)
        meta_col = pa.array(metas, type=batch.schema.field("meta").type)
        return batch.set_column(batch.schema.get_field_index("meta"), "meta", meta_col), out

    def stats(self) -> dict[str, Any]:
        return {"score_histogram": {str(k): v for k, v in sorted(self.scores.items())}, "failures": self.failures}
