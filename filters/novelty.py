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
- Candidates get the exact LCS with a bit-parallel algorithm (one machine-word step per token and
  64 positions) and the exact floating-point F-measure formula of `rouge_score`, so the decision
  is bit-identical.
- Tokens and elements are integer ids, postings linked lists in flat arrays, and gathering,
  judging and the LCS run in one compiled (numba) pass per text: no Python loop per posting.

The candidate bound is computed with a small slack below the threshold, so float rounding in
the reference can never make it flag a pair this index did not look at.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from numba import njit

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_SLACK = 1e-9  # candidate bound is taken at threshold - slack: float rounding cannot hide a pair
_FIRST_REBUILD = 64
_SEEN = 1 << 40  # order key of elements ranked at the last rebuild: after every unranked id


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
        self._first: dict[str, int] = {}  # token -> element id of its first occurrence (its token id)
        self._repeats: dict[tuple[int, int], int] = {}  # (token id, occurrence k >= 1) -> element id
        self._n_elements = 0
        # per element (grown by doubling): order key (its id until ranked, _SEEN + rank after a
        # rebuild), document frequency, first posting (-1: none)
        self._key = np.zeros(0, np.int64)
        self._df = np.zeros(0, np.int64)
        self._head = np.zeros(0, np.int64)
        # postings: record, its length << 32 | position in its ordered elements, next posting of the
        # same element (`_compact` lays each element's chain out contiguously, for the cache)
        self._p_rid = self._p_pos = self._p_next = np.zeros(0, np.int64)
        self._n_postings = self._n_compacted = 0
        # records: length, prefix against partners at least as long / shorter, token ids (flat)
        self._len = self._short = self._long = self._start = np.zeros(0, np.int64)
        self._tok = self._elem = np.zeros(0, np.int64)
        self._n_tok = 0
        self._scratch = _Scratch()
        self._max_len = 0
        self._bounds_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._next_rebuild = _FIRST_REBUILD
        self.candidates_checked = 0  # exact LCS computations, for benchmarks

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, text: str, key: str) -> None:
        """Index a pool text unconditionally (seed instructions)."""
        self._add(*self._encode(rouge_tokens(text), create=True), key)

    def check(self, text: str) -> NoveltyDecision:
        """Decide without indexing."""
        return self._check(*self._encode(rouge_tokens(text), create=False))

    def add_if_novel(self, text: str, key: str) -> NoveltyDecision:
        """Decide, and index the text when it is novel."""
        tids, eids = self._encode(rouge_tokens(text), create=True)
        decision = self._check(tids, eids)
        if decision.novel:
            self._add(tids, eids, key)
        return decision

    # -- internals -----------------------------------------------------------------------------

    def _encode(self, tokens: list[str], create: bool) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and element ids (a token's k-th occurrence is its own element, so multiset
        overlap becomes set overlap; a token's id is its first occurrence's element id); -1 for what
        the pool has never held when not `create`."""
        first, repeats = self._first, self._repeats
        tids = [first.get(tok, -1) for tok in tokens]
        if create and -1 in tids:
            for i, tok in enumerate(tokens):
                if tids[i] < 0:
                    tids[i] = first.get(tok, -1)
                    if tids[i] < 0:
                        tids[i] = first[tok] = self._new_element()
        eids = list(tids)
        if len(set(tids)) < len(tids):  # repeated tokens: their later occurrences are other elements
            seen: dict[int, int] = {}
            for i, tid in enumerate(tids):
                k = seen[tid] = seen.get(tid, -1) + 1
                if k and tid >= 0:
                    eid = repeats.get((tid, k), -1)
                    if eid < 0 and create:
                        eid = repeats[(tid, k)] = self._new_element()
                    eids[i] = eid
        if create:
            self._grow_elements()
        return np.array(tids, np.int64), np.array(eids, np.int64)

    def _new_element(self) -> int:
        self._n_elements += 1
        return self._n_elements - 1

    def _grow_elements(self) -> None:
        have, need = len(self._key), self._n_elements
        if need > have:
            size = max(need, 2 * have, 1024)
            self._key = np.concatenate([self._key, np.arange(have, size, dtype=np.int64)])
            self._df = _grown(self._df, size, 0)
            self._head = _grown(self._head, size, -1)
            self._scratch.vocab(size)  # token ids are element ids

    def _alpha(self, m: int, n: int) -> int:
        """Fewest shared tokens texts of m and n tokens need to score above the threshold
        (more than either has when their lengths alone rule it out)."""
        b = self._bound
        if 2 * min(m, n) <= b * (m + n):
            return m + n + 1
        return max(1, math.floor(b * (m + n) / 2) + 1)

    def _bounds(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a text of m tokens, indexed by partner length n: alpha(m, n), how many of its first
        ordered elements can hold a match (0 for lengths that cannot score above the threshold), and
        how many of the partner's are indexed against it (its prefix against longer or shorter texts)."""
        key = (m, self._max_len)
        if key not in self._bounds_cache:
            alphas = np.zeros(self._max_len + 1, np.int64)
            prefix = np.zeros(self._max_len + 1, np.int64)
            indexed = np.zeros(self._max_len + 1, np.int64)
            for n in range(self._shortest_partner(m), self._max_len + 1):
                alpha = alphas[n] = self._alpha(m, n)
                if alpha > min(m, n):
                    if n > m:
                        break  # longer partners only get further away
                    continue
                prefix[n] = m - alpha + 1
                indexed[n] = self._prefixes(n)[n > m]
            self._bounds_cache[key] = alphas, prefix, indexed
        return self._bounds_cache[key]

    def _prefixes(self, n: int) -> tuple[int, int]:
        """How many of a text's n ordered elements are indexed against partners at least as long,
        and against shorter ones."""
        short = n - self._alpha(n, n) + 1
        return short, n - self._alpha(self._shortest_partner(n), n) + 1 if n > 1 else short

    def _shortest_partner(self, n: int) -> int:
        b = self._bound
        return max(1, math.floor(b * n / (2 - b)) + 1)

    def _add(self, tids: np.ndarray, eids: np.ndarray, key: str) -> None:
        rid, n = len(self._keys), len(tids)
        self._keys.append(key)
        if rid == len(self._len):
            size = max(2 * rid, 1024)
            self._len, self._short, self._long, self._start = (
                _grown(a, size, 0) for a in (self._len, self._short, self._long, self._start))
            self._scratch.records(size)
        if self._n_tok + n > len(self._tok):
            size = max(self._n_tok + n, 2 * len(self._tok), 1 << 14)
            self._tok, self._elem = _grown(self._tok, size, 0), _grown(self._elem, size, 0)
        self._start[rid], self._len[rid] = self._n_tok, n
        self._tok[self._n_tok:self._n_tok + n] = tids
        self._elem[self._n_tok:self._n_tok + n] = eids
        self._n_tok += n
        self._df[eids] += 1
        if n:
            self._short[rid], self._long[rid] = self._prefixes(n)
        self._max_len = max(self._max_len, n)
        if len(self._keys) >= self._next_rebuild:
            self._rebuild()
        else:
            self._reserve_postings(n)
            self._index(rid, rid + 1)
            if self._n_postings > self._n_compacted * 5 // 4:
                self._compact()

    def _reserve_postings(self, more: int) -> None:
        need = self._n_postings + more
        if need > len(self._p_rid):
            size = max(need, 2 * len(self._p_rid), 1 << 14)
            self._p_rid, self._p_pos, self._p_next = (
                _grown(a, size, 0) for a in (self._p_rid, self._p_pos, self._p_next))

    def _rebuild(self) -> None:
        """Fix a new rare-first element order from current frequencies and re-index every prefix."""
        count = self._n_elements
        ranked = np.lexsort((np.arange(count), self._df[:count]))  # (frequency, id)
        self._key[ranked] = _SEEN + np.arange(count, dtype=np.int64)
        self._head[:] = -1
        self._n_postings = 0
        self._reserve_postings(self._n_tok)
        self._index(0, len(self._keys))
        self._compact()
        self._next_rebuild = 2 * len(self._keys)

    def _index(self, lo: int, hi: int) -> None:
        self._n_postings = _index_records(lo, hi, self._elem, self._start, self._len, self._short, self._long,
                                          self._key, self._head, self._p_rid, self._p_pos, self._p_next,
                                          self._n_postings)

    def _compact(self) -> None:
        _compact(self._head, self._p_rid, self._p_pos, self._p_next, self._n_postings, self._n_elements)
        self._n_compacted = self._n_postings

    def _check(self, tids: np.ndarray, eids: np.ndarray) -> NoveltyDecision:
        m = len(tids)
        if m == 0 or not self._keys:  # F is 0 against an empty text or pool
            return NoveltyDecision(True, None, 0.0)
        alphas, prefix, indexed = self._bounds(m)
        keys = np.where(eids >= 0, self._key[np.maximum(eids, 0)], -1)  # never-indexed elements first
        ordered = eids[np.argsort(keys, kind="stable")]
        s = self._scratch
        s.query += 1
        best_rid, best_score, checked = _judge(
            tids, ordered, alphas, prefix, indexed, self._head, self._p_rid, self._p_pos, self._p_next,
            self._len, self._start, self._tok,
            s.stamp, s.count, s.alive, s.touched, s.local, s.query)
        self.candidates_checked += checked
        nearest = self._keys[best_rid] if best_rid >= 0 else None
        return NoveltyDecision(best_score <= self.threshold, nearest, best_score)


