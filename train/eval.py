"""Evaluation at the end of the train stage: the base model vs the trained adapter, on the same rows.

Rows: the export's held-out test split (validation when there is no test split) and the benchmark
files named in `train.eval.benchmarks`. Per row: a greedy generation from each model, scored by exact
match (tasks with answer options) or ROUGE-L F (free text, the project's `rouge_l`), and the loss of
the reference answer given the prompt (mean token NLL over the answer; perplexity = exp of it). One
model serves both sides: the adapter is switched off (PEFT's `disable_adapter`) for the base numbers.

Why not lm-evaluation-harness: lm-eval 0.4.13 installs within this project's pins and runs offline
(tried: a custom task YAML over a local JSONL, the `hf` model, chat template on). It is not used
because (1) its loglikelihood requests score a target appended after `target_delimiter` and report
per-document numbers, not the token-level loss of the answer templated as the trainer saw it (chat
template, system turn); (2) ROUGE-L and the choice of metric per task would need a generated YAML
plus a Python metric file per task; (3) it loads the model again for every evaluate call (base,
adapter). The metric code is small and written once, here.
"""

from __future__ import annotations

import math
import re
import string
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from instructforge.errors import InputError
from instructforge.filters.novelty import rouge_l
from instructforge.filters.sources import read_table
from instructforge.runs import StageOutput, shard_paths
from instructforge.train.config import EvalSection
from instructforge.train.sample import generate

Message = dict[str, str]
EXACT, ROUGE = "exact_match", "rouge_l"


@dataclass
class EvalRow:
    task: str
    prompt: list[Message]
    reference: str
    metric: str  # EXACT or ROUGE


def normalize(text: str) -> str:
    """Case, surrounding punctuation and whitespace do not count against an exact match."""
    text = re.sub(r"\s+", " ", text.casefold()).strip()
    return text.strip(string.punctuation + " ")


def exact_match(reference: str, prediction: str) -> float:
    return float(normalize(reference) == normalize(prediction))


def option_ids(export: StageOutput) -> set[str]:
    """Ids of exported examples from tasks with answer options: ingest's rendered options, or a
    Self-Instruct classification task. Empty when the export kept no example rows."""
    if not shard_paths(export.data, export.versions):
        return set()
    out = set()
    for row in export.table().select(["id", "meta"]).to_pylist():
        meta = dict(row["meta"] or {})
        if meta.get("options", "none") != "none" or meta.get("is_classification") == "true":
            out.add(row["id"])
    return out


def held_out_rows(splits: dict[str, list[dict[str, Any]]], options: set[str], max_rows: int | None
              ) -> tuple[str, list[EvalRow]]:
    """(split used, rows) from the SFT export's `messages` rows, test split first."""
    split = "test" if splits.get("test") else "validation" if splits.get("validation") else "none"
    rows = sorted(splits.get(split) or [], key=lambda r: r.get("id") or "")[:max_rows]
    return split, [EvalRow(r.get("task") or "(none)", r["messages"][:-1], r["messages"][-1]["content"],
                           EXACT if r.get("id") in options else ROUGE) for r in rows]


def benchmark_rows(cfg: EvalSection, resolve: Callable[[str], Path]) -> list[EvalRow]:
    """Rows of every benchmark file, each as one user turn, task `benchmark/<name>`."""
    out = []
    for b in cfg.benchmarks:
        src = b.source
        table, where = read_table(src, resolve)
        for f in (b.prompt_field, b.answer_field):
            if f not in table.column_names:
                raise InputError(f"no such column (columns: {', '.join(table.column_names)})", file=where, field=f)
        rows = table.select([b.prompt_field, b.answer_field]).to_pylist()[:b.max_rows]
        for i, r in enumerate(rows):
            q, a = r[b.prompt_field], r[b.answer_field]
            if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
                raise InputError("prompt and answer must be non-empty text", file=where, line=i + 1,
                                 field=b.prompt_field if not isinstance(q, str) or not q.strip() else b.answer_field)
            out.append(EvalRow(f"benchmark/{src.label}", [{"role": "user", "content": q}], a, b.metric))
    return out


