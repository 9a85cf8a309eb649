"""Quality heuristics: cheap per-row rules, each switchable in `HeuristicsConfig`.

Rules, in the order they are checked (a row is removed by the first it fails): word-count bounds
per field, empty output, output that only repeats the instruction or input, Gopher-style
repetition (share of the output's characters covered by its most frequent word n-gram, share of
duplicated lines), share of non-letter characters, refusal/boilerplate phrases, unbalanced code
fences, language (langid, whose model ships inside the package).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

import pyarrow as pa

from instructforge.filters.base import Filter, Rejections, fmt
from instructforge.filters.config import TEXT_FIELDS, HeuristicsConfig

_NON_WORD = re.compile(r"[\W_]+")
Verdict = tuple[str, dict[str, str]] | None


@lru_cache(maxsize=1)
def _language_identifier() -> Any:
    """langid's bundled model, loaded once per process (it takes seconds)."""
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def _norm(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def top_ngram_share(words: list[str], n: int) -> float:
    """Share of the words' characters inside occurrences of the most frequent n-gram (Gopher)."""
    if len(words) < n:
        return 0.0
    counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, count * sum(len(w) for w in gram) / sum(len(w) for w in words))


def duplicate_line_share(text: str) -> float:
    """Share of the non-blank lines that repeat an earlier line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0


def non_alpha_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(not c.isalpha() for c in chars) / len(chars) if chars else 0.0


class Heuristics(Filter):
    def __init__(self, cfg: HeuristicsConfig):
        self.cfg, self.name = cfg, cfg.label
        phrases = [p.lower().replace("\u2019", "'") for p in cfg.refusal_phrases or []]
        self._refusal = re.compile("|".join(map(re.escape, phrases))) if phrases else None

    def apply(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rejections]:
        columns = [batch.column(f).to_pylist() for f in TEXT_FIELDS]
        out: Rejections = {}
        for i, values in enumerate(zip(*columns, strict=True)):
            verdict = self.check(dict(zip(TEXT_FIELDS, (v or "" for v in values), strict=True)))
            if verdict:
                out[i] = verdict
        return batch, out

    def check(self, row: dict[str, str]) -> Verdict:
        """The first rule this row fails, as (reason, evidence), or None when it passes all."""
        return (self._lengths(row) or self._empty_or_echo(row) or self._repetition(row["output"])
                or self._non_alpha(row) or self._refusal_phrase(row["output"]) or self._fences(row)
                or self._language(row))

    def _lengths(self, row: dict[str, str]) -> Verdict:
        for field, low in self.cfg.min_words.items():
            n = len(row[field].split())
            if n < low:
                return f"{field} too short", {"rule": "min_words", "field": field, "words": str(n), "min": str(low)}
        for field, high in self.cfg.max_words.items():
            n = len(row[field].split())
            if n > high:
                return f"{field} too long", {"rule": "max_words", "field": field, "words": str(n), "max": str(high)}
        return None

    def _empty_or_echo(self, row: dict[str, str]) -> Verdict:
        if self.cfg.empty_output and not row["output"].strip():
            return "empty output", {"rule": "empty_output"}
        if self.cfg.echo and row["output"].strip():
            out = _norm(row["output"])
            for field in ("instruction", "input"):
                if out and out == _norm(row[field]):
                    return f"output repeats the {field}", {"rule": "echo", "field": field}
        return None

    def _repetition(self, output: str) -> Verdict:
        words = output.lower().split()
        if len(words) < self.cfg.repetition_min_words:
            return None
        for n, limit in sorted((self.cfg.top_ngram_share or {}).items()):
            share = top_ngram_share(words, n)
            if share > limit:
                return f"repetitive output (top {n}-gram)", {
                    "rule": "top_ngram_share", "n": str(n), "share": fmt(share), "max": fmt(limit)}
        limit = self.cfg.duplicate_line_share
        if limit is not None:
            share = duplicate_line_share(output)
            if share > limit:
                return "repetitive output (duplicated lines)", {
                    "rule": "duplicate_line_share", "share": fmt(share), "max": fmt(limit)}
        return None

    def _non_alpha(self, row: dict[str, str]) -> Verdict:
        if self.cfg.max_non_alpha is None:
            return None
        for field in ("instruction", "output"):
            text = row[field]
            if len(text) >= self.cfg.non_alpha_min_chars:
                share = non_alpha_share(text)
                if share > self.cfg.max_non_alpha:
                    return f"{field} mostly non-letters", {
                        "rule": "max_non_alpha", "field": field, "share": fmt(share),
                        "max": fmt(self.cfg.max_non_alpha)}
        return None

    def _refusal_phrase(self, output: str) -> Verdict:
        if self._refusal is None:
            return None
        hit = self._refusal.search(" ".join(output.lower().replace("\u2019", "'").split()))
        if hit:
            return "refusal or boilerplate", {"rule": "refusal_phrases", "phrase": hit.group(0)}
        return None

    def _fences(self, row: dict[str, str]) -> Verdict:
        if self.cfg.code_fences:
            for field in TEXT_FIELDS:
                if row[field].count("```") % 2:
                    return "unbalanced code fence", {"rule": "code_fences", "field": field}
        return None

    def _language(self, row: dict[str, str]) -> Verdict:
        if not self.cfg.languages:
            return None
        text = f"{row['instruction']}\n{row['output']}"
        if len(text) < self.cfg.language_min_chars:
            return None
        lang, prob = _language_identifier().classify(text)
        if lang not in self.cfg.languages:
            return f"language {lang}", {"rule": "languages", "language": lang, "probability": fmt(prob),
                                        "allowed": ",".join(self.cfg.languages)}
        return None

    def tally(self, evidence: list[dict[str, str]]) -> dict[str, Any]:
        return {"removed_by_rule": Counter(e["rule"] for e in evidence)} if evidence else {}
