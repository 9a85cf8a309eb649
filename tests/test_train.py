"""The LoRA trainer: config, export reading, device settings, and real SFT/DPO runs on the bundled model.

The model-backed tests train for a handful of steps on tiny repeated datasets (short sequences,
batch 4), so they check direction (loss down, margin up, resume point) in well under a minute each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from instructforge.config import parse_config
from instructforge.errors import ConfigError, InputError
from instructforge.runs import RunDir, StageOutput
from instructforge.train.config import TrainConfig
from instructforge.train.data import load_splits, sft_rows, write_split
from instructforge.train.device import detect

ANIMALS = ["otter", "heron", "lynx", "bison"]
SYSTEM = {"role": "system", "content": "Be brief."}  # shorter than the model's default system turn


def chat(i: int) -> dict:
    a = ANIMALS[i % 4]
    return {"messages": [SYSTEM, {"role": "user", "content": f"Name animal number {i % 4}."},
                         {"role": "assistant", "content": f"Animal number {i % 4} is the {a}."}]}


def pair(i: int) -> dict:
    return {"prompt": [SYSTEM, {"role": "user", "content": f"Greet me ({i % 4})."}],
            "chosen": [{"role": "assistant", "content": "Hello there."}],
            "rejected": [{"role": "assistant", "content": "No. Go away."}],
            "score_chosen": 9.0, "score_rejected": 1.0}


def make_export(root: Path, n: int = 16) -> StageOutput:
    """A minimal 04-export stage folder in the Hub layout, independent of the export stage."""
    data = root / "04-export" / "hub" / "data"
    write_split(data / "sft", "train", [chat(i) for i in range(n)])
    write_split(data / "sft", "validation", [chat(i) for i in range(4)])
    write_split(data / "sft", "test", [chat(i) for i in range(2)])
    write_split(data / "preference", "train", [pair(i) for i in range(n)])
    return StageOutput(root / "04-export", "export-fp")


# -- no model -----------------------------------------------------------------------------------

def test_config_rejects_unknown_and_bad_keys():
    cfg = parse_config({"train": {"method": "sft_dpo", "lora": {"r": 4}, "dpo": {"beta": 0.2}}})
    assert cfg.train.lora.r == 4 and cfg.train.dpo.beta == 0.2 and cfg.train.base_model == "bundled"
    with pytest.raises(ConfigError, match="train.lora.rank: unknown key"):
        parse_config({"train": {"lora": {"rank": 4}}})
    with pytest.raises(ConfigError, match="train.method"):
        parse_config({"train": {"method": "ppo"}})


def test_load_splits_reads_present_splits(tmp_path):
    export = make_export(tmp_path, n=6)
    splits = load_splits(export.path / "hub" / "data" / "sft", ("messages",))
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "validation": 4, "test": 2}
    rows = sft_rows(splits["train"], completion_only=True)
    assert rows[1]["prompt"] == [SYSTEM, {"role": "user", "content": "Name animal number 1."}]
    assert rows[1]["completion"] == [{"role": "assistant", "content": "Animal number 1 is the heron."}]
    assert sft_rows(splits["train"], completion_only=False)[0] == {"messages": chat(0)["messages"]}


@pytest.mark.parametrize("bad, field", [
    ({"messages": [{"role": "user", "content": "only a question"}]}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "messages"),
    ({"text": "no messages column"}, "messages"),
])
def test_bad_export_rows_name_file_row_and_field(tmp_path, bad, field):
    folder = tmp_path / "sft"
    path = write_split(folder, "train", [chat(0), bad] if "messages" in bad else [bad])
    with pytest.raises(InputError) as e:
        load_splits(folder, ("messages",))
    assert e.value.field == field and e.value.file == str(path)
    if "messages" in bad:
        assert e.value.line == 2


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such dataset"):
        load_splits(tmp_path / "preference", ("prompt", "chosen", "rejected"))


def test_cpu_device_settings_never_ask_for_a_gpu():
    s = detect("cpu", "auto")
    kwargs = s.trainer_kwargs()
    assert (s.precision, kwargs["use_cpu"], kwargs["bf16"], kwargs["fp16"]) == ("fp32", True, False, False)
    assert kwargs["optim"] == "adamw_torch" and not kwargs["dataloader_pin_memory"]
    with pytest.raises(ConfigError, match="bf16"):
        detect("cpu", "bf16")


# -- the bundled model ----------------------------------------------------------------------------

def tiny(**kw) -> TrainConfig:
    base = {"batch_size": 4, "max_length": 64, "logging_steps": 1, "learning_rate": 1e-3,
            "samples": 2, "sample_max_tokens": 12, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    return TrainConfig.model_validate({**base, **kw})


def run_train_stage(tmp_path: Path, model_dir: Path, n: int, train: dict) -> StageOutput:
    """The train stage, as the pipeline runs it, over a `make_export` of n rows."""
    from instructforge.train import stage

    cfg = parse_config({"run": {"root": str(tmp_path), "name": "t"},
                        "train": {**train, "base_model": str(model_dir)}})
    export = make_export(tmp_path / "t", n=n)
    out, _ = RunDir(tmp_path / "t").run_stage(5, "train", config={}, inputs=[export], code="test",
                                              fn=stage.run, schema=stage.SCHEMA, resumable=True,
                                              section=cfg.train, run=cfg.context())
    return out


class Killed(Exception):
    pass


class KillAt(TrainerCallback):
    """Simulates a kill right after checkpoint `step` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after checkpoint-{self.step}")


