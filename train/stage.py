"""Stage 05: train a LoRA adapter on the export (SFT, DPO, or SFT then DPO).

Reads `04-export/hub/data/sft/` and/or `hub/data/preference/`. Writes to `05-train/`:
  adapter/              the final PEFT adapter (+ tokenizer); sft/adapter/, dpo/adapter/ per phase
  merged/               base model with the adapter merged in (`merge: true`)
  metrics.jsonl         every trainer log: loss, eval loss, reward margins, tokens/s
  trainer_config.json   the `train:` section, the base model and the device settings chosen
  data/                 one row per held-out prompt: reference, generation before and after training
The stage is resumable: phases that finished are kept, a killed phase resumes from its checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from instructforge.engines.model import resolve_model
from instructforge.runs import StageContext, StageOutput, write_json_atomic
from instructforge.train.config import TrainConfig
from instructforge.train.data import load_splits
from instructforge.train.device import DeviceSettings, apply, detect
from instructforge.train.dpo import train_dpo
from instructforge.train.model import load_model, load_tokenizer
from instructforge.train.sample import generate, held_out, prompt_text
from instructforge.train.sft import train_sft

SCHEMA = pa.schema([("prompt", pa.string()), ("reference", pa.string()),
                    ("before", pa.string()), ("after", pa.string())])


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: TrainConfig = ctx.section
    seed = ctx.run.seed
    settings = detect(cfg.device, cfg.precision)
    apply(settings)
    hub = ctx.inputs[0].path / "hub" / "data"
    base = resolve_model(cfg.base_model, ctx.run.cache_dir)  # "bundled" = the bundled model
    sft_splits = load_splits(hub / "sft", ("messages",)) if cfg.method != "dpo" else None
    pref_splits = (load_splits(hub / "preference", ("prompt", "chosen", "rejected"))
                   if cfg.method != "sft" else None)
    write_json_atomic(ctx.work / "trainer_config.json", {
        "train": cfg.model_dump(mode="json"), "base_model": base, "seed": seed,
        "device": settings.as_dict()})

    samples = (held_out(sft_splits, cfg.samples) if sft_splits
               else held_out(pref_splits, cfg.samples, column="prompt"))
    before = _cached_generations(ctx.work / "samples-before.json", base, None, settings, samples, cfg)

    metrics = ctx.work / "metrics.jsonl"
    phases = []
    adapter: Path | None = None
    if sft_splits:
        phases.append(train_sft(cfg, base, sft_splits, ctx.work / "sft", settings, metrics, seed=seed))
        adapter = ctx.work / phases[-1].adapter
    if pref_splits:
        phases.append(train_dpo(cfg, base, pref_splits, ctx.work / "dpo", settings, metrics,
                                init_adapter=adapter, seed=seed))
        adapter = ctx.work / phases[-1].adapter
    final = ctx.work / "adapter"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(adapter, final)

    after = _generations(base, final, settings, samples, cfg, merge_to=ctx.work / "merged" if cfg.merge else None)
    ctx.write([{"prompt": prompt_text(s["prompt"]), "reference": s["reference"], "before": b, "after": a}
               for s, b, a in zip(samples, before, after, strict=True)])
    return {"method": cfg.method, "base_model": base, "device": settings.device,
            "precision": settings.precision, "adapter": "adapter",
            "phases": {p.phase: p.as_dict() for p in phases}}


def _cached_generations(path: Path, base: str, adapter: Path | None, settings: DeviceSettings,
                        samples: list[dict[str, Any]], cfg: TrainConfig) -> list[str]:
    """Generations kept in the work folder, so a resumed run does not redo them."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    texts = _generations(base, adapter, settings, samples, cfg)
    write_json_atomic(path, texts)
    return texts


def _generations(base: str, adapter: Path | None, settings: DeviceSettings, samples: list[dict[str, Any]],
                 cfg: TrainConfig, merge_to: Path | None = None) -> list[str]:
    tokenizer = load_tokenizer(base)
    model = load_model(base, settings, adapter=adapter)
    texts = generate(model, tokenizer, [s["prompt"] for s in samples], cfg.sample_max_tokens)
    if merge_to is not None:
        model.merge_and_unload().save_pretrained(str(merge_to))
        tokenizer.save_pretrained(str(merge_to))
    return texts


def summary(out: StageOutput) -> list[Any]:
    """Loss and throughput per phase, then the before/after table (printed by the CLI)."""
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
    table = Table(title="samples before vs after training", show_lines=True)
    for col in ("prompt", "before", "after"):
        table.add_column(col, overflow="fold")
    for row in out.table().to_pylist():
        table.add_row(row["prompt"], row["before"], row["after"])
    return [*lines, table]
