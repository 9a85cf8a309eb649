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
from itertools import chain

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_SLACK = 1e-9  # candidate bound is taken at threshold - slack: float rounding cannot hide a pair
_FIRST_REBUILD = 64
_FIELD = (1 << 20) - 1  # a posting packs a record number and a position (20 bits)


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
        self._position: dict[str, int] = {}  # rank in the order fixed at the last rebuild
        # element -> text length -> postings `record << 20 | position in its ordered elements`.
        # `_short` holds the prefix needed against partners at least as long, `_long` the one
        # against shorter ones.
        self._short: dict[str, dict[int, list[int]]] = {}
        self._long: dict[str, dict[int, list[int]]] = {}
        self._max_len = 0
        self._bounds_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._next_rebuild = _FIRST_REBUILD
        self.candidates_checked = 0  # exact LCS computations, for benchmarks

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, text: str, key: str) -> None:
        """Index a pool text unconditionally (seed instructions)."""
        tokens = rouge_tokens(text)
        self._add(tokens, _distinct(tokens), key)

    def check(self, text: str) -> NoveltyDecision:
        """Decide without indexing."""
        tokens = rouge_tokens(text)
        return self._check(tokens, _distinct(tokens))

    def add_if_novel(self, text: str, key: str) -> NoveltyDecision:
        """Decide, and index the text when it is novel."""
        tokens = rouge_tokens(text)
        elements = _distinct(tokens)
        decision = self._check(tokens, elements)
        if decision.novel:
            self._add(tokens, elements, key)
        return decision

    # -- internals -----------------------------------------------------------------------------

    def _alpha(self, m: int, n: int) -> int:
        """Fewest shared tokens texts of m and n tokens need to score above the threshold
        (more than either has when their lengths alone rule it out)."""
        b = self._bound
        if 2 * min(m, n) <= b * (m + n):
            return m + n + 1
        return max(1, math.floor(b * (m + n) / 2) + 1)

    def _bounds(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """For a text of m tokens, indexed by partner length n: alpha(m, n), and how many of its first
        ordered elements can hold a match (0 for lengths that cannot score above the threshold)."""
        key = (m, self._max_len)
        if key not in self._bounds_cache:
            alphas = np.zeros(self._max_len + 1, np.int64)
            prefix = np.zeros(self._max_len + 1, np.int64)
            for n in range(self._shortest_partner(m), self._max_len + 1):
                alpha = alphas[n] = self._alpha(m, n)
                if alpha > min(m, n):
                    if n > m:
                        break  # longer partners only get further away
                    continue
                prefix[n] = m - alpha + 1
            self._bounds_cache[key] = alphas, prefix
        return self._bounds_cache[key]

    def _shortest_partner(self, n: int) -> int:
        b = self._bound
        return max(1, math.floor(b * n / (2 - b)) + 1)

    def _ordered(self, elements: list[str]) -> list[str]:
        """Elements in the global order: unseen at the last rebuild first (by spelling), then the
        rest by (document frequency, spelling) then, as `_position` numbers them."""
        pos = self._position
        unseen = sorted(e for e in elements if e not in pos)
        return unseen + sorted((e for e in elements if e in pos), key=pos.__getitem__)

    def _add(self, tokens: list[str], elements: list[str], key: str) -> None:
        rid = len(self._keys)
        if len(tokens) > _FIELD:
            raise ValueError(f"the novelty index takes texts of up to {_FIELD} tokens")
        self._keys.append(key)
        self._tokens.append(tokens)
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
            posting = rid << 20 | j
            if j < short:
                self._short.setdefault(e, {}).setdefault(n, []).append(posting)
            if j < long:
                self._long.setdefault(e, {}).setdefault(n, []).append(posting)

    def _rebuild(self) -> None:
        """Fix a new rare-first token order from current frequencies and re-index every prefix."""
        ranked = sorted(self._df.items(), key=lambda kv: (kv[1], kv[0]))
        self._position = {e: i for i, (e, _) in enumerate(ranked)}
        self._short, self._long = {}, {}
        for rid in range(len(self._keys)):
            self._index(rid)
        self._next_rebuild = 2 * len(self._keys)

    def _candidates(self, ordered: list[str], m: int, alphas: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        """Records that can share alpha(m, n) tokens with ours, ascending, from the prefix postings.

        A match at position i of ours and j of theirs (both in the global order) after k earlier
        matches allows at most k + min(m - i, n - j) shared tokens; a record stays a candidate only
        if that reaches alpha(m, n) at every one of its matches (all hits gathered, then judged with
        numpy per record).
        """
        pre = prefix.tolist()
        top = max(pre)
        lists: list[list[int]] = []
        where: list[tuple[int, int]] = []  # (i, n) of each list
        for i, e in enumerate(ordered[:top]):
            for postings, longer in ((self._short.get(e), False), (self._long.get(e), True)):
                if postings:
                    for n, hits in postings.items():
                        if (n > m) == longer and pre[n] > i:
                            lists.append(hits)
                            where.append((i, n))
        if not lists:
            return np.zeros(0, np.int64)
        sizes = [len(h) for h in lists]
        flat = np.fromiter(chain.from_iterable(lists), np.int64, sum(sizes))
        rid, j = flat >> 20, flat & _FIELD
        at, n = np.repeat(np.array(where, np.int64).reshape(-1, 2), sizes, axis=0).T
        order = np.lexsort((at, rid))
        rid, at, j, n = rid[order], at[order], j[order], n[order]
        starts = np.flatnonzero(np.concatenate([[True], rid[1:] != rid[:-1]]))
        k = np.arange(len(rid)) - np.repeat(starts, np.diff(np.append(starts, len(rid))))
        ok = k + np.minimum(n - j, m - at) >= alphas[n]
        alive = np.logical_and.reduceat(ok, starts)
        return rid[starts][alive]

    def _check(self, tokens: list[str], elements: list[str]) -> NoveltyDecision:
        m = len(tokens)
        if m == 0:  # F is 0 against an empty text
            return NoveltyDecision(True, None, 0.0)
        ordered = self._ordered(elements)
        alphas, prefix = self._bounds(m)
        candidates = self._candidates(ordered, m, alphas, prefix)
        best_score, best_rid = 0.0, -1
        masks = token_masks(tokens)
        mine = frozenset(elements)
        sets = self._sets
        needed = alphas.tolist()
        for rid in candidates.tolist():  # ascending: ties go to the earliest text
            other = self._tokens[rid]
            if len(mine & sets[rid]) < needed[len(other)]:  # LCS <= shared tokens
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
