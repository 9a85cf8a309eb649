"""Export: every SFT/preference format, chat templates, splits, binarization, the Hub folder and card."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from instructforge.config import parse_config
from instructforge.engines.base import Engine, GenerationResult
from instructforge.export import stage as export_stage
from instructforge.export.card import parse_card, size_category
from instructforge.export.chat_templates import load_chat_template
from instructforge.export.config import PreferenceConfig, PromptConfig, SplitConfig
from instructforge.export.formats import preference_rows, sft_row
from instructforge.export.preference import (
    Candidate,
    binarize,
    judge_rule,
    parse_grades,
    sample_candidates,
    sampling_plan,
)
from instructforge.export.splits import assign_splits
from instructforge.records import Example, PreferencePair
from instructforge.runs import RunDir, read_table

EX = Example(instruction="Translate to French.", input="good morning", output="bonjour", task="translate")
EX_NO_INPUT = Example(instruction="Name a prime number.", output="7", task="math")


class ScriptedEngine(Engine):
    """Answers with `answers[prompt]` (cycled over samples); the judge grades by `grades[answer]`."""

    def __init__(self, answers: dict[str, list[str]], grades: dict[str, int]):
        self.answers, self.grades = answers, grades
        self.calls: list[list] = []

    def model_identity(self) -> str:
        return "scripted-model"

    def generate(self, requests, *, progress=False):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            user = r.messages[-1]["content"]
            if r.structured is not None:
                answer = user.split("Answer:\n", 1)[1].split("\n\nAspects:", 1)[0]
                aspects = r.structured.json_schema["required"]
                grade = self.grades.get(answer)
                text = "not json" if grade is None else json.dumps({a: grade for a in aspects})
                out.append(GenerationResult(texts=[text], finish_reasons=["stop"]))
            else:
                pool = self.answers[user]
                texts = [pool[(int(r.sampling.temperature * 10) + i) % len(pool)] for i in range(r.sampling.n)]
                out.append(GenerationResult(texts=texts, finish_reasons=["stop"] * len(texts)))
        return out


# ---- formats ---------------------------------------------------------------------------------------

def test_user_turn_joins_instruction_and_input_as_configured():
    p = PromptConfig(system="Answer briefly.", user_template="{input}\n---\n{instruction}")
    row = sft_row("messages", EX, p)
    assert row["messages"] == [{"role": "system", "content": "Answer briefly."},
                               {"role": "user", "content": "good morning\n---\nTranslate to French."},
                               {"role": "assistant", "content": "bonjour"}]
    assert sft_row("messages", EX_NO_INPUT, p)["messages"][1]["content"] == "Name a prime number."
    with pytest.raises(ValueError, match="user_template"):
        PromptConfig(user_template="{instruction} only")


def test_every_sft_format():
    p = PromptConfig()
    assert sft_row("messages", EX, p) == {"id": EX.id, "task": "translate", "messages": [
        {"role": "user", "content": "Translate to French.\n\ngood morning"},
        {"role": "assistant", "content": "bonjour"}]}
    pc = sft_row("prompt_completion", EX, p)
    assert pc["prompt"] == [{"role": "user", "content": "Translate to French.\n\ngood morning"}]
    assert pc["completion"] == [{"role": "assistant", "content": "bonjour"}]
    assert sft_row("alpaca", EX, p) == {"id": EX.id, "task": "translate", "instruction": "Translate to French.",
                                        "input": "good morning", "output": "bonjour",
                                        "prompt": "Translate to French.\n\ngood morning"}
    assert sft_row("alpaca", EX, PromptConfig(system="S"))["system"] == "S"
    assert sft_row("sharegpt", EX, PromptConfig(system="S"))["conversations"] == [
        {"from": "system", "value": "S"}, {"from": "human", "value": "Translate to French.\n\ngood morning"},
        {"from": "gpt", "value": "bonjour"}]
    text = sft_row("text", EX, p, load_chat_template("chatml"))["text"]
    # no end token after the answer: the trainer appends it (TRL when missing, LLaMA-Factory always)
    assert text == ("<|im_start|>user\nTranslate to French.\n\ngood morning<|im_end|>\n"
                    "<|im_start|>assistant\nbonjour")


def test_preference_formats():
    pair = PreferencePair(prompt="Name a prime number.", chosen="7", rejected="8",
                          scores={"chosen": 5.0, "rejected": 1.0}, judge="rule:length",
                          meta={"model": "m", "candidates": "[]"})
    p = PromptConfig()
    [dpo] = preference_rows("preference", pair, EX_NO_INPUT, p)
    assert dpo["prompt"] == [{"role": "user", "content": "Name a prime number."}]
    assert dpo["chosen"] == [{"role": "assistant", "content": "7"}]
    assert dpo["rejected"] == [{"role": "assistant", "content": "8"}]
    assert (dpo["score_chosen"], dpo["score_rejected"]) == (5.0, 1.0)
    assert json.loads(dpo["provenance"])["model"] == "m"
    kto = preference_rows("kto", pair, EX_NO_INPUT, p)
    assert [(r["completion"][0]["content"], r["label"], r["score"]) for r in kto] == [("7", True, 5.0),
                                                                                       ("8", False, 1.0)]
    [rank] = preference_rows("ranking", pair, EX_NO_INPUT, p)
    assert (rank["instruction"], rank["input"], rank["prompt"], rank["chosen"], rank["rejected"]) == (
        "Name a prime number.", "", "Name a prime number.", "7", "8")


# ---- chat templates ----------------------------------------------------------------------------------

CONV = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}]


def test_builtin_chat_templates():
    assert load_chat_template("chatml").render(CONV[:2], add_generation_prompt=True) == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert load_chat_template("llama3").render(CONV) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>")
    alpaca = load_chat_template("alpaca")
    assert alpaca.render(CONV) == "Be kind.\n\n### Instruction:\nHi\n\n### Response:\nHello!"
    assert alpaca.render(CONV[1:2], add_generation_prompt=True).endswith("### Instruction:\nHi\n\n### Response:\n")
    assert alpaca.render(CONV[1:2]).startswith("What follows is a request")


def test_tokenizer_chat_template_from_model_folder(bundled_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    template = load_chat_template("tokenizer", bundled_model_dir)
    assert template.source == tok.chat_template
    text = sft_row("text", EX, PromptConfig(system="Be kind."), template)["text"]
    full = tok.apply_chat_template(sft_row("messages", EX, PromptConfig(system="Be kind."))["messages"],
                                   tokenize=False)
    assert full == text + "<|im_end|>\n" and template.end_token == tok.eos_token == "<|im_end|>"
    assert text.startswith("<|im_start|>system\nBe kind.<|im_end|>") and text.endswith("bonjour")


def test_no_system_prompt_means_no_system_turn_even_when_the_template_adds_one(bundled_model_dir):
    template = load_chat_template("tokenizer", bundled_model_dir)
    assert "You are a helpful AI assistant named SmolLM" in template.default_system  # SmolLM2's default
    text = sft_row("text", EX, PromptConfig(), template)["text"]
    assert text == ("<|im_start|>user\nTranslate to French.\n\ngood morning<|im_end|>\n"
                    "<|im_start|>assistant\nbonjour")
    for name in ("chatml", "llama3", "alpaca"):  # these add no system turn of their own
        assert load_chat_template(name).default_system is None


def test_injected_system_turns_are_removed_by_any_template_or_refused():
    from instructforge.errors import InstructforgeError
    from instructforge.export.chat_templates import JinjaTemplate

    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    dated = JinjaTemplate("dated", (  # a default system turn only when there is none (Llama-3-style headers)
        "<|begin_of_text|>{% if messages[0].role != 'system' %}<|start_header_id|>system<|end_header_id|>\n\n"
        "Knowledge cutoff: 2023<|eot_id|>{% endif %}{% for m in messages %}<|start_header_id|>{{ m.role }}"
        "<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}"))
    assert dated.training_text(conv) == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                                         "<|start_header_id|>assistant<|end_header_id|>\n\nYo")
    assert "Knowledge cutoff" not in dated.training_text([{"role": "system", "content": "S"}, *conv])
    always = JinjaTemplate("always", (  # the default text is in the system turn even when one is given
        "{% set sys = messages[0].content if messages[0].role == 'system' else '' %}<|im_start|>system\n"
        "Knowledge cutoff: 2023\n{{ sys }}<|im_end|>\n{% for m in messages if m.role != 'system' %}<|im_start|>"
        "{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"))
    with pytest.raises(InstructforgeError, match="cannot be removed"):
        always.training_text(conv)
    assert always.training_text([{"role": "system", "content": "S"}, *conv]).startswith(
        "<|im_start|>system\nKnowledge cutoff: 2023\nS<|im_end|>")


# ---- splits ----------------------------------------------------------------------------------------

def test_splits_are_deterministic_and_stable_under_additions():
    ids = [f"id{i}" for i in range(2000)]
    cfg = SplitConfig(train=0.8, validation=0.1, test=0.1)
    a = assign_splits(ids, ["t"] * 2000, cfg, seed=0)
    assert a == assign_splits(ids, ["t"] * 2000, cfg, seed=0)
    # each row is decided alone: a subset, reordered, keeps its splits
    sub = ids[::-7]
    assert assign_splits(sub, ["t"] * len(sub), cfg) == [a[ids.index(i)] for i in sub]
    counts = {s: a.count(s) for s in ("train", "validation", "test")}
    assert 1500 < counts["train"] < 1700 and 130 < counts["validation"] < 270 and 130 < counts["test"] < 270
    assert assign_splits(ids, ["t"] * 2000, cfg, seed=1) != a
    assert set(assign_splits(ids, ["t"] * 2000, SplitConfig(train=1, validation=0, test=0))) == {"train"}
    with pytest.raises(ValueError):
        SplitConfig(train=0.5, validation=0.1, test=0.1)


def test_stratified_splits_give_every_task_its_share():
    ids = [f"id{i}" for i in range(60)]
    tasks = ["big"] * 40 + ["small"] * 20
    cfg = SplitConfig(train=0.5, validation=0.25, test=0.25, stratify_by_task=True)
    out = assign_splits(ids, tasks, cfg)
    for task, n in (("big", 40), ("small", 20)):
        mine = [s for s, t in zip(out, tasks, strict=True) if t == task]
        assert (mine.count("train"), mine.count("validation"), mine.count("test")) == (n // 2, n // 4, n // 4)
    assert out == assign_splits(ids, tasks, cfg)
    assert assign_splits(["solo"], ["x"], cfg) == ["train"]


# ---- preference --------------------------------------------------------------------------------------

def _cands(*scores: float | None) -> list[Candidate]:
    return [Candidate(f"answer {i}", 0.7, "stop", s) for i, s in enumerate(scores)]


def test_binarization_with_ties():
    rng = random.Random(0)
    assert binarize(_cands(3, 3, 3), "lowest", rng).reason == "tie"
    assert binarize(_cands(4, None), "lowest", rng).reason == "too_few_answers"
    same = [Candidate("same", 0.3, "stop", 5), Candidate("same", 1.0, "stop", 1)]
    assert binarize(same, "lowest", rng).reason == "too_few_answers"
    b = binarize(_cands(2, 5, 5, 1, 3), "lowest", rng)  # tied best: the first one is chosen
    assert (b.chosen.text, b.rejected.text) == ("answer 1", "answer 3")
    picks = {binarize(_cands(2, 5, 5, 1, 3), "random", random.Random(s)).rejected.text for s in range(40)}
    assert picks == {"answer 0", "answer 3", "answer 4"}  # strictly worse than the best, never a tie


def test_judge_grades_are_parsed_strictly():
    aspects = ["helpfulness", "honesty"]
    assert parse_grades('{"helpfulness": 4, "honesty": 5}', aspects) == {"helpfulness": 4.0, "honesty": 5.0}
    assert parse_grades('Sure: {"helpfulness": 4, "honesty": 5} done', aspects) == {"helpfulness": 4.0,
                                                                                     "honesty": 5.0}
    for bad in ('{"helpfulness": 4}', '{"helpfulness": 9, "honesty": 1}', "{oops", "[]",
                '{"helpfulness": true, "honesty": 1}'):
        assert parse_grades(bad, aspects) is None


def test_sampling_is_one_batched_call_over_temperatures():
    cfg = PreferenceConfig(k=5, temperatures=[0.2, 1.0])
    assert sampling_plan(cfg) == [(0.2, 3), (1.0, 2)]
    engine = ScriptedEngine({"p1": ["a", "b", "c"], "p2": ["x"]}, {})
    cands = sample_candidates(engine, [[{"role": "user", "content": "p1"}], [{"role": "user", "content": "p2"}]],
                              cfg, seed=3)
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 4
    assert all(r.sampling.seed == 3 for r in engine.calls[0])
    assert [len(c) for c in cands] == [5, 5] and {c.temperature for c in cands[0]} == {0.2, 1.0}
    judge_rule("reference", ["a b", "x"], cands)
    assert {c.text: c.score for c in cands[0]}["a"] == pytest.approx(2 / 3)


# ---- the stage -------------------------------------------------------------------------------------

EXAMPLES = [Example(instruction=f"Give the word number {i}.", input="in English" if i % 2 else "",
                    output=f"word {i}", task=f"task{i % 3}", source="seeds:seed_tasks.jsonl",
                    template="seed", meta={"seed_id": f"seed_task_{i}"}) for i in range(24)]


def _ingest(run: RunDir):
    def fn(ctx):
        ctx.write([e.model_dump() for e in EXAMPLES])

    out, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="test", fn=fn)
    return out


def _export(tmp_path: Path, section: dict, engine: Engine | None = None):
    cfg = parse_config({"run": {"name": "t", "root": str(tmp_path)}, "export": section})
    run = RunDir(tmp_path / "t")
    out, _ = run.run_stage(4, "export", config=section, inputs=[_ingest(run)], code="test",
                           fn=export_stage.run, section=cfg.export, run=cfg.context(), engine_factory=lambda: engine)
    return out


def _user(ex: Example) -> str:
    return f"{ex.instruction}\n\n{ex.input}" if ex.input else ex.instruction


def length_judged_hub(tmp_path: Path, splits: dict[str, float], formats: list[str]) -> Path:
    """The hub folder of an export whose pairs the `length` judge picks from two scripted answers
    per prompt (a longer good one, a short bad one), with a system prompt (trainer-format tests)."""
    answers = {_user(e): [f"a longer good answer {i}", f"bad {i}"] for i, e in enumerate(EXAMPLES)}
    section = {"chat_template": "chatml", "splits": splits, "prompt": {"system": "Be brief."},
               "preference": {"k": 2, "temperatures": [0.0, 0.5], "judge": "length", "formats": formats}}
    return _export(tmp_path, section, ScriptedEngine(answers, {})).path / "hub"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export with every format and preference pairs (a scripted engine; some prompts tie)."""
    answers = {_user(e): [f"good answer {i}", f"bad {i}", f"meh {i}"] for i, e in enumerate(EXAMPLES)}
    grades = {}
    for i in range(len(EXAMPLES)):
        tie = i % 4 == 0
        grades.update({f"good answer {i}": 3 if tie else 5, f"bad {i}": 3 if tie else 1, f"meh {i}": 3})
    tmp = tmp_path_factory.mktemp("export")
    section = {"formats": ["messages", "prompt_completion", "alpaca", "sharegpt", "text"],
               "chat_template": "chatml", "splits": {"train": 0.5, "validation": 0.25, "test": 0.25},
               "prompt": {"system": "You are terse."},
               "preference": {"k": 3, "temperatures": [0.0, 0.1, 0.2]}}
    return _export(tmp, section, ScriptedEngine(answers, grades))


