"""Quality heuristics: cheap per-row rules, each switchable in `HeuristicsConfig`.

Rules, in the order they are checked (a row is removed by the first it fails): word-count bounds
per field, empty output, output that only repeats the instruction or input, Gopher-style
repetition (share of the output's characters covered by its most frequent word n-gram, share of
duplicated lines), share of non-letter characters, refusal/boilerplate phrases, unbalanced code
fences, language (fastText lid.176, filters/langid.py, whose model ships inside a package).

`verdicts` judges a whole batch: character classes and word counts come from one compiled pass over
each column's UTF-8 bytes (with Python's `str` meanings: `split()` words, `isspace`, `isalpha`,
`isalnum`), the other rules are Arrow compute expressions, and only the rows a rule removes get
their evidence spelled out in Python. The repetition rules count word n-grams per row, only
for outputs long enough for them; language ID labels the batch's texts in one native call.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from instructforge.filters import langid
from instructforge.filters.base import Filter, Rejections, fmt
from instructforge.filters.config import TEXT_FIELDS, HeuristicsConfig
from instructforge.filters.text import _string_buffer

Verdict = tuple[str, dict[str, str]] | None
# the characters of Python's str.isspace(), for Arrow's regexes (RE2's \s is ASCII only)
_SPACE = (r"\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f} \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
          r"\x{205f}\x{3000}")
_NON_WORD = r"[^\p{L}\p{N}]+"  # Python's [\W_]+ (\w is str.isalnum() and "_")


def text_stats(texts: pa.Array) -> np.ndarray:
    """(rows x 5) counts per text: characters, str.split() words, isspace, isalpha and isalnum
    characters, from one compiled pass over the UTF-8 bytes."""
    data, offsets = _string_buffer(texts)
    out = np.zeros((len(offsets) - 1, 5), np.int64)
    ascii_only = not len(data) or int(data.max()) < 0x80
    _count_classes(data, offsets, *(_ASCII_CLASSES if ascii_only else _unicode_classes()), out)
    return out


def word_counts(texts: pa.Array) -> np.ndarray:
    """len(text.split()) of each text."""
    return text_stats(texts)[:, _WORDS]


@lru_cache(maxsize=1)
def _unicode_classes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """str.isspace, isalpha, isalnum of every code point (built once, about a second)."""
    chars = [chr(c) for c in range(0x110000)]
    return tuple(np.fromiter((getattr(c, test)() for c in chars), bool, len(chars))
                 for test in ("isspace", "isalpha", "isalnum"))


_ASCII_CLASSES = tuple(np.array([getattr(chr(c), test)() for c in range(128)], bool)
                       for test in ("isspace", "isalpha", "isalnum"))
_CHARS, _WORDS, _SPACES, _LETTERS, _ALNUMS = range(5)


@njit(nogil=True, cache=True)
def _count_classes(data, offsets, space, alpha, alnum, out):
    for d in range(len(offsets) - 1):
        i, end = offsets[d], offsets[d + 1]
        chars = words = spaces = letters = alnums = 0
        inside = False
        while i < end:
            b = np.int64(data[i])
            if b < 0x80:
                cp, i = b, i + 1
            elif b < 0xE0:
                cp, i = (b & 0x1F) << 6 | (np.int64(data[i + 1]) & 0x3F), i + 2
            elif b < 0xF0:
                cp = (b & 0x0F) << 12 | (np.int64(data[i + 1]) & 0x3F) << 6 | (np.int64(data[i + 2]) & 0x3F)
                i += 3
            else:
                cp = ((b & 0x07) << 18 | (np.int64(data[i + 1]) & 0x3F) << 12
                      | (np.int64(data[i + 2]) & 0x3F) << 6 | (np.int64(data[i + 3]) & 0x3F))
                i += 4
            chars += 1
            if space[cp]:
                spaces += 1
                inside = False
            else:
                words += not inside
                inside = True
                letters += alpha[cp]
                alnums += alnum[cp]
        out[d, 0], out[d, 1], out[d, 2], out[d, 3], out[d, 4] = chars, words, spaces, letters, alnums


def _norm(texts: pa.Array) -> pa.Array:
    """Lowercased, runs of non-alphanumerics (and "_") as one space, trimmed (for the echo rule)."""
    return pc.utf8_trim(pc.replace_substring_regex(pc.utf8_lower(texts), _NON_WORD, " "), " ")


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


def non_alpha_shares(texts: pa.Array, stats: np.ndarray | None = None) -> np.ndarray:
    """Share of non-letters among the non-space characters of each text (0 when there are none)."""
    stats = text_stats(texts) if stats is None else stats
    solid = stats[:, _CHARS] - stats[:, _SPACES]
    return np.divide(solid - stats[:, _LETTERS], solid, out=np.zeros(len(solid)), where=solid > 0)


def repetition(output: str, cfg: HeuristicsConfig) -> Verdict:
    """The Gopher repetition rules on one output (the caller checks that it is long enough)."""
    words = output.lower().split()
    for n, limit in sorted((cfg.top_ngram_share or {}).items()):
        share = top_ngram_share(words, n)
        if share > limit:
            return f"repetitive output (top {n}-gram)", {
                "rule": "top_ngram_share", "n": str(n), "share": fmt(share), "max": fmt(limit)}
    limit = cfg.duplicate_line_share
    if limit is not None:
        share = duplicate_line_share(output)
        if share > limit:
            return "repetitive output (duplicated lines)", {
                "rule": "duplicate_line_share", "share": fmt(share), "max": fmt(limit)}
    return None


def refusal_pattern(cfg: HeuristicsConfig) -> re.Pattern | None:
    phrases = [p.lower().replace("\u2019", "'") for p in cfg.refusal_phrases or []]
    return re.compile("|".join(map(re.escape, phrases))) if phrases else None


def verdicts(batch: pa.RecordBatch | pa.Table, cfg: HeuristicsConfig, refusal: re.Pattern | None) -> Rejections:
    """{row: (reason, evidence)} for every row of the batch that fails a rule (the first it fails)."""
    cols = {f: pc.fill_null(batch.column(f), "") for f in TEXT_FIELDS}
    cols = {f: c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for f, c in cols.items()}
    out: Rejections = {}
    open_ = np.ones(batch.num_rows, dtype=bool)  # rows no rule has removed yet

    def settle(failed: np.ndarray, verdict: Any) -> None:
        for i in np.flatnonzero(failed & open_).tolist():
            out[i] = verdict(i)
        open_[failed] = False

    stats = {f: text_stats(cols[f]) for f in TEXT_FIELDS}
    words = {f: stats[f][:, _WORDS] for f in TEXT_FIELDS}
    for field, low in cfg.min_words.items():
        settle(words[field] < low, lambda i, f=field, lo=low: (f"{f} too short", {
            "rule": "min_words", "field": f, "words": str(words[f][i]), "min": str(lo)}))
    for field, high in cfg.max_words.items():
        settle(words[field] > high, lambda i, f=field, hi=high: (f"{f} too long", {
            "rule": "max_words", "field": f, "words": str(words[f][i]), "max": str(hi)}))
    if cfg.empty_output:
        settle(words["output"] == 0, lambda i: ("empty output", {"rule": "empty_output"}))
    if cfg.echo:
        said = np.flatnonzero(open_ & (words["output"] > 0))
        norm = _norm(cols["output"].take(pa.array(said, pa.int64())))
        size = np.asarray(pc.utf8_length(norm), dtype=np.int64)
        for field in ("instruction", "input"):
            # norm(x) keeps x's alphanumerics and is no longer than x: only such rows can be equal
            fit = (size > 0) & (stats[field][said, _ALNUMS] <= size) & (size <= stats[field][said, _CHARS])
            rows = said[fit]
            same = np.asarray(pc.equal(norm.filter(pa.array(fit)),
                                       _norm(cols[field].take(pa.array(rows, pa.int64())))), dtype=bool)
            settle(np.isin(np.arange(batch.num_rows), rows[same]),
                   lambda i, f=field: (f"output repeats the {f}", {"rule": "echo", "field": f}))
    if cfg.top_ngram_share or cfg.duplicate_line_share is not None:
        long = np.flatnonzero(open_ & (words["output"] >= cfg.repetition_min_words))
        texts = cols["output"].take(pa.array(long, pa.int64())).to_pylist()
        found = {i: v for i, text in zip(long.tolist(), texts, strict=True) if (v := repetition(text, cfg))}
        settle(np.isin(np.arange(batch.num_rows), list(found)), found.__getitem__)
    if cfg.max_non_alpha is not None:
        for field in ("instruction", "output"):
            share = non_alpha_shares(cols[field], stats[field])
            long_enough = stats[field][:, _CHARS] >= cfg.non_alpha_min_chars
            settle(long_enough & (share > cfg.max_non_alpha), lambda i, f=field, s=share: (
                f"{f} mostly non-letters", {"rule": "max_non_alpha", "field": f, "share": fmt(float(s[i])),
                                             "max": fmt(cfg.max_non_alpha)}))
    if refusal is not None:
        said = pc.utf8_trim(pc.replace_substring_regex(
            pc.replace_substring(pc.utf8_lower(cols["output"]), "\u2019", "'"), f"[{_SPACE}]+", " "), " ")
        hits = np.asarray(pc.match_substring_regex(said, refusal.pattern), dtype=bool)
        settle(hits, lambda i: ("refusal or boilerplate", {
            "rule": "refusal_phrases", "phrase": refusal.search(said[i].as_py()).group(0)}))
    if cfg.code_fences:
        for field in TEXT_FIELDS:
            odd = np.asarray(pc.count_substring(cols[field], "```"), dtype=np.int64) % 2 == 1
            settle(odd, lambda i, f=field: ("unbalanced code fence", {"rule": "code_fences", "field": f}))
    if cfg.languages:
        texts = pc.binary_join_element_wise(cols["instruction"], cols["output"], "\n")
        length = stats["instruction"][:, _CHARS] + 1 + stats["output"][:, _CHARS]
        rows = np.flatnonzero(open_ & (length >= cfg.language_min_chars))
        letters = stats["instruction"][rows, _LETTERS] + stats["output"][rows, _LETTERS]
        found = {int(rows[k]): (lang, p) for k, lang, p in langid.foreign(
            texts.take(pa.array(rows, pa.int64())).to_pylist(), cfg.languages, letters=letters,
            min_letters=cfg.language_min_letters, min_confidence=cfg.language_min_confidence)}
        settle(np.isin(np.arange(batch.num_rows), list(found)), lambda i: (f"language {found[i][0]}", {
            "rule": "languages", "language": found[i][0], "probability": fmt(found[i][1]),
            "allowed": ",".join(cfg.languages)}))
    return out


class Heuristics(Filter):
    def __init__(self, cfg: HeuristicsConfig):
        self.cfg, self.name = cfg, cfg.label
        self._refusal = refusal_pattern(cfg)

    def apply(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Rejections]:
        return batch, verdicts(batch, self.cfg, self._refusal)

    def check(self, row: dict[str, str]) -> Verdict:
        """The first rule this row fails, as (reason, evidence), or None when it passes all."""
        return verdicts(pa.table({f: [row.get(f) or ""] for f in TEXT_FIELDS}), self.cfg, self._refusal).get(0)

    def tally(self, evidence: list[dict[str, str]]) -> dict[str, Any]:
        return {"removed_by_rule": Counter(e["rule"] for e in evidence)} if evidence else {}
