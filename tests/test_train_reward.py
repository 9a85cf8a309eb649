"""`train.method: reward`: a reward model (score head + LoRA) trained with TRL's RewardTrainer on the
preference export, evaluated by pairwise accuracy on held-out pairs, and used as the preference
export's best-of-k judge."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from instructforge.config import parse_config
from instructforge.runs import RunDir, StageOutput
from instructforge.train.data import write_split

POLITE = ["Hello, happy to help.", "Good morning, here you go.", "Thanks for asking, sure.", "Hi! Glad to help."]
RUDE = ["No. Go away.", "Stop bothering me.", "Figure it out yourself.", "Not my problem."]


def pair(i: int) -> dict:
    return {"id": f"p{i}", "prompt": [{"role": "user", "content": f"Please help me with task {i}."}],
            "chosen": [{"role": "assistant", "content": POLITE[i % 4]}],
            "rejected": [{"role": "assistant", "content": RUDE[(i + 1) % 4]}],
            "score_chosen": 5.0, "score_rejected": 1.0}


def make_export(root: Path) -> StageOutput:
    data = root / "04-export" / "hub" / "data" / "preference"
    write_split(data, "train", [pair(i) for i in range(12)])
    write_split(data, "test", [pair(i) for i in range(20, 28)])
    return StageOutput(root / "04-export", "export-fp")


@pytest.mark.slow
def test_reward_model_learns_the_preference_and_reports_pairwise_accuracy(tmp_path, bundled_model_dir):
    from instructforge.export.preference import Candidate, binarize, judge_reward
    from instructforge.train import stage
    from instructforge.train.device import detect
    from instructforge.train.reward import RewardScorer

    cfg = parse_config({"run": {"root": str(tmp_path), "name": "t"}, "train": {
        "base_model": str(bundled_model_dir), "method": "reward", "max_steps": 6, "batch_size": 4,
        "max_length": 64, "learning_rate": 1e-3, "logging_steps": 1, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}})
    out, _ = RunDir(tmp_path / "t").run_stage(5, "train", config={}, inputs=[make_export(tmp_path / "t")],
                                              code="test", fn=stage.run, schema=stage.SCHEMA, resumable=True,
                                              section=cfg.train, run=cfg.context())
    stats = out.stats()
    assert list(stats["phases"]) == ["reward"] and stats["method"] == "reward"
    acc = stats["eval"]["metrics"]["pairwise_accuracy"]
    assert stats["eval"]["settings"]["split"] == "test" and stats["eval"]["settings"]["rows"] == 8
    assert acc["adapter"] == 1.0 and 0.0 <= acc["base"] <= 1.0
    logs = [json.loads(line) for line in (out.path / "metrics.jsonl").open()]
    losses = [m["loss"] for m in logs if m.get("phase") == "reward" and "loss" in m]
    assert losses[-1] < losses[0]
    config = json.loads((out.path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"
    assert stage.summary(out)[-1].title.startswith("eval:")

    scorer = RewardScorer(out.path / "adapter", detect("cpu"))
    prompt = [{"role": "user", "content": "Please help me with something new."}]
    good, bad = scorer([prompt, prompt], ["Sure, glad to help you.", "Go away, not my problem."])
    assert good > bad

    # best-of-k in the preference export: the reward model picks the polite answer
    candidates = [[Candidate("Go away, not my problem.", 0.7, "stop"), Candidate("Sure, glad to help you.", 1.0, "stop"),
                   Candidate("Figure it out.", 1.0, "stop")]]
    judge_reward(scorer, [prompt], candidates)
    b = binarize(candidates[0], "lowest", random.Random(0))
    assert b.chosen.text == "Sure, glad to help you." and b.chosen.aspects == {"reward": b.chosen.score}