def test_stage_writes_examples_with_splits_and_hub_layout(exported):
    rows = exported.table().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(e.id for e in EXAMPLES)
    assert {dict(r["meta"])["split"] for r in rows} == {"train", "validation", "test"}
    hub = exported.path / "hub"
    files = sorted(p.relative_to(hub).as_posix() for p in hub.rglob("*.parquet"))
    configs = ["preference", "preference_kto", "preference_ranking", "sft", "sft_alpaca",
               "sft_prompt_completion", "sft_sharegpt", "sft_text"]
    assert sorted({f.split("/")[1] for f in files}) == configs
    assert all(f.rsplit("/", 1)[1] in {f"{s}-00000-of-00001.parquet" for s in ("train", "validation", "test")}
               for f in files)
    info = json.loads((hub / "dataset_info.json").read_text())
    assert info["instructforge_sft_alpaca"]["columns"] == {"prompt": "prompt", "response": "output",
                                                           "system": "system"}
    assert info["instructforge_preference_ranking"]["ranking"] is True
    # every config LLaMA-Factory reads, every split its own entry
    assert sorted(info) == sorted(f"instructforge_{c}{s}" for c in ("sft", "sft_alpaca", "sft_sharegpt", "sft_text",
                                                                     "preference_ranking")
                                  for s in ("", "_validation", "_test"))
    assert info["instructforge_sft_text_test"]["file_name"] == "data/sft_text/test-00000-of-00001.parquet"
    assert all((hub / s["file_name"]).exists() for s in info.values())


