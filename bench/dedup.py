"""MinHash near-dedup: our vectorised filter vs the per-document datasketch loop, on one corpus.

    .venv/bin/python bench/dedup.py [--small] [--docs N] [--reference-docs N]

Corpus: synthetic instructions (random template + vocabulary words), with planted near-duplicates
(a copy with one word changed, added or dropped). Both methods use 5-word shingles, 128
permutations and threshold 0.7. The reference is how common tools do it: one `MinHash.update`
per shingle, then `MinHashLSH.query` and `insert` per document, removing a document when the
query finds an earlier one. It runs on the first 20K documents (`--reference-docs`), and its time is
extrapolated to the whole corpus (labelled so); ours runs on the whole corpus and again on those
first documents, where the two methods' per-document decisions are compared. Each run is a child
process (peak RSS measured there). Printed: docs/s, peak RSS growth, duplicates removed, recall of
the planted duplicates, the load average (the machine may be shared), and the agreement.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import time

import numpy as np
import pyarrow as pa

TEMPLATES = ["Write a {} about {} and {} for a {} audience", "Explain how {} affects {} in {} terms",
             "List five ways to {} the {} without {} or {}", "Summarise the {} of {} in {} sentences",
             "Give an example of {} that uses {} and {} together", "Describe the {} between {} and {} briefly"]
_NON_WORD = re.compile(r"[^\w]+|_")


def corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n instructions; about 15% are near-duplicates of an earlier one (marked in the returned mask)."""
    rng = np.random.default_rng(seed)
    vocab = [f"{a}{b}" for a in ("ta", "ke", "ri", "mo", "su", "la", "ne", "po", "vi", "da", "go", "fe")
             for b in range(400)]
    docs: list[str] = []
    planted = np.zeros(n, dtype=bool)
    for i in range(n):
        if i > 10 and rng.random() < 0.15:
            words = docs[int(rng.integers(0, i))].split()
            j = int(rng.integers(0, len(words)))
            edit = rng.integers(0, 3)
            if edit == 0:
                words[j] = vocab[int(rng.integers(0, len(vocab)))]
            elif edit == 1:
                words.insert(j, vocab[int(rng.integers(0, len(vocab)))])
            else:
                words.append(vocab[int(rng.integers(0, len(vocab)))])
            docs.append(" ".join(words))
            planted[i] = True
        else:
            t = TEMPLATES[int(rng.integers(0, len(TEMPLATES)))]
            fill = [" ".join(vocab[k] for k in rng.integers(0, len(vocab), int(rng.integers(3, 8))))
                    for _ in range(t.count("{}"))]
            docs.append(t.format(*fill) + ".")
    return docs, planted


def ours(docs: list[str], batch_size: int = 10_000) -> np.ndarray:
    from instructforge.executors.local import fit_in_process
    from instructforge.filters.base import with_positions
    from instructforge.filters.config import MinHashDedupConfig
    from instructforge.filters.minhash_dedup import MinHashDedup
    from instructforge.records import Example

    f = MinHashDedup(MinHashDedupConfig(fields=["instruction"]))
    n = len(docs)
    schema = Example.arrow_schema()
    empty = pa.array([""] * batch_size)
    meta = pa.array([[]] * batch_size, schema.field("meta").type)
    batches = []
    for s in range(0, n, batch_size):
        k = min(batch_size, n - s)
        cols = [pa.array([f"{i:016x}" for i in range(s, s + k)]), pa.array(docs[s:s + k])] + [empty[:k]] * 5
        batches.append(with_positions(pa.RecordBatch.from_arrays(cols + [meta[:k]], schema=schema), s))
    fit_in_process(f, batches)
    removed = np.zeros(n, dtype=bool)
    for start, batch in zip(range(0, n, batch_size), batches, strict=True):
        _, rej = f.apply(batch)
        removed[[start + i for i in rej]] = True
    return removed


def reference(docs: list[str]) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    removed = np.zeros(len(docs), dtype=bool)
    for i, doc in enumerate(docs):
        words = _NON_WORD.sub(" ", doc.lower()).split()
        grams = {" ".join(words[k:k + 5]) for k in range(max(1, len(words) - 4))}
        m = MinHash(num_perm=128)
        for g in grams:
            m.update(g.encode("utf-8"))
        if lsh.query(m):
            removed[i] = True
        else:
            lsh.insert(str(i), m)
    return removed


def _child(name: str, docs: list[str], queue: mp.Queue) -> None:
    if name == "ours":  # imports and the (bands, rows) search are setup, not per-document work
        from instructforge.filters.minhash_dedup import lsh_params

        lsh_params(0.7, 128)
        ours(docs[:100])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    removed = {"ours": ours, "reference": reference}[name](docs)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((removed, seconds, (peak - base) / 1024))


def measure(name: str, docs: list[str]) -> tuple[np.ndarray, float, float]:
    queue: mp.Queue = mp.get_context("fork").Queue()
    proc = mp.get_context("fork").Process(target=_child, args=(name, docs, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="20K documents instead of 200K")
    ap.add_argument("--docs", type=int, help="number of documents")
    ap.add_argument("--reference-docs", type=int, default=20_000,
                    help="the reference runs on the first N documents (its time is extrapolated to all)")
    args = ap.parse_args()
    n = args.docs or (20_000 if args.small else 200_000)
    docs, planted = corpus(n)
    m = min(n, args.reference_docs)
    print(f"corpus: {n:,} instructions, {planted.sum():,} planted near-duplicates, "
          f"{np.mean([len(d.split()) for d in docs]):.1f} words on average; load average {_load()}")
    runs = [("ours", n), ("reference", m)] + ([("ours", m)] if m < n else [])
    removed, seconds = {}, {}
    for name, k in runs:
        r, sec, rss = measure(name, docs[:k])
        removed[name, k], seconds[name, k] = r, sec
        print(f"{name:<10} {k:>9,} docs {k / sec:>10,.0f} docs/s {sec:>8.2f} s  peak RSS +{rss:>6.0f} MiB  "
              f"removed {r.sum():>7,}  planted recall {r[planted[:k]].mean():.3f}  load {_load()}")
    if m < n:
        print(f"reference at {n:,} docs (extrapolated from {m:,}, its cost per document is flat): "
              f"{seconds['reference', m] * n / m:.1f} s")
    speedup = (seconds["reference", m] / m) / (seconds["ours", n] / n)
    print(f"speed-up (docs/s, ours at {n:,} vs reference at {m:,}): {speedup:.1f}x")
    a, b = removed["ours", m], removed["reference", m]
    print(f"agreement on the first {m:,} documents: same decision on {(a == b).mean():.4%}; removed by both "
          f"{(a & b).sum():,}, only ours {(a & ~b).sum():,}, only reference {(~a & b).sum():,}")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