@torch.inference_mode()
def answer_losses(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[EvalRow],
                  batch_size: int) -> list[tuple[float, int]]:
    """(summed NLL, token count) of each reference answer given its prompt, templated as in training."""
    pairs = []
    for r in rows:
        prompt = tokenizer.apply_chat_template(r.prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        full = tokenizer.apply_chat_template([*r.prompt, {"role": "assistant", "content": r.reference}],
                                             tokenize=True, return_dict=False)
        if full[:len(prompt)] != prompt:  # a template that rewrites earlier turns: score the whole reply
            prompt = prompt[:next(i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b)]
        pairs.append((full, len(prompt)))
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in chunk], device=model.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk], device=model.device)
        labels = ids.clone()
        for i, (seq, n_prompt) in enumerate(chunk):
            labels[i, :n_prompt] = -100
            labels[i, len(seq):] = -100
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
        counts = (target != -100).sum(dim=1)
        out += [(float(s), int(c)) for s, c in zip(nll.sum(dim=1).tolist(), counts.tolist(), strict=True)]
    model.train(was_training)
    return out


def score_side(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[EvalRow],
               cfg: EvalSection) -> list[dict[str, Any]]:
    """Generation, score and answer loss of every row for one model."""
    texts: list[str] = []
    for start in range(0, len(rows), cfg.batch_size):
        texts += generate(model, tokenizer, [r.prompt for r in rows[start:start + cfg.batch_size]],
                          cfg.max_new_tokens)
    losses = answer_losses(model, tokenizer, rows, cfg.batch_size)
    return [{"text": t, "score": exact_match(r.reference, t) if r.metric == EXACT else rouge_l(r.reference, t),
             "nll": nll, "tokens": n} for r, t, (nll, n) in zip(rows, texts, losses, strict=True)]


def _aggregate(rows: list[EvalRow], results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """{metric: {side: value}} over `rows`: mean score per metric kind, token-weighted loss, perplexity."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for side, res in results.items():
        for metric in (EXACT, ROUGE):
            scores = [x["score"] for r, x in zip(rows, res, strict=True) if r.metric == metric]
            if scores:
                out[metric][side] = round(sum(scores) / len(scores), 4)
        tokens = sum(x["tokens"] for x in res)
        if tokens:
            loss = sum(x["nll"] for x in res) / tokens
            out["loss"][side] = round(loss, 4)
            out["perplexity"][side] = round(math.exp(min(loss, 50.0)), 3)
    return dict(out)


def evaluate(model: Any, tokenizer: PreTrainedTokenizerBase, rows: list[EvalRow], cfg: EvalSection,
             base_model: str, settings: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the `eval` stats entry, one record per row with both generations) for a PEFT model:
    base = adapter disabled, adapter = as trained. `settings` are recorded as they are."""
    t0 = time.perf_counter()
    with model.disable_adapter():
        base = score_side(model, tokenizer, rows, cfg)
    adapter = score_side(model, tokenizer, rows, cfg)
    seconds = time.perf_counter() - t0
    sides = {"base": base, "adapter": adapter}
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_task[r.task].append(i)
    per_task = {task: _aggregate([rows[i] for i in idx], {s: [res[i] for i in idx] for s, res in sides.items()})
                for task, idx in sorted(by_task.items())}
    held_out = [i for i, r in enumerate(rows) if not r.task.startswith("benchmark/")]
    metrics = _aggregate([rows[i] for i in held_out], {s: [res[i] for i in held_out] for s, res in sides.items()})
    records = [{**asdict(r), "base": b["text"], "adapter": a["text"], "base_score": b["score"],
                "adapter_score": a["score"]} for r, b, a in zip(rows, base, adapter, strict=True)]
    stats = {"model": base_model, "settings": {**settings, "rows": len(rows), "decoding": "greedy",
                                               "max_new_tokens": cfg.max_new_tokens},
             "metrics": metrics, "per_task": per_task, "seconds": round(seconds, 2),
             "seconds_per_100_rows": round(100 * seconds / max(len(rows), 1), 2)}
    return stats, records
