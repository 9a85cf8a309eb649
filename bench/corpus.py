"""Benchmark corpora for every filter benchmark, generated deterministically from a seed.

Two lengths, because filter cost scales with words per row:

- `short_instructions`: the old synthetic instructions of about 20 words (template + made-up
  vocabulary), with planted one-word edits of earlier rows.
- `flan_rows`: FLAN/T0-style rendered prompts with a passage of 100-300 words (about 180 words a row),
  English-like text: a Zipf distribution (exponent 1) over a vocabulary whose ranks 1-300 are the
  commonest English words and whose tail is 30K syllable-built words, cut into sentences of 8-30 words
  (mean word length about 5 letters).
  Near-duplicates arise as in FLAN-style collections: the same passage rendered through another
  template (with another question), a light edit of an earlier passage (1-4 words changed, added or
  dropped) under the same template, and exact repeats of an earlier row.
- `real_length_instructions`: Self-Instruct-like instructions of about 40 words from the same
  vocabulary, a share of them small edits of an earlier one (novelty benchmarks).

Words are drawn with numpy and joined with Arrow (no Python per word), so 1M rows take seconds.

    .venv/bin/python bench/corpus.py --rows 5   # print a few rows of each kind
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_COMMON_TEXT = """the of and to a in is that for it as was with be by on not he i this are or his from at which
but have an they you were her she there one all we their been has more if when will would who so no can
out what up them its some into than only other time my new could two about these then do may any first
like also people now such over very our after most made your many him even well way where before just
through because those years much should between back own same while being still did under each down
great us good work both three life world here last long year make little use part state day must
another might against few off know without city place however high right around during until find old
system number general small large home public since often take group school far government again
never end used house war early water best means called every case days later fact left within power
point given began form today family among set second real few name area near help known local country
water whole order light found major music less side line social study along free open along early
child thought course human change word once head white land interest history book house market story
body game love young four money death field next above enough person having national several able
action mind late although level human period black form party run whether perhaps hand best half
company language together among likely river mother point control across rather turned toward sea
question answer text passage article reason result example process show told others view true almost
process itself support public effect nature center himself town thing face west based early hard
ground began room office voice church team river film south north east power care leave rest month
"""
COMMON = _COMMON_TEXT.split()
ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "ch",
          "cl", "cr", "dr", "fl", "gr", "pl", "pr", "sh", "sl", "sp", "st", "str", "th", "tr", "wh"]
NUCLEI = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "ie", "oa", "ou", "y"]
CODAS = ["", "", "", "", "", "n", "r", "s", "t", "l", "m", "nd", "nt", "rd", "st", "ck", "ng", "ll", "ss"]
TAIL = 30_000

# FLAN/T0-style templates: {p} passage, {q} question/hypothesis/title word(s).
TEMPLATES = [
    "Read the following article and answer the question.\n\nArticle: {p}\n\nQuestion: {q}?\n\nAnswer:",
    "{p}\n\nBased on the paragraph above can we conclude that \"{q}\"?\n\nOPTIONS:\n- Yes\n- It's impossible to say\n- No",
    "Summarize this article:\n\n{p}\n\nSummary:",
    "{p}\n\nWhat is a good title for this?",
    "Answer a question about this article:\n{p}\n{q}?",
    "Write a one-sentence summary of the text below.\n\n{p}",
    "Passage: {p}\n\nAfter reading the passage, answer: {q}?",
    "Context: {p}\n\nGenerate a question about the context above whose answer is \"{q}\".",
]


def vocabulary() -> np.ndarray:
    """Words by rank: distinct common English words first, then TAIL syllable-built words."""
    common = list(dict.fromkeys(COMMON))
    rng = np.random.default_rng(7)
    tail: dict[str, None] = {}
    while len(tail) < TAIL:
        k = 1 + int(rng.choice(3, p=[0.3, 0.5, 0.2]))
        word = "".join(ONSETS[rng.integers(len(ONSETS))] + NUCLEI[rng.integers(len(NUCLEI))]
                       + CODAS[rng.integers(len(CODAS))] for _ in range(k))
        if word not in tail and word not in common:
            tail[word] = None
    return np.array(common + list(tail), dtype=object)


_VOCAB = vocabulary()
_WEIGHTS = 1.0 / np.arange(1, len(_VOCAB) + 1)
_CDF = np.cumsum(_WEIGHTS / _WEIGHTS.sum())
# every word three ways: plain, capitalised (sentence start), with a full stop (sentence end)
_FORMS = pa.array(np.concatenate([_VOCAB, [w.capitalize() for w in _VOCAB], [w + "." for w in _VOCAB]]).tolist())


def _draw(rng: np.random.Generator, k: int) -> np.ndarray:
    return np.minimum(np.searchsorted(_CDF, rng.random(k)), len(_VOCAB) - 1)


def sentences(rng: np.random.Generator, lengths: np.ndarray) -> list[str]:
    """One text per length: that many Zipf words in sentences of 8-30 words, capitalised, full stops."""
    total = int(lengths.sum())
    idx = _draw(rng, total)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    # sentence boundaries: each text starts one; then one every 8-30 words
    gaps = rng.integers(8, 31, total)
    pos_in_doc = np.arange(total) - np.repeat(offsets[:-1], lengths)
    start = (pos_in_doc == 0) | (rng.random(total) < 1 / gaps)
    end = np.zeros(total, bool)
    end[:-1] = start[1:]
    end[offsets[1:][lengths > 0] - 1] = True
    form = np.where(end, 2, np.where(start, 1, 0)) * len(_VOCAB) + idx
    words = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), _FORMS.take(pa.array(form)))
    return pc.binary_join(words, " ").to_pylist()


def _edit(rng: np.random.Generator, text: str, edits: int) -> str:
    """`edits` random word substitutions, insertions or deletions."""
    words = text.split(" ")
    for _ in range(edits):
        j = int(rng.integers(0, len(words)))
        op = rng.integers(0, 3)
        if op == 0:
            words[j] = str(_VOCAB[_draw(rng, 1)[0]])
        elif op == 1:
            words.insert(j, str(_VOCAB[_draw(rng, 1)[0]]))
        elif len(words) > 1:
            del words[j]
    return " ".join(words)


def flan_rows(n: int, seed: int = 0, *, min_words: int = 100, max_words: int = 300) -> dict[str, list]:
    """n rendered prompts: columns instruction, input (""), output, and `source` (the passage's number:
    rows of one source are the same passage; `kind` says how each row arose: new, template, edit, repeat).
    """
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.normal(180, 45, n).astype(np.int64), min_words, max_words)
    passages = sentences(rng, lengths)
    questions = sentences(rng, rng.integers(4, 10, n))
    answers = sentences(rng, rng.integers(1, 25, n))
    kind = rng.choice(4, n, p=[0.75, 0.1, 0.1, 0.05])
    kind[:10] = 0
    earlier = (rng.random(n) * np.arange(n)).astype(np.int64)
    template = rng.integers(0, len(TEMPLATES), n)
    source = np.arange(n)
    instruction: list[str] = []
    output: list[str] = []
    for i in range(n):
        k, j = int(kind[i]), int(earlier[i])
        if k == 3:  # exact repeat of an earlier row
            source[i] = source[j]
            instruction.append(instruction[j])
            output.append(output[j])
            continue
        p, t = passages[i], int(template[i])
        if k == 1:  # the same passage under another template
            source[i], p = source[j], passages[source[j]]
            t = (int(template[j]) + 1 + int(rng.integers(0, len(TEMPLATES) - 1))) % len(TEMPLATES)
        elif k == 2:  # a light edit of an earlier passage, same template
            source[i], t = source[j], int(template[j])
            p = _edit(rng, passages[source[j]], 1 + int(rng.integers(0, 4)))
        instruction.append(TEMPLATES[t].format(p=p, q=questions[i].rstrip(".")))
        output.append(answers[i])
    return {"instruction": instruction, "input": [""] * n, "output": output, "source": source.tolist(),
            "kind": [("new", "template", "edit", "repeat")[k] for k in kind.tolist()]}


SHORT_TEMPLATES = ["Write a {} about {} and {} for a {} audience", "Explain how {} affects {} in {} terms",
                   "List five ways to {} the {} without {} or {}", "Summarise the {} of {} in {} sentences",
                   "Give an example of {} that uses {} and {} together",
                   "Describe the {} between {} and {} briefly"]
_SHORT_VOCAB = [f"{a}{b}" for a in ("ta", "ke", "ri", "mo", "su", "la", "ne", "po", "vi", "da", "go", "fe")
                for b in range(400)]


def short_instructions(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n instructions of about 20 words; about 15% are near-duplicates of an earlier one (the mask)."""
    rng = np.random.default_rng(seed)
    vocab = _SHORT_VOCAB
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
            t = SHORT_TEMPLATES[int(rng.integers(0, len(SHORT_TEMPLATES)))]
            fill = [" ".join(vocab[k] for k in rng.integers(0, len(vocab), int(rng.integers(3, 8))))
                    for _ in range(t.count("{}"))]
            docs.append(t.format(*fill) + ".")
    return docs, planted