def test_preference_pairs_and_ties_are_recorded(exported):
    st = exported.stats()["preference"]
    assert (st["prompts"], st["pairs"], st["dropped"]) == (24, 18, {"tie": 6})
    pairs = read_table(exported.path / "pairs").to_pylist()
    assert len(pairs) == 18
    p = pairs[0]
    assert p["chosen"].startswith("good answer") and p["rejected"].startswith("bad")
    assert dict(p["scores"])["chosen"] == 5.0 and dict(p["scores"])["rejected.honesty"] == 1.0
    meta = dict(p["meta"])
    assert meta["model"] == "scripted-model" and len(json.loads(meta["candidates"])) == 3
    assert json.loads(meta["sampling"])["temperatures"] == [0.0, 0.1, 0.2]
    assert p["judge"] == "llm:scripted-model:rubric(helpfulness,honesty,instruction_following)"
    rejected = read_table(exported.rejected).to_pylist()
    assert len(rejected) == 6 and {(r["filter"], r["reason"]) for r in rejected} == {("preference", "tie")}
    assert all(s["score"] == 3.0 for r in rejected for s in json.loads(dict(r["evidence"])["candidates"]))


def test_load_dataset_round_trip_for_every_config_and_split(exported, tmp_path):
    datasets = pytest.importorskip("datasets")
    hub = exported.path / "hub"
    meta, _ = parse_card((hub / "README.md").read_text())
    for config in meta["configs"]:
        name = config["config_name"]
        loaded = datasets.load_dataset(str(hub), name, cache_dir=str(tmp_path / "cache"))
        assert sorted(loaded) == sorted(e["split"] for e in config["data_files"])
        for split, ds in loaded.items():
            written = pq.read_table(hub / f"data/{name}/{split}-00000-of-00001.parquet")
            assert ds.to_list() == written.to_pylist(), (name, split)
            assert ds.column_names == written.column_names