class _Scratch:
    """Per-record and per-token work arrays reused by every check (reset lazily, by query stamp)."""

    def __init__(self) -> None:
        self.query = 0
        self.stamp = self.count = self.touched = np.zeros(0, np.int64)
        self.alive = np.zeros(0, np.bool_)
        self.local = np.zeros(0, np.int64)

    def records(self, size: int) -> None:
        self.stamp, self.count, self.touched = (_grown(a, size, 0) for a in (self.stamp, self.count, self.touched))
        self.alive = _grown(self.alive, size, False)

    def vocab(self, size: int) -> None:
        if size > len(self.local):
            self.local = _grown(self.local, max(size, 2 * len(self.local)), -1)


def _grown(a: np.ndarray, size: int, fill) -> np.ndarray:
    out = np.full(size, fill, a.dtype)
    out[:len(a)] = a
    return out


@njit(cache=True)
def _index_records(lo, hi, elem, start, length, short, long, key, head, p_rid, p_pos, p_next, n_postings):
    """Push the postings of records lo..hi-1's prefixes (elements in key order); returns the posting count."""
    for rid in range(lo, hi):
        n = length[rid]
        mine = elem[start[rid]:start[rid] + n]
        ordered = mine[np.argsort(key[mine], kind="mergesort")]
        for j in range(min(n, max(short[rid], long[rid]))):
            e = ordered[j]
            p_rid[n_postings], p_pos[n_postings], p_next[n_postings] = rid, n << 32 | j, head[e]
            head[e] = n_postings
            n_postings += 1
    return n_postings


