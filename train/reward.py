"""A reward model: the base model with a one-score classification head, LoRA-trained on the
preference pairs with TRL's `RewardTrainer` (Bradley-Terry loss: chosen should outscore rejected).

The same scorer serves the held-out evaluation (pairwise accuracy, base head vs trained) and the
preference export's best-of-k judge (`export.preference.judge: reward`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import RewardConfig, RewardTrainer

from instructforge.errors import ConfigError
from instructforge.train.config import TrainConfig
from instructforge.train.data import to_dataset
from instructforge.train.device import DeviceSettings
from instructforge.train.loop import PhaseResult, common_args, is_done, load_result, train_phase
from instructforge.train.metrics import MetricsLog
from instructforge.train.model import load_model, load_tokenizer, lora_config

Message = dict[str, str]


def reward_config(cfg: TrainConfig, settings: DeviceSettings, folder: Path, *, seed: int,
                  has_eval: bool) -> RewardConfig:
    return RewardConfig(
        **common_args(cfg, settings, folder, seed=seed, has_eval=has_eval, epochs=cfg.epochs,
                      max_steps=cfg.max_steps, learning_rate=cfg.learning_rate),
        dataset_num_proc=None,
    )


def train_reward(cfg: TrainConfig, base: str, splits: dict[str, list[dict[str, Any]]], folder: Path,
                 settings: DeviceSettings, metrics_path: Path, *, seed: int = 0,
                 callbacks: list[TrainerCallback] | None = None) -> PhaseResult:
    """Train (or resume, or skip when already done) the reward adapter (with its score head) in `folder`."""
    if is_done(folder):
        return load_result(folder)
    folder.mkdir(parents=True, exist_ok=True)
    has_eval = bool(splits.get("validation"))
    torch.manual_seed(seed)  # the new score head's initial weights
    metrics = MetricsLog(metrics_path, "reward")
    trainer = RewardTrainer(
        model=load_model(base, settings, trainable=True, quantization=cfg.quantization, reward=True),
        args=reward_config(cfg, settings, folder, seed=seed, has_eval=has_eval),
        train_dataset=to_dataset(splits["train"]),
        eval_dataset=to_dataset(splits["validation"]) if has_eval else None,
        processing_class=load_tokenizer(base),
        peft_config=lora_config(cfg.lora, reward=True),
        callbacks=[metrics, *(callbacks or [])],
    )
    return train_phase(trainer, "reward", folder, settings, metrics, has_eval)


@torch.inference_mode()
def score(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[Message]],
          replies: list[str], batch_size: int = 8) -> list[float]:
    """The reward of each (prompt, reply), templated as the reward trainer templates a pair side."""
    seqs = [tokenizer.apply_chat_template([*p, {"role": "assistant", "content": r}], tokenize=True,
                                          return_dict=False) for p, r in zip(prompts, replies, strict=True)]
    was_training = model.training
    model.eval()
    out: list[float] = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(s) for s in chunk)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in chunk], device=model.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk], device=model.device)
        out += model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
    model.train(was_training)
    return out


def pairwise_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]],
                      batch_size: int = 8) -> float:
    """Share of pairs whose chosen reply gets the higher reward (ties count as wrong)."""
    prompts = [r["prompt"] for r in rows]
    chosen = score(model, tokenizer, prompts, [r["chosen"][-1]["content"] for r in rows], batch_size)
    rejected = score(model, tokenizer, prompts, [r["rejected"][-1]["content"] for r in rows], batch_size)
    return round(sum(c > r for c, r in zip(chosen, rejected, strict=True)) / max(len(rows), 1), 4)


class RewardScorer:
    """A trained reward adapter loaded once (its base model named in its adapter config), scoring
    candidate replies: best-of-k in the preference export."""

    def __init__(self, adapter: Path, settings: DeviceSettings):
        config = adapter / "adapter_config.json"
        if not config.exists():
            raise ConfigError(f"not a trained reward adapter (no adapter_config.json): {adapter}")
        peft = json.loads(config.read_text(encoding="utf-8"))
        if peft.get("task_type") != "SEQ_CLS":
            raise ConfigError(f"{adapter} is a {peft.get('task_type')} adapter, not a reward model (train.method: reward)")
        base = peft["base_model_name_or_path"]
        self.tokenizer = load_tokenizer(str(adapter))
        self.model = load_model(base, settings, adapter=adapter, reward=True)

    def __call__(self, prompts: list[list[Message]], replies: list[str]) -> list[float]:
        return score(self.model, self.tokenizer, prompts, replies)
