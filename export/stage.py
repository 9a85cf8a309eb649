"""Stage 04, export: filtered examples -> SFT and preference datasets in the Hub layout, with a card.

Reads every input stage (filter, or ingest + generate when filters are not configured), assigns
splits, writes the kept `Example` rows (with `meta["split"]`) to `data/` and the publishable folder
to `hub/` (see `instructforge.export.hub`), whose files are rendered and written by the run's executor,
one item per file (`instructforge.export.shards`); sampling and judging stay with the engine. Preference
pairs are also kept as `PreferencePair` rows in `pairs/`; prompts that yield no pair (ties) go to
`rejected/` with their scores. The card's
facts (this stage's counts and samples, and every upstream stage's settings and stats, found through
the manifests of its inputs) are kept in `card.json`, so `push` can re-render the card.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.table import Table

from instructforge import faults
from instructforge.errors import InstructforgeError
from instructforge.executors import create_executor
from instructforge.export.annotation import human_candidates, load_rankings
from instructforge.export.card import CARD_FACTS, CardFacts, render_card
from instructforge.export.chat_templates import ChatTemplate, load_chat_template
from instructforge.export.config import ExportConfig
from instructforge.export.formats import (
    PREFERENCE_CONFIGS,
    SFT_CONFIGS,
    format_schema,
    llamafactory_info,
    prompt_messages,
    user_content,
)
from instructforge.export.hub import grow_card_facts, versioned_files
from instructforge.export.preference import (
    binarize,
    drop_truncated,
    judge_llm,
    judge_reward,
    judge_rule,
    make_pair,
    retry_truncated,
    reward_scorer,
    sample_candidates,
)
from instructforge.export.shards import Published, Shard, plan_shards, remove_partials, write_shard
from instructforge.export.splits import SPLITS, assign_splits, hash_unit
from instructforge.fingerprints import files_digest, model_digest
from instructforge.records import Example, PreferencePair
from instructforge.runs import (
    MANIFEST,
    RunContext,
    ShardWriter,
    StageContext,
    StageOutput,
    read_table,
    write_json_atomic,
)


def read_examples(ctx: StageContext) -> list[Example]:
    """Rows of every input stage, first occurrence of each id kept (later copies are rejected)."""
    seen: set[str] = set()
    out, dups = [], []
    for inp in ctx.inputs:
        for row in inp.table().to_pylist():
            ex = Example.model_validate({**row, "meta": dict(row["meta"] or {})})
            (dups if ex.id in seen else out).append(ex)
            seen.add(ex.id)
    ctx.reject([d.model_dump() for d in dups], "export", "duplicate_id")
    return out


def chat_template(ctx: StageContext, cfg: ExportConfig) -> ChatTemplate:
    if cfg.chat_template != "tokenizer":
        return load_chat_template(cfg.chat_template)
    from instructforge.engines.model import resolve_model

    model = cfg.template_model or ctx.run.engine_model
    if model and ctx.run.resolve(model).exists():
        model = str(ctx.run.resolve(model))
    return load_chat_template("tokenizer", resolve_model(model, ctx.run.cache_dir))


def build_pairs(ctx: StageContext, cfg: ExportConfig, examples: list[Example]) -> tuple[list, dict]:
    """(pairs with their examples, stats) for the preference configs."""
    pcfg = cfg.preference
    seed = ctx.run.seed
    judge_failures = truncated = retried = 0
    provenance: dict[str, dict[str, str]] = {}
    if pcfg.judge == "human":  # people ranked answers sampled by an earlier run: no sampling, no judge
        path = ctx.run.resolve(pcfg.rankings)
        ranked = human_candidates(load_rankings(path), examples, str(path))
        chosen, candidates = [e for e, _, _ in ranked], [c for _, c, _ in ranked]
        provenance = {e.id: meta for e, _, meta in ranked}
        model, judge = "human", f"human:{path.name}"
    else:
        chosen = sorted(examples, key=lambda e: hash_unit(e.id, seed))[:pcfg.max_prompts]
        engine = ctx.engine
        model = engine.model_identity()
        prompts = [prompt_messages(e, cfg.prompt) for e in chosen]
        candidates = sample_candidates(engine, prompts, pcfg, seed)
        retried = retry_truncated(engine, prompts, candidates, pcfg, seed)
        truncated = drop_truncated(candidates)  # still cut off: never chosen
    requests = [user_content(e, cfg.prompt) for e in chosen]
    if pcfg.judge == "llm":
        judge_failures = judge_llm(engine, requests, candidates, pcfg, seed)
        judge = f"llm:{model}:rubric({','.join(pcfg.aspects)})"
    elif pcfg.judge == "reward":
        judge_reward(reward_scorer(ctx.run.resolve(pcfg.reward_model)),
                     [prompt_messages(e, cfg.prompt) for e in chosen], candidates)
        judge = f"reward:{pcfg.reward_model}"
    elif pcfg.judge != "human":
        judge_rule(pcfg.judge, [e.output for e in chosen], candidates)
        judge = "rule:reference-rougeL" if pcfg.judge == "reference" else "rule:length"
    writer = ShardWriter(ctx.work / "pairs", PreferencePair.arrow_schema())
    pairs, dropped = [], Counter()
    for ex, req, cands in zip(chosen, requests, candidates, strict=True):
        b = binarize(cands, pcfg.rejected, random.Random(f"{seed}:{ex.id}"))
        if b.chosen is None:
            dropped[b.reason] += 1
            ctx.reject([ex.model_dump()], "preference", b.reason,
                       {"candidates": json.dumps([c.record() for c in cands])})
            continue
        extra = {"split": ex.meta["split"], **({"system": cfg.prompt.system} if cfg.prompt.system else {}),
                 **provenance.get(ex.id, {})}
        pair = make_pair(ex, req, b, cands, judge=judge, model=model, cfg=pcfg, extra_meta=extra)
        writer.write([pair.model_dump()])
        pairs.append((pair, ex))
    writer.close()
    stats = {"prompts": len(chosen), "pairs": len(pairs), "dropped": dict(dropped), "truncated": truncated,
             "truncated_retried": retried,
             "judge": judge, "judge_failures": judge_failures, "model": model, "k": pcfg.k,
             "temperatures": pcfg.temperatures, "rejected": pcfg.rejected}
    return pairs, stats


def _by_split(units: list[Any], splits: Iterable[str]) -> dict[str, list[Any]]:
    """split -> its units (examples or pairs), in order."""
    out: dict[str, list[Any]] = {s: [] for s in SPLITS}
    for unit, split in zip(units, splits, strict=True):
        out[split].append(unit)
    return out


def write_shards(ctx: StageContext, shards: list[Shard], template: ChatTemplate | None) -> Published:
    """Every Hub shard written by the run's executor (one Ray task each on Ray), gathered in order."""
    hub = (ctx.work / "hub").absolute()  # Ray workers need not share the driver's working directory
    executor = create_executor(ctx.run, ctx.work)
    published = Published()
    try:
        for written in executor.each(partial(write_shard, hub, ctx.section.prompt, template), shards,
                                     stage=ctx.stage):
            published.add(written)
    finally:
        executor.close()
    remove_partials(hub)
    return published


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: ExportConfig = ctx.section
    seed = ctx.run.seed
    examples = read_examples(ctx)
    for ex, split in zip(examples, assign_splits([e.id for e in examples], [e.task for e in examples],
                                                 cfg.splits, seed), strict=True):
        ex.meta["split"] = split
    ctx.write([e.model_dump() for e in examples])

    hub = ctx.work / "hub"
    template = chat_template(ctx, cfg) if "text" in cfg.formats else None
    by_split = _by_split(examples, (e.meta["split"] for e in examples))
    configs = {SFT_CONFIGS[fmt]: (fmt, by_split) for fmt in cfg.formats}  # config -> (format, split -> units)
    pref_stats: dict[str, Any] = {}
    if cfg.preference is not None and examples:
        pairs, pref_stats = build_pairs(ctx, cfg, examples)
        pairs_by_split = _by_split(pairs, (ex.meta["split"] for _, ex in pairs))
        configs |= {PREFERENCE_CONFIGS[fmt]: (fmt, pairs_by_split) for fmt in cfg.preference.formats}

    # a config with no rows at all has no shards: it is not published
    published = write_shards(ctx, [s for name, (fmt, units) in configs.items()
                                   for s in plan_shards(name, fmt, units, cfg.shard_rows, ctx.version)], template)
    files, counts = published.files, published.counts
    if ctx.previous is not None:  # incremental: earlier versions' shards are in hub/ too
        files = versioned_files(hub)
    info = llamafactory_info(files, cfg.prompt)
    if info:
        write_json_atomic(hub / "dataset_info.json", info)

    schemas = {name: format_schema(fmt, cfg.prompt) for name, (fmt, _) in configs.items()}
    facts = _card_facts(ctx, examples, published, schemas, template, pref_stats)
    if ctx.version is not None:  # incremental: the card covers every version so far
        grow_card_facts(facts, ctx.previous and CardFacts.load(ctx.previous.path / CARD_FACTS), ctx.version)
    facts.llamafactory = {name: stanza["file_name"] for name, stanza in info.items()}
    facts.save(ctx.work / CARD_FACTS)
    hub.mkdir(parents=True, exist_ok=True)
    faults.point("export:card")  # kill tests: shards written, card not yet
    (hub / "README.md").write_text(render_card(facts), encoding="utf-8")
    return {"hub": "hub", "configs": counts, "chat_template": template.name if template else None,
            "prompt_format": cfg.prompt.model_dump(), "preference": pref_stats}


