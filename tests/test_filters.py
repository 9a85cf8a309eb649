"""Filter stage: dedup, heuristics, the funnel, and that kept + rejected is exactly the input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from instructforge.config import parse_config
from instructforge.errors import ConfigError
from instructforge.executors.local import fit_in_process
from instructforge.filters import stage as filter_stage
from instructforge.filters.base import with_positions
from instructforge.filters.config import HeuristicsConfig, MinHashDedupConfig
from instructforge.filters.heuristics import Heuristics, non_alpha_shares, top_ngram_share, word_counts
from instructforge.filters.minhash_dedup import (
    MinHashDedup,
    lsh_params,
    permutations,
    shingles,
    signatures,
    text_signatures,
)
from instructforge.filters.text import ngram_hashes, tokenize, word_hashes, words
from instructforge.records import Example
from instructforge.runs import RunDir, StageOutput, read_table


def ex(instruction: str, output: str = "A fine answer.", input: str = "", **meta: str) -> dict:
    return Example(instruction=instruction, input=input, output=output, task="t", meta=meta).model_dump()


def make_input(run: RunDir, rows: list[dict], index: int = 1, name: str = "ingest") -> StageOutput:
    def fn(ctx):
        ctx.write(rows)
    out, _ = run.run_stage(index, name, config={"rows": len(rows), "first": rows[0]["id"] if rows else ""},
                           inputs=[], code="test", fn=fn)
    return out


def run_filters(tmp_path: Path, inputs: list[list[dict]], filters: dict) -> StageOutput:
    run = RunDir(tmp_path / "run")
    outs = [make_input(run, rows, index=i + 1, name=f"in{i}") for i, rows in enumerate(inputs)]
    cfg = parse_config({"filters": filters}, base_dir=tmp_path)
    out, _ = run.run_stage(3, "filter", config=cfg.filters.model_dump(mode="json"), inputs=outs, code="test",
                           fn=filter_stage.run, section=cfg.filters, run=cfg.context())
    return out


def rejected(out: StageOutput) -> list[dict]:
    return read_table(out.rejected).to_pylist()


def assert_nothing_lost(out: StageOutput, inputs: list[list[dict]]) -> None:
    kept = [r["id"] for r in out.table().to_pylist()]
    gone = [r["id"] for r in rejected(out)]
    assert Counter(kept + gone) == Counter(r["id"] for rows in inputs for r in rows)


# --- text hashing -------------------------------------------------------------------------

def test_tokenize_matches_arrow_words_and_normalises():
    texts = pa.array(["The quick, brown fox!", "the QUICK brown fox", "", None, "Héllo—wörld “ﬁne”", "x"])
    assert words(texts).to_pylist() == [["the", "quick", "brown", "fox"]] * 2 + [[], [], ["héllo", "wörld", "fine"],
                                                                               ["x"]]
    h1, o1 = word_hashes(words(texts))
    h2, o2 = tokenize(texts)
    assert np.array_equal(h1, h2) and np.array_equal(o1, o2)
    assert h2[0] == h2[4] and len(set(h2[:4].tolist())) == 4


TRICKY = ["", None, " ", "...", "a", "ＦＵＬＬ　ｗｉｄｔｈ ﬁ ligature", "İstanbul ΣΊΣΥΦΟΣ straße", "naïve café — “quoted” ‘x’",
          "tab\tsep\nnew\r\nline", "emoji 🙂🙂 joined👍🏽word", "日本語のテキスト、句読点。", "ملاحظة: نص عربي!",
          "zero\u200bwidth soft\u00adhyphen", "combining e\u0301 vs é", "x" * 70 + " longer-than-8-byte-words",
          "12,345.67 $89 #tag @user snake_case kebab-case", "\u00a0nbsp\u2003em space\u3000ideographic"]


def test_tokenize_matches_reference_words_on_tricky_unicode():
    texts = pa.array(TRICKY * 3)
    h1, o1 = word_hashes(words(texts))
    h2, o2 = tokenize(texts)
    assert np.array_equal(o1, o2) and np.array_equal(h1, h2)
    assert words(pa.array(["naïve café — “quoted”"]))[0].as_py() == ["naïve", "café", "quoted"]


def test_short_text_hash_equals_window_of_same_length():
    h, o = tokenize(pa.array(["jumps over", "the fox jumps over it"]))
    short, _ = ngram_hashes(h[:2], o[:2], 13)  # shorter than n: one hash of the whole text
    windows, offsets = ngram_hashes(h[2:], o[1:] - 2, 2, short=False)
    assert short[0] in windows.tolist() and offsets.tolist() == [0, 4]


# --- MinHash -------------------------------------------------------------------------------

def test_signatures_equal_datasketch_for_same_shingles():
    long = " ".join(f"word{i % 37}" for i in range(120))  # more shingles than the dense path takes
    texts = pa.array(["write a short poem about the sea and the wind at night", "hi", "",
                      "Explain photosynthesis to a child in three sentences, please.", long])
    hashes, offsets = shingles(texts, 5)
    a, b = permutations(64, 7)
    sigs = signatures(hashes, offsets, a, b)
    for i in range(len(texts)):
        m = MinHash(num_perm=64, seed=7, hashfunc=lambda x: x)
        m.update_batch([int(x) for x in hashes[offsets[i]:offsets[i + 1]]])
        assert np.array_equal(m.hashvalues, sigs[i])
    assert (sigs[2] == np.iinfo(np.uint32).max).all()


def test_text_signatures_equal_signatures_of_shingles():
    texts = pa.array(TRICKY + ["write a short poem about the sea", " ".join(f"w{i % 41}" for i in range(700))])
    a, b = permutations(128, 1)
    for n in (1, 5, 13):
        assert np.array_equal(text_signatures(texts, n, a, b), signatures(*shingles(texts, n), a, b))


def test_lsh_params_follow_datasketch():
    assert lsh_params(0.7, 128) == (14, 9)


def _near_dup_rows() -> list[dict]:
    base = "Write a detailed travel guide for a weekend in Lisbon including food museums and walks"
    return [
        ex(base, "Guide A with many details."),                                  # 0 cluster rep (first)
        ex(base + " please", "Guide B, the longest answer of the whole cluster by far."),  # 1
        ex("Explain how vaccines train the immune system to recognise a virus", "x"),      # 2 alone
        ex(base.replace("and walks", "and hikes"), "Guide C."),                      # 3
        ex("Summarise the plot of a famous novel in five sentences for a student", "y"),   # 4 alone
    ]


def _minhash_decisions(rows: list[dict], **cfg) -> dict[int, tuple[str, dict]]:
    f = MinHashDedup(MinHashDedupConfig(**cfg))
    batch = with_positions(pa.RecordBatch.from_pylist(rows, schema=Example.arrow_schema()), 0)
    fit_in_process(f, [batch.slice(2), batch.slice(0, 2)])  # batches in any order: `_pos` decides
    _, removed = f.apply(batch)
    return removed


def test_minhash_clusters_and_keep_first():
    rows = _near_dup_rows()
    removed = _minhash_decisions(rows)
    assert sorted(removed) == [1, 3]
    for r in (1, 3):
        ev = removed[r][1]
        assert ev["kept_id"] == rows[0]["id"]
        assert set(ev) == {"kept_id", "similarity"}
        assert 0 < float(ev["similarity"]) <= 1


def test_minhash_keep_longest_output_and_lowest_id():
    rows = _near_dup_rows()
    removed = _minhash_decisions(rows, keep="longest_output")
    assert sorted(removed) == [0, 3] and removed[0][1]["kept_id"] == rows[1]["id"]
    removed = _minhash_decisions(rows, keep="lowest_id")
    lowest = min((rows[i]["id"], i) for i in (0, 1, 3))[1]
    assert sorted(removed) == sorted({0, 1, 3} - {lowest})


def test_minhash_keep_highest_score():
    rows = _near_dup_rows()
    rows[3] = ex(rows[3]["instruction"], "Guide C.", judge_score="9")
    rows[1] = ex(rows[1]["instruction"], rows[1]["output"], judge_score="8")
    removed = _minhash_decisions(rows, keep="highest_score")
    assert sorted(removed) == [0, 1] and removed[0][1]["kept_id"] == rows[3]["id"]


# --- stage ---------------------------------------------------------------------------------

def test_stage_exact_dedup_funnel_and_nothing_lost(tmp_path):
    ingest = [ex("Name three primary colours."), ex("name three  PRIMARY colours!!", "Other."),
              ex("List two prime numbers below ten.")]
    generated = [ex("Name three primary colours", "Third copy."), ex("Describe a rainbow in one sentence.")]
    out = run_filters(tmp_path, [ingest, generated], {"steps": [{"type": "exact_dedup"}]})
    kept = out.table().to_pylist()
    assert [r["instruction"] for r in kept] == ["Name three primary colours.", "List two prime numbers below ten.",
                                                "Describe a rainbow in one sentence."]
    rej = rejected(out)
    assert {r["filter"] for r in rej} == {"exact_dedup"}
    assert all(r["evidence"] and dict(r["evidence"])["kept_id"] == ingest[0]["id"] for r in rej)
    assert out.stats()["funnel"] == [{"filter": "exact_dedup", "rows_in": 5, "rows_out": 3}]
    assert_nothing_lost(out, [ingest, generated])


def test_stage_chain_of_passes_funnel(tmp_path):
    rows = _near_dup_rows() + [ex("Name three primary colours."), ex("Name three primary colours!"),
                               ex("Say hi", "Hello there.")]
    steps = [{"type": "heuristics", "languages": None}, {"type": "exact_dedup"},
             {"type": "minhash_dedup", "name": "near"}]
    out = run_filters(tmp_path, [rows], {"steps": steps, "batch_size": 3})
    funnel = out.stats()["funnel"]
    assert [f["filter"] for f in funnel] == ["heuristics", "exact_dedup", "near"]
    assert [(f["rows_in"], f["rows_out"]) for f in funnel] == [(8, 7), (7, 6), (6, 4)]
    assert out.stats()["rows_out"] == 4
    by_filter = Counter(r["filter"] for r in rejected(out))
    assert by_filter == {"heuristics": 1, "exact_dedup": 1, "near": 2}
    assert not list(out.path.glob("pass-*"))
    assert_nothing_lost(out, [rows])


def test_stage_with_no_steps_keeps_everything(tmp_path):
    rows = [ex("Name three primary colours.")]
    out = run_filters(tmp_path, [rows], {"steps": []})
    assert out.table().num_rows == 1 and out.stats()["funnel"] == []


def test_config_rejects_duplicate_names_and_unknown_type(tmp_path):
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"filters": {"steps": [{"type": "exact_dedup"}, {"type": "exact_dedup"}]}})
    with pytest.raises(ConfigError, match="filters.steps.0"):
        parse_config({"filters": {"steps": [{"type": "sparkle"}]}})
    cfg = parse_config({"filters": {}})
    assert [s.type for s in cfg.filters.steps] == ["exact_dedup", "minhash_dedup", "heuristics"]


# --- heuristics ----------------------------------------------------------------------------

@pytest.mark.parametrize(("row", "rule"), [
    ({"instruction": "Hi", "output": "Hello."}, "min_words"),
    ({"instruction": "Write a haiku about snow.", "output": "   "}, "empty_output"),
    ({"instruction": "Write a haiku about snow.", "output": "write a haiku about snow"}, "echo"),
    ({"instruction": "Repeat yourself as much as possible.", "output": "the cat sat " * 20}, "top_ngram_share"),
    ({"instruction": "Give the value of the expression.", "output": "= 3.14 * (2 + 7) / 9 - 1 ** 2 % 8 == 3.14"},
     "max_non_alpha"),
    ({"instruction": "Tell me how to pick a lock.", "output": "As an AI language model, I can't do that."},
     "refusal_phrases"),
    ({"instruction": "Write a Python function.", "output": "```python\ndef f():\n    return 1\n"}, "code_fences"),
    ({"instruction": "Escribe un poema corto sobre el mar y las olas.",
      "output": "El mar canta con las olas bajo la luna y el viento de la noche."}, "languages"),
])
def test_heuristic_rules(row, rule):
    h = Heuristics(HeuristicsConfig())
    verdict = h.check({"input": "", **row})
    assert verdict is not None and verdict[1]["rule"] == rule


def test_heuristics_keep_good_rows_and_can_be_switched_off():
    good = {"instruction": "Write a Python function that adds two numbers.", "input": "",
            "output": "```python\ndef add(a, b):\n    return a + b\n```\nIt returns the sum of both arguments."}
    assert Heuristics(HeuristicsConfig()).check(good) is None
    lenient = HeuristicsConfig(min_words={}, refusal_phrases=None, languages=None)
    assert Heuristics(lenient).check({"instruction": "Hi", "input": "", "output": "As an AI language model, no."}) \
        is None


def test_vectorised_rules_match_python_str_semantics():
    texts = [t or "" for t in TRICKY] + ["a\u00a0b\u2003c\x1cd", "  lead and trail  ", "x_y z-1 2"]
    arr = pa.array(texts)
    assert word_counts(arr).tolist() == [len(t.split()) for t in texts]
    expected = []
    for t in texts:
        solid = [c for c in t if not c.isspace()]
        expected.append(sum(not c.isalpha() for c in solid) / len(solid) if solid else 0.0)
    assert np.allclose(non_alpha_shares(arr), expected)


def test_language_rule_keeps_numeric_and_code_rows_and_rejects_foreign_ones():
    h = Heuristics(HeuristicsConfig(language_min_chars=0, min_words={}, top_ngram_share=None))
    numeric = ["Solve for x: 3x + 5 = 20\nx = 5", "Round 3.14159 to 2 decimals.\n3.14",
               "SELECT id, name FROM users WHERE age > 30;\n3 rows", "Q3 revenue: 4.2M (+12%)\n4.2M"]
    for text in numeric:
        instruction, _, output = text.partition("\n")
        assert h.check({"instruction": instruction + " now please", "input": "", "output": output or "ok"}) is None
    foreign = {"fr": "Explique pourquoi le ciel est bleu pendant la journée et rouge au coucher du soleil.",
               "de": "Fasse das Hauptargument des Artikels in zwei Sätzen zusammen, bitte.",
               "zh": "解释为什么天空在白天是蓝色的，而在日落时是红色的。"}
    for lang, text in foreign.items():
        verdict = h.check({"instruction": text, "input": "", "output": f"{text} {text}"})
        assert verdict is not None and verdict[1]["language"] == lang and float(verdict[1]["probability"]) >= 0.5
    batch = pa.RecordBatch.from_pylist([ex(foreign["fr"], foreign["fr"] * 2), ex("Write a poem about the sea.",
                                        "The sea is wide and the waves are calm tonight.")],
                                       schema=Example.arrow_schema())
    _, removed = h.apply(batch)
    assert list(removed) == [0] and removed[0][1]["rule"] == "languages"


def test_top_ngram_share_gopher():
    assert top_ngram_share(["a", "b", "c", "d"], 2) == 0.0
    assert top_ngram_share(["ab", "ab", "ab", "ab"], 2) == 1.0
