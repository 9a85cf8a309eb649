"""The dataset card (`README.md`): Hub metadata in a YAML header, the run's lineage in the body.

The `configs` entry maps each config's splits to its Parquet files, which is what lets
`datasets.load_dataset(folder_or_repo, config)` load them with no loading script.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from instructforge.export.config import ExportConfig
from instructforge.export.splits import SPLITS

FORMAT_NOTES = {
    "sft": "`messages`: conversational chat turns (TRL SFT, OpenAI format)",
    "sft_prompt_completion": "`prompt` / `completion` turns (TRL, loss on the completion only)",
    "sft_alpaca": "`instruction` / `input` / `output` (Alpaca; LLaMA-Factory `dataset_info.json` included)",
    "sft_sharegpt": "`conversations` with `from` / `value` (ShareGPT)",
    "sft_text": "`text`: the conversation rendered with a chat template",
    "preference": "`prompt` / `chosen` / `rejected` turns with scores (TRL DPO)",
    "preference_kto": "`prompt` / `completion` / `label` (TRL unpaired preference, KTO)",
    "preference_ranking": "`instruction` / `input` / `chosen` / `rejected` (LLaMA-Factory ranking)",
}


@dataclass
class CardFacts:
    """What the card reports, gathered by the stage."""

    run_name: str
    config_hash: str
    counts: dict[str, dict[str, int]]  # config -> split -> rows
    sources: dict[str, int]
    models: list[str]
    seed: int
    seed_tasks: int
    stage_fingerprints: dict[str, str]
    funnel: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)  # rows of the first config
    chat_template: str = ""
    preference: dict[str, Any] = field(default_factory=dict)  # stats of the preference step


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for bound, label in bounds if n < bound), "n>100M")


def card_metadata(cfg: ExportConfig, facts: CardFacts) -> dict[str, Any]:
    configs = []
    for i, (name, splits) in enumerate(facts.counts.items()):
        entry: dict[str, Any] = {"config_name": name, "data_files": [
            {"split": s, "path": f"data/{name}/{s}-*"} for s in SPLITS if splits.get(s)]}
        if i == 0:
            entry["default"] = True
        configs.append(entry)
    largest = max((sum(s.values()) for s in facts.counts.values()), default=0)
    tags = list(cfg.card.tags) + (["dpo", "preference"] if any(n.startswith("preference") for n in facts.counts)
                                  else [])
    return {"pretty_name": cfg.card.pretty_name or facts.run_name, "license": cfg.card.license,
            "task_categories": ["text-generation"], "size_categories": [size_category(largest)],
            "tags": list(dict.fromkeys(tags)), "configs": configs}


def render_card(cfg: ExportConfig, facts: CardFacts) -> str:
    meta = yaml.safe_dump(card_metadata(cfg, facts), sort_keys=False, allow_unicode=True)
    title = cfg.card.pretty_name or facts.run_name
    p = cfg.prompt
    parts = [
        f"---\n{meta}---\n",
        f"# {title}\n",
        ("Instruction-tuning data built by instructforge: task collections and seed tasks, expanded with "
         "Self-Instruct, filtered, and exported in the formats below.\n"),
        "## Configs\n",
        _table(["config", "format", *SPLITS],
               [[f"`{name}`", FORMAT_NOTES.get(name, ""), *(str(splits.get(s, 0)) for s in SPLITS)]
                for name, splits in facts.counts.items()]),
        ("```python\nfrom datasets import load_dataset\n"
         f"ds = load_dataset(\"<this repo or folder>\", \"{next(iter(facts.counts), 'sft')}\")\n```\n"),
        "## How an example becomes a conversation\n",
        (f"- user turn: `{json.dumps(p.user_template)}` (with input), "
         f"`{json.dumps(p.user_template_no_input)}` (without)"),
        f"- system prompt: {json.dumps(p.system) if p.system else 'none'}",
        f"- `sft_text` chat template: {facts.chat_template or 'not exported'}",
        (f"- splits by hash of the example id (seed {facts.seed}): train {cfg.splits.train}, validation "
         f"{cfg.splits.validation}, test {cfg.splits.test}"
         f"{', stratified by task' if cfg.splits.stratify_by_task else ''}\n"),
    ]
    if facts.preference:
        parts += ["## Preference pairs\n", _bullets(facts.preference)]
    parts += [
        "## Lineage\n",
        _bullets({"run": facts.run_name, "config hash": f"`{facts.config_hash}`", "run seed": facts.seed,
                  "seed tasks": facts.seed_tasks, "models": ", ".join(f"`{m}`" for m in facts.models) or "none"}),
        "Stage fingerprints:\n",
        _bullets({k: f"`{v}`" for k, v in facts.stage_fingerprints.items()}),
        "Sources:\n",
        _table(["source", "rows"], [[f"`{s}`", str(n)] for s, n in sorted(facts.sources.items())]),
    ]
    if facts.funnel:
        parts += ["## Filter funnel\n", _table(
            ["filter", "rows in", "rows out", "removed"],
            [[str(f["filter"]), str(f["rows_in"]), str(f["rows_out"]), str(f["rows_in"] - f["rows_out"])]
             for f in facts.funnel])]
    if facts.examples:
        parts += ["## Example rows\n"] + [f"```json\n{json.dumps(r, indent=2, ensure_ascii=False)}\n```\n"
                                         for r in facts.examples]
    return "\n".join(parts)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _bullets(items: dict[str, Any]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in items.items()) + "\n"


def parse_card(text: str) -> tuple[dict[str, Any], str]:
    """(YAML metadata, body) of a card; used by push and the tests."""
    if not text.startswith("---\n"):
        raise ValueError("card has no YAML header")
    header, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(header), body
