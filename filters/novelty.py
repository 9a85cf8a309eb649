"""Exact ROUGE-L novelty at sub-quadratic cost.

Self-Instruct keeps a new instruction only if its ROUGE-L F-measure against every instruction in
the pool is <= 0.7. Comparing with the whole pool is quadratic; this index makes the same
decisions while computing the exact score only for a few candidates:

- ROUGE-L F = 2 L / (m + n) for an LCS of length L between texts of m and n tokens, and L is at
  most the size of the multiset intersection of the two token lists. So F > t needs at least
  `alpha` shared tokens (and similar lengths), where alpha depends only on m, n and t.
- Prefix filtering: with every text's tokens (made distinct by numbering repeats: "the#0",
  "the#1") sorted in one global order, two texts sharing >= alpha tokens must share a token
  among the first m - alpha + 1 of one and the first n - alpha + 1 of the other. Only those
  prefixes go into the inverted index, and the order puts rare tokens first, so posting lists
  stay short. The order is recomputed from document frequencies each time the pool doubles
  (tokens unseen at that point sort first); any fixed total order keeps the guarantee.
- Candidates get the exact LCS with a bit-parallel algorithm (one big-int step per token) and
  the exact floating-point F-measure formula of `rouge_score`, so the decision is bit-identical.

The candidate bound is computed with a small slack below the threshold, so float rounding in
the reference can never make it flag a pair this index did not look at.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_SLACK = 1e-9  # candidate bound is taken at threshold - slack: float rounding cannot hide a pair
_FIRST_REBUILD = 64


def rouge_tokens(text: str) -> list[str]:
    """`rouge_score`'s default tokenization: lowercase, non-alphanumerics to spaces, no stemming."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def rouge_l_fmeasure(lcs: int, m: int, n: int) -> float:
    """The F-measure exactly as `rouge_score` computes it (same float operations; symmetric)."""
    if lcs == 0:
        return 0.0
    precision, recall = lcs / n, lcs / m
    return 2 * precision * recall / (precision + recall)


