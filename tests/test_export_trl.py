"""The exports in the tools that read them: TRL's dataset helpers, SFT and DPO tokenization with the
bundled model, and preference pairs generated end to end by the real transformers engine."""

from __future__ import annotations

import json

import pytest

from instructforge.config import parse_config
from instructforge.export import stage as export_stage
from instructforge.export.config import PreferenceConfig
from instructforge.export.preference import judge_llm, sample_candidates
from instructforge.records import Example
from instructforge.runs import RunDir, read_table

pytestmark = pytest.mark.slow

EXAMPLES = [Example(instruction=q, output=a, task="qa", source="seeds:s.jsonl") for q, a in [
    ("What is the capital of France?", "Paris."),
    ("Name a colour of the sky.", "Blue."),
    ("How many legs does a spider have?", "Eight."),
    ("What is two plus two?", "Four."),
    ("Give a synonym of happy.", "Glad."),
    ("What do bees make?", "Honey."),
]]


class FixedEngine:
    """A long answer at low temperature, a short one at high: a `length` judge never ties."""

    def model_identity(self) -> str:
        return "fixed"

    def generate(self, requests, *, progress=False):
        from instructforge.engines.base import GenerationResult

        return [GenerationResult(texts=["A careful answer." if r.sampling.temperature < 0.5 else "Short."]
                                 * r.sampling.n, finish_reasons=["stop"] * r.sampling.n) for r in requests]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl")
    section = {"chat_template": "tokenizer", "splits": {"train": 1.0, "validation": 0.0, "test": 0.0},
               "preference": {"k": 2, "temperatures": [0.2, 0.9], "judge": "length"}}
    cfg = parse_config({"run": {"name": "trl", "root": str(root)}, "export": section})
    run = RunDir(root / "trl")
    ingest, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="t",
                              fn=lambda ctx: ctx.write([e.model_dump() for e in EXAMPLES]))
    out, _ = run.run_stage(4, "export", config=section, inputs=[ingest], code="t", fn=export_stage.run,
                           section=cfg.export, run=cfg.context(), engine_factory=FixedEngine)
    return out.path / "hub"


def _load(hub, config, tmp_path):
    from datasets import load_dataset

    return load_dataset(str(hub), config, split="train", cache_dir=str(tmp_path / "cache"))