INSTRUCTION_OPENERS = ["Write", "Explain", "Describe", "List", "Summarize", "Classify", "Identify", "Give",
                       "Create", "Generate", "Find", "Suggest", "Compare", "Rewrite", "Translate"]


def real_length_instructions(n: int, seed: int = 0, *, planted: float = 0.25, mean_words: int = 40
                             ) -> list[str]:
    """n Self-Instruct-like instructions of about `mean_words` words (20-60); a `planted` share are
    1-5 word edits of an earlier one."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.normal(mean_words, 8, n).astype(np.int64), 20, 60)
    bodies = sentences(rng, lengths - 1)
    is_edit = rng.random(n) < planted
    texts: list[str] = []
    for i in range(n):
        if texts and is_edit[i]:
            texts.append(_edit(rng, texts[int(rng.integers(0, len(texts)))], 1 + int(rng.integers(0, 5))))
        else:
            body = bodies[i]
            texts.append(f"{INSTRUCTION_OPENERS[int(rng.integers(0, len(INSTRUCTION_OPENERS)))]} "
                         f"{body[:1].lower()}{body[1:]}")
    return texts


def example_batches(rows: int, batch_size: int, kind: str = "flan", seed: int = 0) -> Iterator[pa.RecordBatch]:
    """Rows as `Example` record batches; batch k is generated from seed + k, so every call gives the
    same rows. Near-duplicates arise inside a batch (`kind`: "flan" or "short")."""
    from instructforge.records import Example

    schema = Example.arrow_schema()
    for k, start in enumerate(range(0, rows, batch_size)):
        n = min(batch_size, rows - start)
        if kind == "flan":
            cols = flan_rows(n, seed + k)
            instruction, output = cols["instruction"], cols["output"]
        else:
            instruction, _ = short_instructions(n, seed + k)
            output = [f"Here is one careful answer to the request, written in plain words: {d}"
                      for d in instruction]
        yield pa.RecordBatch.from_pydict(
            {"id": [f"{start + i:016x}" for i in range(n)], "instruction": instruction, "input": [""] * n,
             "output": output, "task": ["bench"] * n, "source": ["bench"] * n, "template": [""] * n,
             "meta": [[]] * n}, schema=schema)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3)
    args = ap.parse_args()
    rows = flan_rows(max(args.rows, 200))
    words = [len(t.split()) for t in rows["instruction"]]
    print(f"flan rows: {np.mean(words):.0f} words on average (min {min(words)}, max {max(words)}); kinds "
          + ", ".join(f"{k} {rows['kind'].count(k)}" for k in ("new", "template", "edit", "repeat")))
    for i in range(args.rows):
        print(f"--- {rows['kind'][i]} (source {rows['source'][i]})\n{rows['instruction'][i]}\n=> {rows['output'][i]}")
    docs, _ = short_instructions(args.rows)
    print("--- short instructions\n" + "\n".join(docs))
    print("--- real-length instructions\n" + "\n".join(real_length_instructions(args.rows)))


if __name__ == "__main__":
    main()
