"""The novelty index makes exactly the decisions of the pairwise `rouge_score` reference."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from rouge_score import rouge_scorer

from instructforge.filters.novelty import (
    NoveltyIndex,
    lcs_length,
    rouge_l,
    rouge_tokens,
    token_masks,
)

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def corpus(n: int, seed: int, vocab_size: int, lengths: tuple[int, int], planted: float) -> list[str]:
    """Random sentences; a `planted` fraction are 1-4 token edits of an earlier one (near-duplicates
    on both sides of the threshold), with punctuation and case noise the tokenizer must see through."""
    rng = random.Random(seed)
    vocab = [f"tok{i}" for i in range(vocab_size)] + ["the", "a", "of", "The", "A"]
    texts: list[str] = []
    while len(texts) < n:
        if texts and rng.random() < planted:
            words = rng.choice(texts).split() or ["x"]
            for _ in range(rng.randint(1, 4)):
                j = rng.randrange(len(words))
                op = rng.random()
                if op < 0.3:
                    words.insert(j, rng.choice(vocab))
                elif op < 0.6 and len(words) > 1:
                    del words[j]
                elif op < 0.8:
                    words[j] = rng.choice(vocab)
                else:
                    words[j] = words[j].upper() + rng.choice([",", "!", "-é", ""])
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(*lengths))))
    return texts


def reference(texts: list[str], threshold: float) -> list[tuple[bool, float]]:
    """The published method: pre-tokenized `rouge_score` LCS against every accepted text."""
    pool: list[list[str]] = []
    out = []
    for text in texts:
        tokens = SCORER._tokenizer.tokenize(text)
        best = max((rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool), default=0.0)
        out.append((best <= threshold, best))
        if best <= threshold:
            pool.append(tokens)
    return out


def test_tokenization_matches_rouge_score():
    rng = random.Random(0)
    alphabet = "abcXYZ019 .,;:!?-_'\"\t\néüß中Ωİ"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert rouge_tokens(text) == SCORER._tokenizer.tokenize(text), text


def test_lcs_and_fmeasure_match_rouge_score():
    rng = random.Random(1)
    words = ["a", "b", "c", "d", "the"]
    for _ in range(3000):
        x = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        y = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        tx, ty = rouge_tokens(x), rouge_tokens(y)
        table = rouge_scorer._lcs_table(tx, ty)
        assert lcs_length(token_masks(tx), len(tx), ty) == table[-1][-1]
        assert rouge_l(x, y) == SCORER.score(x, y)["rougeL"].fmeasure  # bit-identical floats
        assert rouge_l(x, y) == rouge_l(y, x)


def test_decisions_identical_to_reference_on_2k_with_planted_near_duplicates():
    texts = corpus(2000, seed=2, vocab_size=400, lengths=(3, 12), planted=0.35)
    expected = reference(texts, 0.7)
    index = NoveltyIndex(0.7)
    got = [index.add_if_novel(t, str(i)) for i, t in enumerate(texts)]
    assert [d.novel for d in got] == [e[0] for e in expected]
    rejected = [(d, e) for d, e in zip(got, expected, strict=True) if not e[0]]
    assert len(rejected) > 200  # the planted near-duplicates really cross the threshold
    for d, (_, best) in rejected:
        assert d.score == best  # exact nearest score whenever it decides
    assert index.candidates_checked < 2000 * 50  # far fewer exact LCS than pairs


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.9, 1.0])
def test_decisions_identical_at_any_threshold(threshold):
    texts = corpus(400, seed=3, vocab_size=30, lengths=(1, 9), planted=0.4) + ["", "!!", "tok1"]
    expected = reference(texts, threshold)
    index = NoveltyIndex(threshold)
    assert [index.add_if_novel(t, str(i)).novel for i, t in enumerate(texts)] == [e[0] for e in expected]


def test_exact_above_gives_the_exact_nearest_for_novel_texts_too():
    texts = corpus(600, seed=4, vocab_size=60, lengths=(2, 10), planted=0.4)
    index = NoveltyIndex(0.7, exact_above=0.4)
    pool: list[tuple[str, str]] = []
    for i, text in enumerate(texts):
        d = index.add_if_novel(text, str(i))
        scores = [(rouge_l(text, p), key) for key, p in pool]
        best = max((s for s, _ in scores), default=0.0)
        assert d.novel == (best <= 0.7)
        if best > 0.4:
            assert d.score == best and d.nearest_key == next(k for s, k in scores if s == best)
        if d.novel:
            pool.append((str(i), text))


def test_nearest_key_and_score():
    index = NoveltyIndex(0.7)
    index.add("Write a short poem about the sea.", "seed-1")
    index.add("Summarize the following news article in one sentence.", "seed-2")
    near = index.check("Write a short poem about the ocean.")
    assert not near.novel and near.nearest_key == "seed-1"
    assert near.score == SCORER.score("Write a short poem about the sea.",
                                      "Write a short poem about the ocean.")["rougeL"].fmeasure
    assert len(index) == 2  # check() never indexes

    far = index.add_if_novel("Translate this sentence into French.", "gen-1")
    assert far.novel and far.score <= 0.7
    assert len(index) == 3
    dup = index.add_if_novel("translate THIS sentence, into french!", "gen-2")
    assert (dup.novel, dup.nearest_key, dup.score) == (False, "gen-1", 1.0)
    assert len(index) == 3


def test_add_indexes_unconditionally_and_rejects_bad_threshold():
    index = NoveltyIndex()
    index.add("same text here", "a")
    index.add("same text here", "b")
    assert len(index) == 2
    assert index.check("same text here").nearest_key == "a"  # ties go to the earliest
    with pytest.raises(ValueError):
        NoveltyIndex(1.5)


def test_exact_nearest_on_texts_longer_than_a_machine_word():
    """Texts of 50-200 tokens: the compiled LCS spans several 64-bit words per text."""
    texts = corpus(120, seed=5, vocab_size=40, lengths=(50, 200), planted=0.5)
    for a, b in pairwise(texts[:21]):  # the pairwise function itself, against rouge_score
        assert rouge_l(a, b) == SCORER.score(a, b)["rougeL"].fmeasure
    index = NoveltyIndex(1.0, exact_above=0.0)  # every text indexed; the nearest is exact for all
    pool: list[str] = []
    for i, text in enumerate(texts):
        d = index.add_if_novel(text, str(i))
        scores = [rouge_l(text, p) for p in pool]
        best = max(scores, default=0.0)
        assert d.score == best
        assert d.nearest_key == (str(scores.index(best)) if best > 0 else None)
        pool.append(text)
    assert max(len(rouge_tokens(t)) for t in texts) > 128