def test_card_yaml_and_body(exported):
    meta, body = parse_card((exported.path / "hub" / "README.md").read_text())
    assert meta["license"] == "other" and meta["task_categories"] == ["text-generation"]
    assert (meta["license_name"], meta["license_link"], meta["language"]) == ("mixed-sources",
                                                                             "README.md#provenance", ["en"])
    assert meta["size_categories"] == ["n<1K"]
    assert {"instruction-tuning", "dpo"} <= set(meta["tags"])
    sft = next(c for c in meta["configs"] if c["config_name"] == "sft")
    assert sft["default"] is True
    assert sft["data_files"][0] == {"split": "train", "path": "data/sft/train-*"}
    for needle in ("## Provenance", "`scripted-model`", "| ingest | `test` |", "`seeds:seed_tasks.jsonl` |  | 24 |",
                   "## One record per config", "template of **chatml**", "That token must be `<|im_end|>`",
                   '"You are terse."', "prompts without a pair: tie: 6", "`instructforge_sft_alpaca_validation`",
                   "type: chat_template.default", "instructforge run instructforge.yaml", "Self-Instruct: Aligning",
                   "TRL `DPOTrainer` reads its strings as plain text", "role names `human`/`gpt`"):
        assert needle in body, needle
    assert "allal2025smollm2" not in body  # the model's citation only for the model that made the data
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K"


