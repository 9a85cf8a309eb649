"""Greedy generations on held-out prompts, so a run shows what training changed (before vs after)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructforge.train.data import prompts_of


def held_out(splits: dict[str, list[dict[str, Any]]], n: int, column: str = "messages") -> list[dict[str, Any]]:
    """Up to `n` (prompt, reference) pairs from test, then validation; train only when nothing is held out."""
    for split in ("test", "validation", "train"):
        rows = splits.get(split) or []
        if rows:
            rows = rows[:n]
            if column == "messages":
                return [{"prompt": p, "reference": r["messages"][-1]["content"]}
                        for p, r in zip(prompts_of(rows), rows, strict=True)]
            return [{"prompt": r["prompt"], "reference": r["chosen"][-1]["content"]} for r in rows]
    return []


@torch.inference_mode()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict[str, str]]],
             max_new_tokens: int) -> list[str]:
    """One left-padded greedy batch; returns the new text of each prompt."""
    if not prompts:
        return []
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    batch = batch.to(model.device)
    was_training = model.training
    model.eval()
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    model.train(was_training)
    new = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def prompt_text(prompt: list[dict[str, str]]) -> str:
    """The prompt as one readable string (the last user turn, which is what differs between rows)."""
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else prompt[-1]["content"]
