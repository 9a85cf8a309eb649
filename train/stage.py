"""Stage 05: train a LoRA/QLoRA adapter on the export (SFT, DPO, SFT then DPO, or a reward model),
then evaluate it against the base model.

Reads `04-export/hub/data/sft/` and/or `hub/data/preference/`. Writes to `05-train/`:
  adapter/              the final PEFT adapter (+ tokenizer); sft/, dpo/, reward/ adapter per phase
  merged/               base model with the adapter merged in (`merge: true`)
  metrics.jsonl         every trainer log: loss, eval loss, reward margins, tokens/s
  trainer_config.json   the `train:` section, the base model and the device settings chosen
  eval-rows.jsonl       each evaluated row: prompt, reference, base and adapter generations, scores
  data/                 one row per held-out prompt: reference, generation before and after training
stats.json `eval`: base vs adapter metrics overall and per task (see `instructforge.train.eval`).
The stage is resumable: phases that finished are kept, a killed phase resumes from its checkpoint,
and a finished evaluation is not redone. With `processes` > 1 each phase trains in that many
data-parallel processes started here (`instructforge.train.launch`); the rest stays in this process.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from instructforge.engines.model import resolve_model
from instructforge.errors import ConfigError
from instructforge.fingerprints import files_digest, model_digest
from instructforge.ingest.readers import resolve_source
from instructforge.runs import RunContext, StageContext, StageOutput, write_json_atomic
from instructforge.train.config import TrainConfig
from instructforge.train.data import load_splits
from instructforge.train.device import DeviceSettings, apply, cpu_threads, detect
from instructforge.train.dpo import train_dpo
from instructforge.train.eval import benchmark_rows, evaluate, held_out_rows, option_ids
from instructforge.train.launch import run_phase
from instructforge.train.model import load_model, load_tokenizer
from instructforge.train.reward import pairwise_accuracy, train_reward
from instructforge.train.sample import generate, held_out, prompt_text
from instructforge.train.sft import train_sft

PAIR_COLUMNS = ("prompt", "chosen", "rejected")

SCHEMA = pa.schema([("prompt", pa.string()), ("reference", pa.string()),
                    ("before", pa.string()), ("after", pa.string())])


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: TrainConfig = ctx.section
    seed = ctx.run.seed
    settings = detect(cfg.device, cfg.precision, cfg.processes)
    if cfg.batch_size % settings.processes:
        raise ConfigError(f"train.batch_size: {cfg.batch_size} examples per step do not split evenly over "
                          f"{settings.processes} training processes (train.processes)")
    apply(settings)
    hub = ctx.inputs[0].path / "hub" / "data"
    base = resolve_model(cfg.base_model, ctx.run.cache_dir)  # "bundled" = the bundled model
    sft_splits = (load_splits(hub / "sft", ("messages",), keep=("id", "task"))
                  if cfg.method in ("sft", "sft_dpo") else None)
    pref_splits = load_splits(hub / "preference", PAIR_COLUMNS, keep=("id",)) if cfg.method != "sft" else None
    write_json_atomic(ctx.work / "trainer_config.json", {
        "train": cfg.model_dump(mode="json"), "base_model": base, "seed": seed,
        "device": settings.as_dict()})
    stats = {"method": cfg.method, "base_model": base, "device": settings.device, "processes": settings.processes,
             "precision": settings.precision, "quantization": cfg.quantization, "adapter": "adapter"}
    metrics = ctx.work / "metrics.jsonl"
    if cfg.method == "reward":
        phase = run_phase(train_reward, cfg, base, pref_splits, ctx.work / "reward", settings, metrics,
                          seed=seed)
        _publish(ctx.work / phase.adapter, ctx.work / "adapter")
        stats["phases"] = {phase.phase: phase.as_dict()}
        if cfg.eval.enabled:
            stats["eval"] = _cached(ctx.work / "eval.json", lambda: _reward_eval(
                base, ctx.work / "adapter", settings, pref_splits, cfg))
        return stats

    samples = (held_out(sft_splits, cfg.samples) if sft_splits
               else held_out(pref_splits, cfg.samples, column="prompt"))
    before = _cached(ctx.work / "samples-before.json", lambda: _generations(
        load_model(base, settings, quantization=cfg.quantization), load_tokenizer(base), samples, cfg))

    phases = []
    adapter: Path | None = None
    if sft_splits:
        phases.append(run_phase(train_sft, cfg, base, sft_splits, ctx.work / "sft", settings, metrics,
                                seed=seed))
        adapter = ctx.work / phases[-1].adapter
    if pref_splits:
        phases.append(run_phase(train_dpo, cfg, base, pref_splits, ctx.work / "dpo", settings, metrics,
                                init_adapter=adapter, seed=seed))
        adapter = ctx.work / phases[-1].adapter
    final = ctx.work / "adapter"
    _publish(adapter, final)
    stats["phases"] = {p.phase: p.as_dict() for p in phases}

    tokenizer = load_tokenizer(base)
    model = load_model(base, settings, adapter=final, quantization=cfg.quantization)
    after = _generations(model, tokenizer, samples, cfg)
    ctx.write([{"prompt": prompt_text(s["prompt"]), "reference": s["reference"], "before": b, "after": a}
               for s, b, a in zip(samples, before, after, strict=True)])
    if cfg.eval.enabled:
        eval_splits = sft_splits or (load_splits(hub / "sft", ("messages",), keep=("id", "task"))
                                     if (hub / "sft").is_dir() else _as_conversations(pref_splits))
        stats["eval"] = _cached(ctx.work / "eval.json", lambda: _eval(model, tokenizer, ctx, eval_splits, base, cfg))
    if cfg.merge:
        merged = ctx.work / "merged"
        model.merge_and_unload().save_pretrained(str(merged))
        tokenizer.save_pretrained(str(merged))
    return stats


def _publish(adapter: Path, final: Path) -> None:
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(adapter, final)


def _cached(path: Path, compute: Callable[[], Any]) -> Any:
    """A result kept in the work folder, so a resumed run does not redo it."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    write_json_atomic(path, value)
    return value


