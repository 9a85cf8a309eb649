"""MinHash near-dedup: ours vs datasketch (bulk + LSH, and the per-shingle loop) vs rensa, one run.

    .venv/bin/python bench/dedup.py [--small] [--long-docs N] [--short-docs N] [--sample N]

Two corpora from bench/corpus.py: FLAN-style rendered prompts (about 180 words; near-duplicates are
the same passage under another template, light edits and repeats) and the short synthetic
instructions (about 20 words, planted one-word edits). Every method uses 5-word shingles of the
lowercased alphanumeric words, 128 permutations, Jaccard threshold 0.7, and keeps the first row of
a duplicate group:

- ours: the filter itself (`MinHashDedup.keys` on two threads as the local executor runs it, then
  `fit` and `apply`), text in Arrow, signatures in one compiled pass per batch;
- datasketch bulk: Python shingling, `MinHash.bulk` (its fastest documented path), `MinHashLSH`
  filled in an insertion session, then one query per document (removed if an earlier one answers);
- datasketch loop: one `MinHash.update` per shingle, `query` then `insert` per document (what most
  tools do);
- rensa: Python shingling, `RMinHash.digest_matrix_from_token_sets` (its batch API) and
  `RMinHashLSH.insert_matrix_and_query_duplicate_flags`; that flags every member of a group, so the
  first member of each band-connected group is kept (groups from the digest rows, same bands; rensa
  needs a band count dividing 128, so it uses 16 bands of 8 rows where the others use datasketch's
  14 of 9).

All methods run, interleaved, on the same first `--sample` documents of each corpus; ours also on the
whole corpus. Each run is a child process (peak RSS there). Decision quality on the sample: a row
truly is a near duplicate when an earlier row's exact Jaccard similarity (shingle sets) is >= 0.7;
precision and recall of each method's removed rows against that. The load average is printed with
every line (the machine is shared), and each run's CPU seconds (all its threads): wall-clock docs/s
fall when other jobs take the cores, CPU seconds much less.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.sparse import csr_matrix

sys.path.insert(0, str(Path(__file__).parent))
from corpus import flan_rows, short_instructions

NGRAM, PERM, THRESHOLD = 5, 128, 0.7
_NON_WORD = re.compile(r"[^\w]+|_")


def python_shingles(doc: str) -> list[str]:
    """How the peers are fed: regex words, lowercased, 5-word shingle strings (a short text: one)."""
    words = _NON_WORD.sub(" ", doc.lower()).split()
    return list({" ".join(words[k:k + NGRAM]) for k in range(max(1, len(words) - NGRAM + 1))}) if words else []


def ours(docs: list[str], batch_size: int = 10_000) -> np.ndarray:
    from instructforge.executors.local import LocalKeys
    from instructforge.filters.base import concat_keys, with_positions
    from instructforge.filters.config import MinHashDedupConfig
    from instructforge.filters.minhash_dedup import MinHashDedup

    f = MinHashDedup(MinHashDedupConfig(fields=["instruction"], ngram=NGRAM, num_perm=PERM, threshold=THRESHOLD))
    batches = [with_positions(pa.RecordBatch.from_pydict({
        "id": [f"{i:016x}" for i in range(s, min(s + batch_size, len(docs)))],
        "instruction": docs[s:s + batch_size]}), s) for s in range(0, len(docs), batch_size)]
    with ThreadPoolExecutor(2) as pool:
        f.fit(LocalKeys(concat_keys(pool.map(f.keys, batches))), None)
    removed = np.zeros(len(docs), dtype=bool)
    for start, batch in zip(range(0, len(docs), batch_size), batches, strict=True):
        _, rej = f.apply(batch)
        removed[[start + i for i in rej]] = True
    return removed


def datasketch_bulk(docs: list[str]) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    sets = [[s.encode() for s in python_shingles(d)] for d in docs]
    sigs = MinHash.bulk(sets, num_perm=PERM)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERM)
    with lsh.insertion_session() as session:
        for i, (m, s) in enumerate(zip(sigs, sets, strict=True)):
            if s:
                session.insert(i, m)
    return np.array([bool(s) and any(j < i for j in lsh.query(m)) for i, (m, s) in enumerate(zip(sigs, sets,
                                                                                                 strict=True))])


def datasketch_loop(docs: list[str]) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERM)
    removed = np.zeros(len(docs), dtype=bool)
    for i, doc in enumerate(docs):
        grams = python_shingles(doc)
        if not grams:
            continue
        m = MinHash(num_perm=PERM)
        for g in grams:
            m.update(g.encode("utf-8"))
        if lsh.query(m):
            removed[i] = True
        else:
            lsh.insert(str(i), m)
    return removed


def rensa(docs: list[str]) -> np.ndarray:
    from rensa import RMinHash, RMinHashLSH

    from instructforge.filters.minhash_dedup import band_keys, clusters

    bands, rows = 16, PERM // 16  # rensa needs bands dividing num_perm; (16, 8) is its usual split for 0.7
    sets = [python_shingles(d) or [""] for d in docs]
    matrix = RMinHash.digest_matrix_from_token_sets(sets, PERM, 42)
    flags = np.array(RMinHashLSH(THRESHOLD, PERM, bands).insert_matrix_and_query_duplicate_flags(matrix))
    sigs = np.array(matrix.to_rows(), dtype=np.uint64)[:, :bands * rows]
    labels = clusters(band_keys(sigs.astype(np.uint32), bands, rows), flags)
    first = np.full(labels.max() + 1, len(docs))
    np.minimum.at(first, labels, np.arange(len(docs)))
    return flags & (first[labels] != np.arange(len(docs)))


METHODS = {"ours": ours, "datasketch bulk": datasketch_bulk, "rensa batch": rensa, "datasketch loop": datasketch_loop}


def exact_duplicates(docs: list[str]) -> np.ndarray:
    """Rows with an earlier row of exact shingle-set Jaccard >= THRESHOLD (sparse set intersections)."""
    vocab: dict[str, int] = {}
    indptr, indices = [0], []
    for d in docs:
        indices += [vocab.setdefault(s, len(vocab)) for s in python_shingles(d)]
        indptr.append(len(indices))
    a = csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(docs), len(vocab)))
    sizes = np.diff(indptr)
    inter = (a @ a.T).tocoo()
    i, j, k = inter.row, inter.col, inter.data
    earlier = j < i
    i, j, k = i[earlier], j[earlier], k[earlier]
    jaccard = k / (sizes[i] + sizes[j] - k)
    truth = np.zeros(len(docs), dtype=bool)
    truth[i[jaccard >= THRESHOLD]] = True
    return truth


def _child(name: str, docs: list[str], queue: mp.Queue) -> None:
    try:
        METHODS[name](docs[:200])  # imports, compilation and the (bands, rows) search are set-up, not work
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t, cpu = time.perf_counter(), _cpu()
        removed = METHODS[name](docs)
        seconds, cpu = time.perf_counter() - t, _cpu() - cpu
        queue.put((removed, seconds, cpu, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024))
    except BaseException as e:
        queue.put(e)
        raise


def _cpu() -> float:
    """CPU seconds of this process, all threads (what the method cost, whatever the machine's load)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(name: str, docs: list[str]) -> tuple[np.ndarray, float, float, float]:
    ctx = mp.get_context("fork")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, docs, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if isinstance(result, BaseException):
        raise result
    return result


def compare(label: str, docs: list[str], sample: int, methods: list[str]) -> None:
    words = np.mean([len(d.split()) for d in docs[:5000]])
    m = min(sample, len(docs))
    truth = exact_duplicates(docs[:m])
    print(f"\n== {label}: {len(docs):,} docs, {words:.0f} words on average; sample of {m:,}: "
          f"{truth.sum():,} rows have an earlier row with exact Jaccard >= {THRESHOLD}; load {_load()}")
    print(f"{'method':<16} {'docs':>9} {'docs/s':>10} {'seconds':>8} {'CPU s':>7} {'RSS MiB':>8} {'removed':>8} "
          f"{'precision':>9} {'recall':>7} {'vs exact':>8}  load")
    for name, k in [(n, m) for n in methods] + [("ours", m)] + ([("ours", len(docs))] if len(docs) > m else []):
        removed, sec, cpu, rss = measure(name, docs[:k])
        quality = ""
        if k == m:
            hit = (removed & truth).sum()
            quality = (f"{hit / max(removed.sum(), 1):>9.3f} {hit / max(truth.sum(), 1):>7.3f} "
                       f"{removed.sum() / max(truth.sum(), 1):>7.2f}x")
        print(f"{name:<16} {k:>9,} {k / sec:>10,.0f} {sec:>8.2f} {cpu:>7.2f} {rss:>8.0f} {removed.sum():>8,} "
              f"{quality:<27}  {_load()}")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="10K long and 50K short docs, sample 5K")
    ap.add_argument("--long-docs", type=int, help="FLAN-style rows (default 100K)")
    ap.add_argument("--short-docs", type=int, help="short instructions (default 500K)")
    ap.add_argument("--sample", type=int, help="documents every method runs on (default 20K)")
    ap.add_argument("--skip-loop", action="store_true", help="leave out the datasketch per-shingle loop")
    args = ap.parse_args()
    long_n = args.long_docs or (10_000 if args.small else 100_000)
    short_n = args.short_docs or (50_000 if args.small else 500_000)
    sample = args.sample or (5_000 if args.small else 20_000)
    methods = [m for m in METHODS if m != "ours" and not (args.skip_loop and m == "datasketch loop")]
    compare("FLAN-style rows", flan_rows(long_n)["instruction"], sample, ["ours", *methods])
    compare("short instructions", short_instructions(short_n)[0], sample, ["ours", *methods])


if __name__ == "__main__":
    main()
