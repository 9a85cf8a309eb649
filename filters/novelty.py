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
    """`score` is the ROUGE-L F to `nearest_key`: exact whenever it is above the index's
    `exact_above` (the threshold by default); otherwise the best among the candidates looked at,
    a lower bound of the true nearest score (0.0 and no key when there was none)."""

    novel: bool
    nearest_key: str | None
    score: float


class NoveltyIndex:
    """Pool of texts; decides whether a new text's max ROUGE-L F against the pool is <= threshold."""

    def __init__(self, threshold: float = 0.7, exact_above: float | None = None):
        """`exact_above` < threshold widens the candidates so that the nearest neighbour is also
        exact for novel texts scoring above it (similarity histograms); decisions do not change."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold = threshold
        self._bound = min(threshold, threshold if exact_above is None else exact_above) - _SLACK
        self._keys: list[str] = []
        self._tokens: list[list[str]] = []
        self._elements: list[list[str]] = []
        self._sets: list[frozenset[str]] = []  # the elements as a set: C-speed overlap before LCS
        self._df: Counter[str] = Counter()
        self._rank: dict[str, int] = {}  # document frequency when the order was last fixed
        # (element, text length) -> [(record, position in its ordered elements)]. `_short` holds
        # the prefix needed against partners at least as long, `_long` the one against shorter ones.
        self._short: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self._long: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self._max_len = 0
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

    def _alpha(self, m: int, n: int) -> int:
        """Fewest shared tokens texts of m and n tokens need to score above the threshold
        (more than either has when their lengths alone rule it out)."""
        b = self._bound
        if 2 * min(m, n) <= b * (m + n):
            return m + n + 1
        return max(1, math.floor(b * (m + n) / 2) + 1)

    def _shortest_partner(self, n: int) -> int:
        b = self._bound
        return max(1, math.floor(b * n / (2 - b)) + 1)

    def _ordered(self, elements: list[str]) -> list[str]:
        rank = self._rank
        return sorted(elements, key=lambda e: (rank.get(e, 0), e))

    def _add(self, tokens: list[str], key: str) -> None:
        rid = len(self._keys)
        self._keys.append(key)
        self._tokens.append(tokens)
        elements = _distinct(tokens)
        self._elements.append(elements)
        self._sets.append(frozenset(elements))
        self._df.update(elements)
        self._max_len = max(self._max_len, len(tokens))
        if len(self._keys) >= self._next_rebuild:
            self._rebuild()
        else:
            self._index(rid)

    def _index(self, rid: int) -> None:
        ordered = self._ordered(self._elements[rid])
        n = len(ordered)
        if n == 0:
            return
        short = n - self._alpha(n, n) + 1
        long = n - self._alpha(self._shortest_partner(n), n) + 1 if n > 1 else short
        for j, e in enumerate(ordered[:max(short, long)]):
            if j < short:
                self._short.setdefault((e, n), []).append((rid, j))
            if j < long:
                self._long.setdefault((e, n), []).append((rid, j))

    def _rebuild(self) -> None:
        """Fix a new rare-first token order from current frequencies and re-index every prefix."""
        self._rank = dict(self._df)
        self._short, self._long = {}, {}
        for rid in range(len(self._keys)):
            self._index(rid)
        self._next_rebuild = 2 * len(self._keys)

    def _check(self, tokens: list[str]) -> NoveltyDecision:
        m = len(tokens)
        if m == 0:  # F is 0 against an empty text
            return NoveltyDecision(True, None, 0.0)
        elements = _distinct(tokens)
        ordered = self._ordered(elements)
        # Shared tokens counted so far per candidate; -1 once a bound rules it out. A match at
        # position i of ours and j of theirs (both in the global order) allows at most
        # count + min(m - i, n - j) shared tokens; F > t needs alpha(m, n) of them.
        counts: dict[int, int] = {}
        alphas: dict[int, int] = {}
        for n in range(self._shortest_partner(m), self._max_len + 1):
            alpha = alphas[n] = self._alpha(m, n)
            if alpha > min(m, n):
                if n > m:
                    break  # longer partners only get further away
                continue
            postings = self._short if n <= m else self._long
            for i in range(m - alpha + 1):
                hits = postings.get((ordered[i], n))
                if not hits:
                    continue
                rest_m = m - i
                for rid, j in hits:
                    c = counts.get(rid, 0)
                    if c >= 0:
                        rest = n - j
                        rest = min(rest, rest_m)
                        counts[rid] = c + 1 if c + rest >= alpha else -1
        best_score, best_rid = 0.0, -1
        masks = token_masks(tokens)
        mine = frozenset(elements)
        sets = self._sets
        for rid in sorted(r for r, c in counts.items() if c > 0):  # ties go to the earliest text
            other = self._tokens[rid]
            if len(mine & sets[rid]) < alphas[len(other)]:  # LCS <= shared tokens
                continue
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