def token_masks(tokens: list[str]) -> dict[str, int]:
    """Bit mask of the positions of each token, for `lcs_length`."""
    masks: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def lcs_length(masks: dict[str, int], m: int, other: list[str]) -> int:
    """Length of the longest common subsequence of a text of m tokens (as `token_masks`) and `other`.

    Bit-parallel (Allison-Dix / Hyyro): each zero bit of v marks one LCS step found so far.
    """
    full = (1 << m) - 1
    v = full
    for tok in other:
        u = v & masks.get(tok, 0)
        if u:
            v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F-measure of two texts, identical to `RougeScorer(['rougeL']).score(a, b)`."""
    ta, tb = rouge_tokens(a), rouge_tokens(b)
    if not ta or not tb:
        return 0.0
    return rouge_l_fmeasure(lcs_length(token_masks(ta), len(ta), tb), len(ta), len(tb))


@dataclass(frozen=True)
class NoveltyDecision:
    """`score` is the ROUGE-L F to `nearest_key`: exact whenever it is above the threshold;
    otherwise the best among the candidates looked at (a lower bound of the true nearest score)."""

    novel: bool
    nearest_key: str | None
    score: float


class NoveltyIndex:
    """Pool of texts; decides whether a new text's max ROUGE-L F against the pool is <= threshold."""

    def __init__(self, threshold: float = 0.7):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold = threshold
        self._bound = threshold - _SLACK
        self._keys: list[str] = []
        self._tokens: list[list[str]] = []
        self._elements: list[list[str]] = []
        self._df: Counter[str] = Counter()
        self._rank: dict[str, int] = {}  # document frequency when the order was last fixed
        self._postings: dict[str, list[tuple[int, int, int]]] = {}  # element -> (record, position, length)
        self._next_rebuild = _FIRST_REBUILD
        self.candidates_checked = 0  # exact LCS computations, for benchmarks

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, text: str, key: str) -> None:
        """Index a pool text unconditionally (seed instructions)."""
        self._add(rouge_tokens(text), key)

    def check(self, text: str) -> NoveltyDecision:
        """Decide without indexing."""
        return self._check(rouge_tokens(text))

    def add_if_novel(self, text: str, key: str) -> NoveltyDecision:
        """Decide, and index the text when it is novel."""
        tokens = rouge_tokens(text)
        decision = self._check(tokens)
        if decision.novel:
            self._add(tokens, key)
        return decision

    # -- internals -----------------------------------------------------------------------------

    def _min_overlap(self, m: int) -> int:
        """Fewest shared tokens a text of m tokens needs with any partner to score above threshold."""
        t = self._bound
        n_min = math.floor(t * m / (2 - t)) + 1  # shorter partners cannot reach F > t
        return max(1, math.floor(t * (m + n_min) / 2) + 1)

    def _prefix(self, elements: list[str]) -> list[str]:
        rank = self._rank
        ordered = sorted(elements, key=lambda e: (rank.get(e, 0), e))
        return ordered[: len(elements) - self._min_overlap(len(elements)) + 1]

    def _add(self, tokens: list[str], key: str) -> None:
        elements = _distinct(tokens)
        rid = len(self._keys)
        self._keys.append(key)
        self._tokens.append(tokens)
        self._elements.append(elements)
        self._df.update(elements)
        if len(self._keys) >= self._next_rebuild:
            self._rebuild()
        else:
            self._index(rid)

    def _index(self, rid: int) -> None:
        elements = self._elements[rid]
        n = len(elements)
        for j, e in enumerate(self._prefix(elements)):
            self._postings.setdefault(e, []).append((rid, j, n))

    def _rebuild(self) -> None:
        """Fix a new rare-first token order from current frequencies and re-index every prefix."""
        self._rank = dict(self._df)
        self._postings = {}
        for rid in range(len(self._keys)):
            self._index(rid)
        self._next_rebuild = 2 * len(self._keys)

    def _check(self, tokens: list[str]) -> NoveltyDecision:
        m = len(tokens)
        if m == 0 or self.threshold >= 1.0:  # F is 0 against an empty text and never exceeds 1
            return NoveltyDecision(True, None, 0.0)
        bound = self._bound
        # Shared tokens counted so far per candidate (prefix matches); -1 once a bound rules it out.
        # A match at position i of ours and j of theirs (both in the global order) allows at most
        # count + 1 + min(m - i - 1, n - j - 1) shared tokens; F > t needs alpha(m, n) of them.
        counts: dict[int, int] = {}
        alphas: dict[int, int] = {}
        postings = self._postings
        for i, e in enumerate(self._prefix(_distinct(tokens))):
            hits = postings.get(e)
            if not hits:
                continue
            rest_m = m - i
            for rid, j, n in hits:
                c = counts.get(rid, 0)
                if c < 0:
                    continue
                alpha = alphas.get(n)
                if alpha is None:
                    alpha = alphas[n] = (math.floor(bound * (m + n) / 2) + 1
                                         if 2 * min(m, n) > bound * (m + n) else m + n + 1)
                rest = min(n - j, rest_m)
                counts[rid] = c + 1 if c + rest >= alpha else -1
        best_score, best_rid = 0.0, -1
        masks = None
        for rid in sorted(counts):  # ascending: ties go to the earliest indexed text
            if counts[rid] < 0:
                continue
            if masks is None:
                masks = token_masks(tokens)
            other = self._tokens[rid]
            self.candidates_checked += 1
            score = rouge_l_fmeasure(lcs_length(masks, m, other), m, len(other))
            if score > best_score:
                best_score, best_rid = score, rid
        nearest = self._keys[best_rid] if best_rid >= 0 else None
        return NoveltyDecision(best_score <= self.threshold, nearest, best_score)


def _distinct(tokens: list[str]) -> list[str]:
    """Tokens numbered by occurrence ("the#0", "the#1"): multiset overlap becomes set overlap."""
    seen: dict[str, int] = {}
    out = []
    for tok in tokens:
        k = seen.get(tok, 0)
        seen[tok] = k + 1
        out.append(f"{tok}#{k}")
    return out