def test_trl_helpers_accept_every_conversational_export(hub, tmp_path, bundled_model_dir):
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational, is_conversational_from_value

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    for config, keys in (("sft", {"text"}), ("sft_prompt_completion", {"prompt", "completion"}),
                         ("preference", {"prompt", "chosen", "rejected"}),
                         ("preference_kto", {"prompt", "completion", "label"})):
        row = _load(hub, config, tmp_path)[0]
        assert is_conversational(row), config
        rendered = apply_chat_template(row, tok)
        assert set(rendered) == keys, config
        assert all(isinstance(rendered[k], str) for k in keys - {"label"})
    pc = apply_chat_template(_load(hub, "sft_prompt_completion", tmp_path)[0], tok)
    assert pc["prompt"].endswith("What is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert pc["completion"] == "Paris.<|im_end|>\n"
    assert is_conversational_from_value(_load(hub, "sft_sharegpt", tmp_path)[0])
    text = _load(hub, "sft_text", tmp_path)[0]["text"]
    messages = _load(hub, "sft", tmp_path)[0]["messages"]
    # the tokenizer's rendering, less SmolLM2's injected default system turn and the final end token
    assert tok.apply_chat_template(messages, tokenize=False).endswith("<|im_end|>\n" + text + "<|im_end|>\n")
    assert text == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis."


def test_the_traps_the_card_warns_about_are_real_in_trl(hub, tmp_path, bundled_model_dir):
    from transformers import AutoTokenizer
    from trl.data_utils import (
        apply_chat_template,
        is_conversational,
        maybe_apply_chat_template,
        maybe_convert_to_chatml,
        maybe_extract_prompt,
    )

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    sharegpt = maybe_convert_to_chatml(_load(hub, "sft_sharegpt", tmp_path)[0])  # what SFTTrainer does first
    assert "<|im_start|>human\n" in apply_chat_template(sharegpt, tok)["text"]  # trains on `human`/`gpt` turns
    ranking = _load(hub, "preference_ranking", tmp_path)[0]
    assert not is_conversational(ranking) and maybe_extract_prompt(ranking)["prompt"] == ranking["prompt"]
    assert maybe_apply_chat_template(ranking, tok)["prompt"] == ranking["prompt"]  # plain text, no chat template


@pytest.fixture(scope="module")
def model(bundled_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(bundled_model_dir), AutoTokenizer.from_pretrained(bundled_model_dir)


def _args(cls, tmp_path, name, **extra):
    return cls(output_dir=str(tmp_path / name), max_steps=1, per_device_train_batch_size=2, report_to="none",
               use_cpu=True, dataset_num_proc=None, save_strategy="no", logging_steps=1, **extra)


def test_sft_trainer_trains_a_step_on_each_sft_config_with_one_end_token(hub, tmp_path, model):
    from trl import SFTConfig, SFTTrainer

    lm, tok = model
    for config in ("sft", "sft_prompt_completion", "sft_text"):
        trainer = SFTTrainer(model=lm, processing_class=tok, train_dataset=_load(hub, config, tmp_path),
                             args=_args(SFTConfig, tmp_path, config, max_length=128))
        row = trainer.train_dataset[0]
        ids = row["input_ids"]
        if config == "sft_text":  # TRL appended the end token the export left off: exactly one
            assert ids[-1] == tok.eos_token_id and ids[-2] != tok.eos_token_id
            # no system prompt configured -> none in the text (SmolLM2's template would add its own)
            assert "You are a helpful AI assistant" not in tok.decode(ids)
            assert tok.decode(ids).endswith("Paris.<|im_end|>")
        if config == "sft_prompt_completion":  # loss only on the answer: "Paris." and the end token
            answer = [t for t in row["labels"] if t != -100]
            assert tok.decode(answer).startswith("Paris.") and len(answer) < len(ids)
        result = trainer.train()
        assert result.global_step == 1 and result.training_loss > 0, config


def test_dpo_and_kto_trainers_train_a_step_on_the_preference_configs(hub, tmp_path, model):
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    lm, tok = model
    dpo = DPOTrainer(model=lm, processing_class=tok, train_dataset=_load(hub, "preference", tmp_path),
                     args=_args(DPOConfig, tmp_path, "dpo", max_length=128))
    row = dpo.train_dataset[0]
    assert tok.decode(row["chosen_ids"]).startswith("A careful answer.")
    assert tok.decode(row["rejected_ids"]).startswith("Short.")
    assert tok.decode(row["prompt_ids"]).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert dpo.train().global_step == 1
    kto = KTOTrainer(model=lm, processing_class=tok, train_dataset=_load(hub, "preference_kto", tmp_path),
                     args=_args(KTOConfig, tmp_path, "kto", max_length=128))
    assert sorted(set(kto.train_dataset["label"])) == [False, True]
    assert kto.train().global_step == 1


def test_preference_generation_with_the_real_engine(hf_engine):
    cfg = PreferenceConfig(k=2, temperatures=[0.7, 1.2], max_tokens=12, judge_max_tokens=40)
    prompts = [[{"role": "user", "content": e.instruction}] for e in EXAMPLES[:2]]
    cands = sample_candidates(hf_engine, prompts, cfg, seed=1)
    assert [len(c) for c in cands] == [2, 2]
    assert all(c.text.strip() for cs in cands for c in cs)
    failed = judge_llm(hf_engine, [e.instruction for e in EXAMPLES[:2]], cands, cfg, seed=1)
    graded = [c for cs in cands for c in cs if c.score is not None]
    assert failed + len(graded) == 4 and graded  # the JSON schema makes grades parseable
    for c in graded:
        assert set(c.aspects) == set(cfg.aspects) and 1 <= c.score <= 5


def test_export_stage_with_the_real_engine(tmp_path, hf_engine):
    section = {"formats": ["messages"], "preference": {"k": 2, "temperatures": [0.8, 1.3], "max_tokens": 12,
                                                       "judge": "reference", "max_prompts": 2}}
    cfg = parse_config({"run": {"name": "real", "root": str(tmp_path)}, "export": section})
    run = RunDir(tmp_path / "real")
    ingest, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="t",
                              fn=lambda ctx: ctx.write([e.model_dump() for e in EXAMPLES]))
    out, _ = run.run_stage(4, "export", config=section, inputs=[ingest], code="t", fn=export_stage.run,
                           section=cfg.export, run=cfg.context(), engine_factory=lambda: hf_engine)
    st = out.stats()["preference"]
    assert st["prompts"] == 2 and st["pairs"] + sum(st["dropped"].values()) == 2
    assert st["model"] == hf_engine.model_identity()
    pairs = read_table(out.path / "pairs").to_pylist()
    for p in pairs:
        assert dict(p["scores"])["chosen"] > dict(p["scores"])["rejected"]
        assert json.loads(dict(p["meta"])["sampling"])["max_tokens"] == 12