def test_card_round_trips_through_huggingface_hub_and_its_features_match_the_parquet(exported):
    from datasets import Features
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    hub = exported.path / "hub"
    text = (hub / "README.md").read_text()
    card = DatasetCard(text)
    meta, _ = parse_card(text)
    assert card.data.to_dict() == meta and DatasetCard(str(card)).data.to_dict() == meta
    from datasets.utils.metadata import MetadataConfigs

    configs = MetadataConfigs.from_dataset_card_data(card.data)  # checks every data_files entry's fields
    assert list(configs) == [c["config_name"] for c in meta["configs"]] and configs.get_default_config_name() == "sft"
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert sorted(infos) == sorted(c["config_name"] for c in meta["configs"])
    for name, info in infos.items():
        for split in info.splits:
            table = pq.read_table(hub / f"data/{name}/{split}-00000-of-00001.parquet")
            assert info.features == Features.from_arrow_schema(table.schema), name
            assert info.splits[split].num_examples == table.num_rows
            assert info.splits[split].num_bytes == pytest.approx(table.nbytes, rel=0.05)  # Arrow buffers, padded


def test_card_rerendered_with_the_repo_id_and_training_results(exported):
    from instructforge.export.card import CARD_FACTS, CardFacts, render_card

    facts = CardFacts.load(exported.path / CARD_FACTS)
    assert (exported.path / "hub" / "README.md").read_text() == render_card(facts)
    evaluation = {"model": "m", "metrics": {"rougeL": {"base": 0.2, "adapter": 0.35}},
                  "per_task": {"qa": {"loss": {"base": 0.5, "adapter": 0.25}}}}
    text = render_card(facts, repo_id="me/my-data", train_eval=evaluation)
    assert 'load_dataset("me/my-data", "sft")' in text and "path/to/this/folder" not in text
    assert "- path: me/my-data" in text
    assert "| task | rougeL | loss |" in text
    assert "| all | 0.2 -> 0.35 |  |" in text and "| qa |  | 0.5 -> 0.25 |" in text
    facts.stages.append({"stage": "filter", "fingerprint": "f", "code": "c", "files": {},
                         "section": {"steps": [{"type": "minhash_dedup", "threshold": 0.7, "num_perm": 128}]},
                         "stats": {"funnel": [{"filter": "minhash_dedup", "rows_in": 30, "rows_out": 24}]}})
    text = render_card(facts)
    assert "| filter | minhash_dedup | 30 | 24 | 6 |" in text and '"threshold": 0.7' in text
    stale = exported.path.parent / "stale-card.json"
    stale.write_text(json.dumps({"run_name": "old"}))
    from instructforge.errors import InstructforgeError

    with pytest.raises(InstructforgeError, match="stale-card.json: cannot read the card facts"):
        CardFacts.load(stale)