def _generations(model: Any, tokenizer: Any, samples: list[dict[str, Any]], cfg: TrainConfig) -> list[str]:
    return generate(model, tokenizer, [s["prompt"] for s in samples], cfg.sample_max_tokens)


def _as_conversations(pref_splits: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Preference pairs as conversations ending with the chosen reply (eval when there is no SFT export)."""
    return {split: [{"id": r.get("id"), "task": "preference", "messages": [*r["prompt"], *r["chosen"]]}
                    for r in rows] for split, rows in pref_splits.items()}


def _eval(model: Any, tokenizer: Any, ctx: StageContext, splits: dict[str, list[dict[str, Any]]],
          base: str, cfg: TrainConfig) -> dict[str, Any]:
    """Base vs adapter on the held-out split (the SFT export's when there is one) and the benchmarks."""
    split, rows = held_out_rows(splits, option_ids(ctx.inputs[0]), cfg.eval.max_rows)
    rows += benchmark_rows(cfg.eval, ctx.run.resolve)
    stats, records = evaluate(model, tokenizer, rows, cfg.eval, base, {
        "adapter": "adapter", "method": cfg.method, "quantization": cfg.quantization,
        "split": split, "benchmarks": [b.source.label for b in cfg.eval.benchmarks]})
    with (ctx.work / "eval-rows.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return stats


def _reward_eval(base: str, adapter: Path, settings: DeviceSettings, splits: dict[str, list[dict[str, Any]]],
                 cfg: TrainConfig) -> dict[str, Any]:
    """Pairwise accuracy on held-out pairs: the untrained score head (base) vs the trained reward model."""
    split = "test" if splits.get("test") else "validation" if splits.get("validation") else "train"
    rows = splits[split][:cfg.eval.max_rows]
    tokenizer = load_tokenizer(base)
    model = load_model(base, settings, adapter=adapter, quantization=cfg.quantization, reward=True)
    adapter_acc = pairwise_accuracy(model, tokenizer, rows, cfg.eval.batch_size)
    with model.disable_adapter():
        base_acc = pairwise_accuracy(model, tokenizer, rows, cfg.eval.batch_size)
    metric = {"pairwise_accuracy": {"base": base_acc, "adapter": adapter_acc}}
    return {"model": base, "settings": {"adapter": "adapter", "method": "reward", "split": split, "rows": len(rows),
                                        "quantization": cfg.quantization},
            "metrics": metric, "per_task": {"preference": metric}}


def summary(out: StageOutput) -> list[Any]:
    """Loss and throughput per phase, the before/after samples, then the eval table (printed by the CLI)."""
    from rich.table import Table

    stats = out.stats()
    lines: list[Any] = []
    for name, p in stats.get("phases", {}).items():
        ev = p.get("eval", {})
        extra = f", eval loss {ev['eval_loss']:.3f}" if "eval_loss" in ev else ""
        if "eval_rewards/margins" in ev:
            extra += f", eval reward margin {ev['eval_rewards/margins']:.3f}"
        first, last = p.get("first_loss"), p.get("last_loss")
        loss = f"loss {first:.3f} -> {last:.3f}" if first is not None and last is not None else "no loss logged"
        lines.append(f"{name}: {p['steps']} steps, {loss}{extra}, {p['tokens_per_second']:.0f} tokens/s"
                     + (f", resumed from {p['resumed_from']}" if p.get("resumed_from") else ""))
    if stats.get("method") != "reward":  # a reward model writes no samples
        table = Table(title="samples before vs after training", show_lines=True)
        for col in ("prompt", "before", "after"):
            table.add_column(col, overflow="fold")
        for row in out.table().to_pylist():
            table.add_row(row["prompt"], row["before"], row["after"])
        lines.append(table)
    if stats.get("eval"):
        lines.append(eval_table(stats["eval"]))
    return lines


def eval_table(ev: dict[str, Any]) -> Any:
    """Base vs adapter, overall then per task (higher is better except loss and perplexity)."""
    from rich.table import Table

    s = ev["settings"]
    table = Table(title=f"eval: {ev['model']} vs adapter ({s['rows']} rows, {s['split']} split"
                        f"{', greedy' if s.get('decoding') else ''})")
    for col in ("task", "metric", "base", "adapter"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, metrics in [("all", ev["metrics"]), *ev["per_task"].items()]:
        for metric, v in metrics.items():
            if task != "all" and metric == "perplexity":
                continue
            table.add_row(task, metric, f"{v.get('base', float('nan')):.3f}", f"{v.get('adapter', float('nan')):.3f}")
    return table


def input_fingerprint(section: TrainConfig, run: RunContext) -> dict[str, str]:
    """The base model by content: retraining or replacing the folder at the same path reruns training;
    so does editing an eval benchmark file. The torch thread count too: CPU reductions (so the adapter
    weights) depend on it, so one fingerprint is one result, and a resume keeps the killed run's count;
    likewise the number of training processes (`processes: null` is the machine's GPU count)."""
    benchmarks = [resolve_source(b.path, run.resolve) for b in section.eval.benchmarks] if section.eval.enabled else []
    processes = detect(section.device, section.precision, section.processes).processes
    return {"base_model": model_digest(section.base_model, run.resolve, run.cache_dir),
            **files_digest(benchmarks, run.cache_dir), "torch_threads": str(cpu_threads()),
            "processes": str(processes)}
