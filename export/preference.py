"""Preference data: sample k answers per prompt, score or rank each, keep the ranking and (best,
worse) pairs with the evidence.

Sampling is one batched `generate` call (one request per prompt and temperature, `n` samples
each). An answer cut off by `max_tokens` (finish reason `length`) is sampled once more with twice
the tokens; one still cut off is dropped before judging, so it can never be chosen (both counts
are in the stats). Scores come from the LLM judge (a second batched call with a JSON schema, one
integer per aspect), a rule, a trained reward model (best-of-k), or people's rankings
(`instructforge.export.annotation`). The ranking keeps every scored answer;
binarization: chosen = the highest score, rejected = the lowest (or a random strictly lower one);
a prompt whose answers all score the same is a tie and yields no pair.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from instructforge.engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StructuredOutput,
)
from instructforge.export.config import PreferenceConfig
from instructforge.filters.novelty import rouge_l
from instructforge.records import Example, PreferencePair, meta_json

Message = dict[str, str]
SCORE_MIN, SCORE_MAX = 1, 5

JUDGE_SYSTEM = (
    "You grade one answer to a user's request. Read the request and the answer, then give the answer "
    f"a whole-number grade from {SCORE_MIN} (poor) to {SCORE_MAX} (excellent) on each aspect listed. "
    "Grade the answer as written; do not reward length for its own sake. Reply with JSON only."
)
ASPECT_HINTS = {
    "helpfulness": "does it solve what was asked, usefully and completely?",
    "honesty": "is it truthful about facts and open about what it does not know?",
    "instruction_following": "does it respect every constraint and the format the request sets?",
    "truthfulness": "is it free of invented facts?",
}


@dataclass
class Candidate:
    text: str
    temperature: float | None  # None: not sampled here (people's candidates come with their ranks)
    finish_reason: str
    score: float | None = None
    aspects: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict:
        return {"text": self.text, "temperature": self.temperature, "finish_reason": self.finish_reason,
                "score": self.score, "aspects": self.aspects}


def sampling_plan(cfg: PreferenceConfig) -> list[tuple[float, int]]:
    """(temperature, number of samples) per request: sample i uses temperatures[i % len]."""
    counts = Counter(cfg.temperatures[i % len(cfg.temperatures)] for i in range(cfg.k))
    return [(t, counts[t]) for t in dict.fromkeys(cfg.temperatures) if counts[t]]


def sample_candidates(engine: Engine, prompts: list[list[Message]], cfg: PreferenceConfig,
                      seed: int) -> list[list[Candidate]]:
    """k answers per prompt, from one batched generate call. Failed requests yield no candidates."""
    plan = sampling_plan(cfg)
    requests = [GenerationRequest(messages=tuple(p), sampling=SamplingParams(
        n=n, temperature=t, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed))
        for p in prompts for t, n in plan]
    results = engine.generate(requests, progress=True)
    out: list[list[Candidate]] = []
    for i in range(len(prompts)):
        cands = []
        for (t, _), res in zip(plan, results[i * len(plan):(i + 1) * len(plan)], strict=True):
            if res.ok:
                cands += [Candidate(text, t, reason) for text, reason in zip(res.texts, res.finish_reasons,
                                                                           strict=False)]
        out.append(cands)
    return out


def retry_truncated(engine: Engine, prompts: list[list[Message]], candidates: list[list[Candidate]],
                    cfg: PreferenceConfig, seed: int) -> int:
    """Sample the answers cut off by `max_tokens` once more with twice the tokens (same temperature,
    one batched call), replacing them in place. Returns how many were retried."""
    todo = [(i, t, n) for i, cands in enumerate(candidates)
            for t, n in Counter(c.temperature for c in cands if c.finish_reason == "length").items()]
    if not todo:
        return 0
    results = engine.generate([GenerationRequest(messages=tuple(prompts[i]), sampling=SamplingParams(
        n=n, temperature=t, top_p=cfg.top_p, max_tokens=2 * cfg.max_tokens, seed=seed)) for i, t, n in todo],
        progress=True)
    for (i, t, _), res in zip(todo, results, strict=True):
        kept = [c for c in candidates[i] if not (c.finish_reason == "length" and c.temperature == t)]
        if res.ok:
            kept += [Candidate(text, t, reason) for text, reason in zip(res.texts, res.finish_reasons, strict=False)]
        candidates[i][:] = kept
    return sum(n for _, _, n in todo)


def drop_truncated(candidates: list[list[Candidate]]) -> int:
    """Remove answers cut off by `max_tokens` (in place): a truncated answer must never be chosen.
    Returns how many were removed."""
    dropped = 0
    for cands in candidates:
        kept = [c for c in cands if c.finish_reason != "length"]
        dropped += len(cands) - len(kept)
        cands[:] = kept
    return dropped


def judge_reward(scorer: Callable[[list[list[Message]], list[str]], list[float]], prompts: list[list[Message]],
                 candidates: list[list[Candidate]]) -> None:
    """Best-of-k with a trained reward model: each answer's score is its reward."""
    flat = [(p, c) for p, cands in zip(prompts, candidates, strict=True) for c in cands]
    if not flat:
        return
    rewards = scorer([p for p, _ in flat], [c.text for _, c in flat])
    for (_, c), r in zip(flat, rewards, strict=True):
        c.score = round(float(r), 6)
        c.aspects = {"reward": c.score}


def distinct_scored(candidates: list[Candidate]) -> list[Candidate]:
    """Scored, non-empty answers; identical texts cannot be ranked apart, so the first of each is kept."""
    seen: set[str] = set()
    out = []
    for c in candidates:
        if c.score is not None and c.text.strip() and c.text not in seen:
            seen.add(c.text)
            out.append(c)
    return out