def test_rule_judge_and_empty_splits_not_written(tmp_path):
    section = {"formats": ["messages"], "splits": {"train": 1.0, "validation": 0.0, "test": 0.0},
               "preference": {"k": 2, "temperatures": [0.0, 0.5], "judge": "length", "formats": ["preference"]}}
    answers = {_user(e): ["short", "a much longer answer"] for e in EXAMPLES}
    out = _export(tmp_path, section, ScriptedEngine(answers, {}))
    hub = out.path / "hub"
    assert sorted(p.relative_to(hub).as_posix() for p in hub.rglob("*.parquet")) == [
        "data/preference/train-00000-of-00001.parquet", "data/sft/train-00000-of-00001.parquet"]
    info = json.loads((hub / "dataset_info.json").read_text())  # `sft` only: LLaMA-Factory reads no `preference`
    assert list(info) == ["instructforge_sft"] and info["instructforge_sft"]["tags"]["role_tag"] == "role"
    rows = pq.read_table(hub / "data/preference/train-00000-of-00001.parquet").to_pylist()
    assert len(rows) == 24 and all(r["chosen"][0]["content"] == "a much longer answer" for r in rows)
    assert rows[0]["judge"] == "rule:length"


def test_shards_are_numbered_of_total(tmp_path):
    out = _export(tmp_path, {"formats": ["alpaca"], "shard_rows": 5,
                             "splits": {"train": 1.0, "validation": 0.0, "test": 0.0}})
    files = sorted(p.name for p in (out.path / "hub/data/sft_alpaca").iterdir())
    assert files == [f"train-{i:05d}-of-00005.parquet" for i in range(5)]
    info = json.loads((out.path / "hub/dataset_info.json").read_text())
    assert sorted(info) == [f"instructforge_sft_alpaca_{i:05d}" for i in range(5)]
    assert [info[f"instructforge_sft_alpaca_{i:05d}"]["file_name"] for i in range(5)] == [
        f"data/sft_alpaca/{f}" for f in files]


def test_card_lineage_follows_the_manifests_and_refuses_a_rerun_parent(tmp_path):
    from instructforge.errors import InstructforgeError

    run = RunDir(tmp_path / "lineage")
    ingest = _ingest(run)
    filt, _ = run.run_stage(3, "filter", config={}, inputs=[ingest], code="test",
                            fn=lambda ctx: ctx.write(ctx.inputs[0].table()))
    assert [o.path.name for o in export_stage.upstream([filt])] == ["01-ingest", "03-filter"]
    run.run_stage(1, "ingest", config={"changed": True}, inputs=[], code="test",
                  fn=lambda ctx: ctx.write([e.model_dump() for e in EXAMPLES[:3]]))
    with pytest.raises(InstructforgeError, match="01-ingest: rerun since 03-filter read it"):
        export_stage.upstream([filt])