def upstream(inputs: list[StageOutput]) -> list[StageOutput]:
    """Every stage the export descends from, oldest first, found through the manifests' inputs.

    Each is checked against the fingerprint its child recorded, so the card never describes a stage
    that was rerun after this export's inputs were made.
    """
    found: dict[Path, StageOutput] = {}

    def visit(out: StageOutput) -> None:
        for rec in out.manifest.get("inputs", []):
            path = Path(rec["path"])
            if path in found or not (path / MANIFEST).exists():
                continue
            parent = StageOutput.load(path)
            if parent.fingerprint != rec["fingerprint"]:
                raise InstructforgeError(f"{path}: rerun since {out.path.name} read it; rerun the export")
            visit(parent)
            found[path] = parent

    for inp in inputs:
        visit(inp)
        found[inp.path] = inp
    return sorted(found.values(), key=lambda o: o.path.name)


def _stage_facts(out: StageOutput) -> dict[str, Any]:
    config = out.manifest.get("config", {})
    return {"stage": out.manifest.get("stage", out.path.name), "fingerprint": out.fingerprint,
            "code": out.manifest.get("code", ""),  # not "finished": a time is not in the fingerprint
            "section": config.get("section"), "files": config.get("files"), "stats": out.stats(),
            **({"prompts": _generation_prompts(config.get("section") or {})}
               if out.manifest.get("stage") == "generate" else {})}