def reward_scorer(adapter: Path) -> Callable[[list[list[Message]], list[str]], list[float]]:
    """A trained reward adapter (`train.method: reward`) as a scorer, on the machine's device."""
    from instructforge.train.device import detect
    from instructforge.train.reward import RewardScorer

    return RewardScorer(adapter, detect())


def ranking(candidates: list[Candidate]) -> list[dict]:
    """Every distinct scored answer, best first, with its rank (ties share the better rank: 1, 2, 2, 4)."""
    scored = sorted(distinct_scored(candidates), key=lambda c: -c.score)
    out, rank = [], 0
    for i, c in enumerate(scored):
        if i == 0 or c.score < scored[i - 1].score:
            rank = i + 1
        out.append({"content": c.text, "score": c.score, "rank": rank})
    return out


def ranked_responses(pair: PreferencePair) -> list[dict]:
    """The ranking of a pair's prompt, from the candidates recorded in its provenance."""
    return ranking([Candidate(c["text"], c["temperature"], c["finish_reason"], c["score"])
                    for c in json.loads(pair.meta["candidates"])])


def judge_schema(aspects: list[str]) -> dict:
    grade = {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX}
    return {"type": "object", "properties": {a: grade for a in aspects}, "required": list(aspects),
            "additionalProperties": False}


def judge_messages(request: str, answer: str, aspects: list[str]) -> list[Message]:
    rubric = "\n".join(f"- {a}: {ASPECT_HINTS.get(a, 'grade this aspect')}" for a in aspects)
    keys = ", ".join(f'"{a}": <{SCORE_MIN}-{SCORE_MAX}>' for a in aspects)
    user = (f"Request:\n{request}\n\nAnswer:\n{answer}\n\nAspects:\n{rubric}\n\n"
            f"Reply as {{{keys}}}.")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_grades(text: str, aspects: list[str]) -> dict[str, float] | None:
    """The aspect grades in a judge reply, or None when any is missing or out of range."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    try:
        obj = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    grades = {}
    for a in aspects:
        v = obj.get(a)
        if isinstance(v, bool) or not isinstance(v, int | float) or not SCORE_MIN <= v <= SCORE_MAX:
            return None
        grades[a] = float(v)
    return grades


def judge_llm(engine: Engine, requests: list[str], candidates: list[list[Candidate]],
              cfg: PreferenceConfig, seed: int) -> int:
    """Score every candidate with the rubric (one batched call). Returns the number of failed grades."""
    sampling = SamplingParams(temperature=0.0, max_tokens=cfg.judge_max_tokens, seed=seed)
    structured = StructuredOutput(json_schema=judge_schema(cfg.aspects))
    flat = [(req, c) for req, cands in zip(requests, candidates, strict=True) for c in cands]
    results: list[GenerationResult] = engine.generate(
        [GenerationRequest(messages=tuple(judge_messages(req, c.text, cfg.aspects)), sampling=sampling,
                           structured=structured) for req, c in flat], progress=True)
    failed = 0
    for (_, cand), res in zip(flat, results, strict=True):
        grades = parse_grades(res.text, cfg.aspects) if res.ok else None
        if grades is None:
            failed += 1
            continue
        cand.aspects = grades
        cand.score = sum(grades.values()) / len(grades)
    return failed


def judge_rule(rule: str, references: list[str], candidates: list[list[Candidate]]) -> None:
    """`reference`: ROUGE-L F to the example's own output; `length`: words in a non-empty answer."""
    for ref, cands in zip(references, candidates, strict=True):
        for c in cands:
            if rule == "reference":
                c.score = round(rouge_l(ref, c.text), 6)  # identical to rouge_score's rougeL F
            elif rule == "length":
                c.score = float(len(c.text.split()))
            else:
                raise ValueError(f"unknown rule judge {rule!r}")
            c.aspects = {rule: c.score}


@dataclass
class Binarized:
    chosen: Candidate | None
    rejected: Candidate | None
    reason: str = ""  # why no pair: tie, too_few_answers


def binarize(candidates: list[Candidate], how: str, rng: random.Random) -> Binarized:
    """chosen = first best-scored answer; rejected = lowest-scored or a random strictly worse one."""
    scored = distinct_scored(candidates)
    if len(scored) < 2:
        return Binarized(None, None, "too_few_answers")
    best = max(c.score for c in scored)
    chosen = next(c for c in scored if c.score == best)
    worse = [c for c in scored if c.score < best]
    if not worse:
        return Binarized(None, None, "tie")
    rejected = min(worse, key=lambda c: c.score) if how == "lowest" else rng.choice(worse)
    return Binarized(chosen, rejected)


def make_pair(ex: Example, prompt: str, b: Binarized, candidates: list[Candidate], *, judge: str,
              model: str, cfg: PreferenceConfig, extra_meta: dict[str, str]) -> PreferencePair:
    scores = {"chosen": b.chosen.score, "rejected": b.rejected.score}
    for side, cand in (("chosen", b.chosen), ("rejected", b.rejected)):
        scores.update({f"{side}.{a}": v for a, v in cand.aspects.items()})
    meta = meta_json({
        "example_id": ex.id, "model": model,
        "sampling": {"k": cfg.k, "temperatures": cfg.temperatures, "top_p": cfg.top_p,
                     "max_tokens": cfg.max_tokens, "chosen_temperature": b.chosen.temperature,
                     "rejected_temperature": b.rejected.temperature},
        "rejected_rule": cfg.rejected, "candidates": [c.record() for c in candidates], **extra_meta})
    return PreferencePair(prompt=prompt, chosen=b.chosen.text, rejected=b.rejected.text, scores=scores,
                          judge=judge, meta=meta)
