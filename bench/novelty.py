"""Novelty filter: our exact candidate index vs the pairwise `rouge_score` reference.

Both decide, for a stream of instructions, whether each one's ROUGE-L F against every accepted
instruction is <= 0.7 (the Self-Instruct rule). The corpus is synthetic: instruction-like
sentences over a Zipf vocabulary with planted near-duplicates (1-5 token edits of an earlier
one). The reference is the published method's: `rouge_score`'s LCS against the whole pool,
pre-tokenized. Two corpora: the short synthetic one above (about 13 words) and the real-length
Self-Instruct-like instructions of bench/corpus.py (about 40 words, 25% of them 1-5 word edits of an
earlier one). The reference runs on the first `--ref-size` instructions; for bigger sizes its time is
extrapolated quadratically from that run (stated in the table), and our decisions are checked
against it where it ran.

    .venv/bin/python bench/novelty.py            # 2K, 10K, 50K
    .venv/bin/python bench/novelty.py --small    # 2K only
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from rouge_score import rouge_scorer

sys.path.insert(0, str(Path(__file__).parent))
from corpus import real_length_instructions

from instructforge.filters.novelty import NoveltyIndex

FUNCTION_WORDS = ["the", "a", "an", "of", "to", "and", "in", "for", "is", "that", "with", "on", "as", "by", "from", "this", "it", "each", "be", "are", "or", "given", "following", "your", "their", "what", "which", "how", "into", "about", "list", "write", "describe", "explain", "find", "create", "generate", "give", "make", "identify", "classify", "whether"]


def synthetic_instructions(n: int, seed: int = 0, planted: float = 0.25) -> list[str]:
    """Instruction-like sentences; a `planted` fraction are small edits of an earlier sentence."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20_000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    texts: list[str] = []
    while len(texts) < n:
        if texts and rng.random() < planted:
            words = rng.choice(texts).split()
            for _ in range(rng.randint(1, 5)):
                j = rng.randrange(len(words))
                op = rng.random()
                if op < 0.35:
                    words.insert(j, rng.choice(FUNCTION_WORDS))
                elif op < 0.6 and len(words) > 3:
                    del words[j]
                else:
                    words[j] = rng.choices(vocab, weights)[0]
            texts.append(" ".join(words).capitalize() + ".")
            continue
        length = max(4, min(40, int(rng.gauss(13, 5))))
        content = rng.choices(vocab, weights, k=length)
        words = [rng.choice(FUNCTION_WORDS) if rng.random() < 0.4 else w for w in content]
        texts.append(" ".join(words).capitalize() + rng.choice([".", "?", ":"]))
    return texts


def reference_decisions(texts: list[str], threshold: float = 0.7) -> list[bool]:
    """The published method: compare each instruction with every accepted one."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool: list[list[str]] = []
    decisions = []
    for text in texts:
        tokens = scorer._tokenizer.tokenize(text)
        best = max((rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool), default=0.0)
        decisions.append(best <= threshold)
        if best <= threshold:
            pool.append(tokens)
    return decisions


def index_decisions(texts: list[str], threshold: float = 0.7) -> tuple[list[bool], int]:
    index = NoveltyIndex(threshold)
    decisions = [index.add_if_novel(t, str(i)).novel for i, t in enumerate(texts)]
    return decisions, index.candidates_checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="2K instructions only")
    parser.add_argument("--ref-size", type=int, default=2000, help="instructions the reference runs on")
    args = parser.parse_args()
    sizes = [2000] if args.small else [2000, 10_000, 50_000]
    n_max = max(sizes + [args.ref_size])
    for label, corpus in (("short synthetic instructions", synthetic_instructions(n_max)),
                          ("real-length instructions (bench/corpus.py)", real_length_instructions(n_max))):
        words = sum(len(t.split()) for t in corpus[:2000]) / 2000
        print(f"\n== {label}: {words:.0f} words on average; load average {os.getloadavg()[0]:.1f}")
        compare(corpus, sizes, args.ref_size)


def compare(corpus: list[str], sizes: list[int], ref_n: int) -> None:
    t0 = time.perf_counter()
    ref = reference_decisions(corpus[:ref_n])
    ref_s = time.perf_counter() - t0
    print(f"{'n':>7} {'accepted':>9} {'exact LCS':>10} {'ours s':>8} {'CPU s':>7} {'reference s':>16} {'speedup':>9} "
          f"{'identical':>10}  load")
    for n in sizes:
        t0, c0 = time.perf_counter(), time.process_time()
        ours, checked = index_decisions(corpus[:n])
        ours_s, cpu = time.perf_counter() - t0, time.process_time() - c0
        identical = "yes" if ours[:ref_n] == ref[:n] else "NO"
        ref_n_s = ref_s * (n / ref_n) ** 2
        ref_label = "measured" if n == ref_n else "extrap."
        print(f"{n:>7} {sum(ours):>9} {checked:>10} {ours_s:>8.2f} {cpu:>7.2f} {ref_n_s:>9.0f} {ref_label:>6} "
              f"{ref_n_s / ours_s:>8.0f}x {identical:>10}  {os.getloadavg()[0]:.1f}")
    print(f"reference measured on the first {ref_n} instructions ({ref_s:.1f} s), extrapolated as n^2;"
          " identical = same decisions on the instructions both ran on")


if __name__ == "__main__":
    main()