def _generation_prompts(section: dict[str, Any]) -> dict[str, str]:
    """The prompts the generate stage sends, with placeholders where the pool's tasks go."""
    from instructforge.selfinstruct import prompts
    from instructforge.selfinstruct.pool import Task

    shots = [Task(f"<task {k}>", f"<instruction {k}>", [(f"<input {k}>", f"<output {k}>")], k == 1) for k in (1, 2)]
    if section.get("mode") == "alpaca":
        return {"tasks": prompts.alpaca_prompt(shots, section.get("alpaca_tasks_per_prompt", 20))}
    return {"instructions": prompts.instruction_prompt(["<instruction 1>", "<instruction 2>"]),
            "is it a classification task": prompts.classification_prompt("<new instruction>", shots),
            "instances": prompts.instance_prompt("<new instruction>", False, shots),
            "instances (classification, label first)": prompts.instance_prompt("<new instruction>", True, shots)}


def _quality(stages: list[StageOutput], examples_per_reason: int = 5) -> dict[str, Any]:
    """Counts (and a few texts) users should see before training, from the stages' rejected rows."""
    language, contamination = [], []
    for out in stages:
        if not any(out.rejected.glob("part-*.parquet")):
            continue
        rej = read_table(out.rejected)
        if "instruction" not in rej.column_names:
            continue
        for r in rej.select(["filter", "reason", "instruction", "input", "output"]).to_pylist():
            text = " / ".join(t for t in (r["instruction"], r["input"], r["output"]) if t)
            if (r["reason"] or "").startswith("language"):
                language.append({"reason": r["reason"], "text": text})
            elif r["filter"] == "decontamination":
                contamination.append({"reason": r["reason"], "text": text})
    generate = next((o.stats() for o in stages if o.manifest.get("stage") == "generate"), {})
    return {"generation_truncated": generate.get("rejected_by_reason", {}).get("truncated"),
            "language_rejections": len(language), "contamination": len(contamination),
            "language_examples": language[:examples_per_reason],
            "contamination_examples": contamination[:examples_per_reason]}