@njit(cache=True)
def _compact(head, p_rid, p_pos, p_next, n_postings, n_elements):
    """Renumber the postings so that each element's chain occupies consecutive slots (same chains)."""
    rid, pos, nxt = np.empty(n_postings, np.int64), np.empty(n_postings, np.int64), np.empty(n_postings, np.int64)
    k = 0
    for e in range(n_elements):
        p, first = head[e], k
        while p >= 0:
            rid[k], pos[k], nxt[k] = p_rid[p], p_pos[p], k + 1
            k += 1
            p = p_next[p]
        if k > first:
            nxt[k - 1] = -1
            head[e] = first
    p_rid[:n_postings], p_pos[:n_postings], p_next[:n_postings] = rid, pos, nxt


@njit(cache=True)
def _judge(tids, ordered, alphas, prefix, indexed, head, p_rid, p_pos, p_next, length, start, tok,
           stamp, count, alive, touched, local, query):
    """Best (record, ROUGE-L F, exact LCS computed) of a text against the pool's candidates.

    A match at position i of ours and j of theirs (both in the key order) after k earlier matches
    allows at most k + min(m - i, n - j) shared tokens; a record stays a candidate only if that
    reaches alpha(m, n) at every one of its matches. Candidates are judged in ascending record
    order (ties go to the earliest text): multiset overlap first, then the exact LCS.
    """
    m = len(tids)
    top = min(m, prefix.max())
    n_touched = 0
    for i in range(top):
        e = ordered[i]
        p = head[e] if e >= 0 else -1
        while p >= 0:
            r, n, j = p_rid[p], p_pos[p] >> 32, p_pos[p] & 0xFFFFFFFF
            p = p_next[p]
            if prefix[n] <= i or j >= indexed[n]:
                continue
            if stamp[r] != query:
                stamp[r], count[r], alive[r] = query, 0, True
                touched[n_touched] = r
                n_touched += 1
            if count[r] + min(n - j, m - i) < alphas[n]:
                alive[r] = False
            count[r] += 1
    candidates = np.sort(touched[:n_touched])
    best_rid, best_score, checked = -1, 0.0, 0
    if n_touched == 0:
        return best_rid, best_score, checked
    # our tokens: a local number per distinct token, its count and its position bits (64 a word)
    words = (m + 63) // 64
    masks = np.zeros((m, words), np.uint64)
    have = np.zeros(m, np.int64)
    used = np.zeros(m, np.int64)
    distinct = 0
    for i in range(m):
        t = tids[i]
        if t < 0:
            continue
        if local[t] < 0:
            local[t] = distinct
            distinct += 1
        li = local[t]
        have[li] += 1
        masks[li, i // 64] |= np.uint64(1) << np.uint64(i % 64)
    v = np.empty(words, np.uint64)
    for r in candidates:
        if not alive[r]:
            continue
        n, s = length[r], start[r]
        shared, need = 0, alphas[n]
        for q in range(s, s + n):
            if shared + s + n - q < need:  # cannot reach alpha any more
                break
            li = local[tok[q]]
            if li >= 0 and used[li] < have[li]:
                used[li] += 1
                shared += 1
        used[:distinct] = 0
        if shared < need:  # LCS <= shared tokens
            continue
        checked += 1
        score = fmeasure(lcs_words(masks, m, local, tok[s:s + n], v), m, n)
        if score > best_score:
            best_rid, best_score = r, score
    for i in range(m):
        if tids[i] >= 0:
            local[tids[i]] = -1
    return best_rid, best_score, checked


@njit(cache=True)
def lcs_words(masks, m, local, other, v):
    """LCS length of our m tokens (position bits per local token number in `masks`, 64 a word) and
    `other` (token ids; `local` maps them to our numbers, -1 when not ours): `lcs_length` on words."""
    words = len(v)
    v[:] = ~np.uint64(0)
    rest = m % 64
    top = (np.uint64(1) << np.uint64(rest)) - np.uint64(1) if rest else ~np.uint64(0)
    v[words - 1] = top
    for t in other:
        li = local[t]
        if li < 0:
            continue
        carry = np.uint64(0)
        for w in range(words):
            x, u = v[w], v[w] & masks[li, w]
            total = x + u
            out = total + carry
            carry = np.uint64(1) if (total < x or out < total) else np.uint64(0)
            v[w] = out | (x & ~masks[li, w])
        v[words - 1] &= top
    zeros = 0
    for w in range(words):
        zeros += np.int64(popcount(v[w]))
    return m - zeros


@njit(cache=True)
def popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True)
def fmeasure(lcs, m, n):
    """`rouge_l_fmeasure`, compiled (same float operations)."""
    if lcs == 0:
        return 0.0
    precision, recall = lcs / n, lcs / m
    return 2 * precision * recall / (precision + recall)