@pytest.mark.slow
def test_sft_lowers_loss_and_a_killed_run_resumes_from_its_checkpoint(tmp_path, bundled_model_dir):
    from instructforge.train.metrics import read_metrics
    from instructforge.train.sft import train_sft

    splits = load_splits(make_export(tmp_path).path / "hub" / "data" / "sft", ("messages",))
    cfg, settings = tiny(max_steps=6, save_steps=3), detect("cpu")
    folder, metrics = tmp_path / "sft", tmp_path / "metrics.jsonl"
    with pytest.raises(Killed):
        train_sft(cfg, str(bundled_model_dir), splits, folder, settings, metrics, callbacks=[KillAt(3)])
    assert (folder / "checkpoints" / "checkpoint-3").is_dir() and not (folder / "adapter").exists()

    result = train_sft(cfg, str(bundled_model_dir), splits, folder, settings, metrics)
    assert result.resumed_from == "checkpoint-3" and result.steps == 6
    losses = [(m["step"], m["loss"]) for m in read_metrics(metrics) if "loss" in m]
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]  # the resumed run starts at step 4
    assert losses[-1][1] < 0.5 * losses[0][1]
    assert result.eval["eval_loss"] < losses[0][1]
    assert (folder / "adapter" / "adapter_config.json").exists()
    assert not (folder / "checkpoints").exists()
    # a finished phase is not trained again
    assert train_sft(cfg, str(bundled_model_dir), splits, folder, settings, metrics) == result


@pytest.mark.slow
def test_stage_sft_then_dpo_raises_margin_and_adapter_reloads(tmp_path, bundled_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructforge.train import stage

    out = run_train_stage(tmp_path, bundled_model_dir, n=6, train={
        **tiny(batch_size=2).model_dump(), "method": "sft_dpo", "max_steps": 3, "packing": True, "merge": True,
        "dpo": {"max_steps": 3, "learning_rate": 5e-4, "beta": 0.5}})
    stats = out.stats()
    dpo = stats["phases"]["dpo"]
    margins = [m["rewards/margins"] for m in map(json.loads, (out.path / "metrics.jsonl").open())
               if m["phase"] == "dpo" and "rewards/margins" in m]
    assert margins[0] == pytest.approx(0.0, abs=1e-6)  # the policy starts as its reference
    assert len(margins) == 3 and margins[-1] > 0.1
    assert dpo["eval"] == {}  # the preference export has no validation split here
    assert stats["phases"]["sft"]["last_loss"] < stats["phases"]["sft"]["first_loss"]
    config = json.loads((out.path / "trainer_config.json").read_text())
    assert config["device"]["device"] == "cpu" and config["train"]["method"] == "sft_dpo"

    assert (out.path / "merged" / "config.json").exists() and (out.path / "merged" / "tokenizer.json").exists()
    assert not (out.path / "sft" / "checkpoints").exists()  # finished phases drop their checkpoints

    rows = out.table().to_pylist()
    assert len(rows) == 2 and rows[0]["prompt"] == "Name animal number 0." and all(r["after"] for r in rows)

    tok = AutoTokenizer.from_pretrained(out.path / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(bundled_model_dir),
                                      out.path / "adapter")
    ids = tok.apply_chat_template(chat(1)["messages"][:2], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.inference_mode():
        gen = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    assert stage.summary(out)  # renders without error


@pytest.mark.slow
def test_stage_dpo_from_the_base_trains_a_fresh_adapter(tmp_path, bundled_model_dir):
    out = run_train_stage(tmp_path, bundled_model_dir, n=8, train={
        **tiny(samples=1).model_dump(), "method": "dpo",
        "dpo": {"max_steps": 3, "learning_rate": 1e-3, "beta": 0.5}})
    stats = out.stats()
    assert list(stats["phases"]) == ["dpo"] and not (out.path / "sft").exists()
    margins = [m["rewards/margins"] for m in map(json.loads, (out.path / "metrics.jsonl").open())
               if "rewards/margins" in m]
    assert margins[0] == pytest.approx(0.0, abs=1e-6) and margins[-1] > margins[0]
    adapter = json.loads((out.path / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8
    # held-out samples come from the preference prompts when there is no SFT export
    assert out.table().to_pylist()[0]["prompt"] == "Greet me (0)."