def _card_facts(ctx: StageContext, examples: list[Example], published: Published, schemas: dict[str, pa.Schema],
                template: ChatTemplate | None, pref_stats: dict[str, Any]) -> CardFacts:
    """`split_bytes`: the Arrow bytes of a split's shards, summed (one shard: the split's table)."""
    from datasets import Features

    stages = upstream(ctx.inputs)
    models = sorted({e.meta["model"] for e in examples if e.meta.get("model")}
                    | ({pref_stats["model"]} if pref_stats else set()))
    features = {name: _features_yaml(Features.from_arrow_schema(schemas[name])) for name in published.counts}
    tmpl = ({"name": template.name, "end_token": template.end_token, "default_system": template.default_system}
            if template else {})
    return CardFacts(
        run_name=ctx.run.name, seed=ctx.run.seed, export=ctx.section.model_dump(mode="json"),
        counts=published.counts, features=features, split_bytes=published.split_bytes,
        samples=published.samples, sources=dict(Counter(e.source for e in examples)), models=models,
        stages=[_stage_facts(o) for o in stages], template=tmpl,
        preference={k: v for k, v in pref_stats.items() if k != "model"}, quality=_quality(stages))


def _features_yaml(features: Any) -> list[dict[str, Any]]:
    from datasets import DatasetInfo

    return DatasetInfo(features=features)._to_yaml_dict()["features"]


def summary(out: StageOutput) -> list[Any]:
    """Where the datasets are, and their sizes per split."""
    st = out.stats()
    table = Table(title=f"export -> {Path(out.path) / st.get('hub', 'hub')}")
    table.add_column("config")
    for s in SPLITS:
        table.add_column(s, justify="right")
    for name, splits in st.get("configs", {}).items():
        table.add_row(name, *(f"{splits.get(s, 0):,}" for s in SPLITS))
    pref = st.get("preference") or {}
    lines: list[Any] = [table]
    if pref:
        lines.append(f"preference: {pref['pairs']} pairs from {pref['prompts']} prompts "
                     f"(dropped: {pref['dropped'] or 'none'}; judge {pref['judge']})")
    return lines


def input_fingerprint(section: ExportConfig, run: RunContext) -> dict[str, str]:
    """The model whose tokenizer renders the `text` format's chat template, by content; the reward
    adapter or the people's rankings file a preference judge reads."""
    out = {}
    pref = section.preference
    if pref is not None and pref.judge in ("reward", "human"):
        out.update(files_digest([run.resolve(pref.reward_model or pref.rankings)], run.cache_dir))
    if "text" not in section.formats or section.chat_template != "tokenizer":
        return out
    return {**out,
            "template_model": model_digest(section.template_model or run.engine_model, run.resolve, run.cache_dir)}
