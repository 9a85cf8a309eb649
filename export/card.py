"""The dataset card (`README.md`): Hub metadata in a YAML header, what a stranger needs in the body.

The export stage gathers the facts (`CardFacts`: counts, features, samples, every upstream stage's
config, stats and code version from its manifest) and keeps them in `card.json` beside `hub/`, so
`push` re-renders the card with the real repo id (`render_card(facts, repo_id=...)`) and, when the
run has a train stage, its before/after evaluation (`training_section`).

The `configs` entry maps each config's splits to its Parquet files, which is what lets
`datasets.load_dataset(folder_or_repo, config)` load them with no loading script.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from instructforge.errors import InstructforgeError
from instructforge.export.splits import SPLITS

CARD_FACTS = "card.json"  # in the export stage folder, beside hub/
CONFIG_FILE = "instructforge.yaml"  # the run's config, uploaded with the dataset by `push`

FORMAT_NOTES = {
    "sft": "`messages` chat turns",
    "sft_prompt_completion": "`prompt` / `completion` turns (loss on the completion)",
    "sft_alpaca": "`instruction` / `input` / `output`, and `prompt` (the user turn as joined here)",
    "sft_sharegpt": "`conversations` with `from` (`human`/`gpt`/`system`) / `value`",
    "sft_text": "`text`: the conversation rendered with the chat template, no final end token",
    "preference": "`prompt` / `chosen` / `rejected` turns with scores",
    "preference_kto": "`prompt` / `completion` / `label` (unpaired preference)",
    "preference_ranking": "`instruction` / `input` / `prompt` / `chosen` / `rejected` strings",
    "preference_ranked": "`prompt` turns and every scored answer (`responses`: content, score, rank)",
}

# config -> (meant for, trap warning or "")
TOOL_NOTES = {
    "sft": ("TRL `SFTTrainer`, Axolotl `chat_template`, LLaMA-Factory (sharegpt stanza, OpenAI tags)", ""),
    "sft_prompt_completion": ("TRL `SFTTrainer` (completion-only loss)", ""),
    "sft_alpaca": ("LLaMA-Factory (`alpaca` stanza on `prompt`), Axolotl `alpaca`",
                   ("Axolotl's `alpaca` type formats `instruction`/`input` with its own Alpaca prompt, not "
                   "the user turn of the other configs")),
    "sft_sharegpt": ("LLaMA-Factory (`sharegpt` stanza), Axolotl `chat_template` with role mapping",
                     ("TRL keeps the role names `human`/`gpt`, so the chat template renders (and the model "
                     "learns) those role tokens: use `sft` with TRL")),
    "sft_text": ("TRL `SFTTrainer` (language modeling), LLaMA-Factory `stage: pt`, Axolotl `completion`",
                 "rendered for one model's template (below): train that model family on it"),
    "preference": ("TRL `DPOTrainer`, Axolotl DPO `chat_template.default`", ""),
    "preference_kto": ("TRL `KTOTrainer`", ""),
    "preference_ranking": ("LLaMA-Factory `stage: dpo` (ranking stanza)",
                           ("TRL `DPOTrainer` reads its strings as plain text, with no chat template around the "
                           "prompt or the answers: use `preference` with TRL")),
    "preference_ranked": ("reward-model or listwise training code of your own (k-way rankings)",
                          "no trainer reads it unchanged: pairs for DPO are in `preference`"),
}

LICENSE_NOTES = {  # bundled sources and the bundled model
    "collection:flan_mini.yaml": "apache-2.0 (written for instructforge)",
    "seeds:seed_tasks.jsonl": "apache-2.0 (Self-Instruct seed tasks)",
}
BUNDLED_MODEL_LICENSE = ("SmolLM2", "apache-2.0")

CITATIONS = """\
@article{wei2021flan, title={Finetuned Language Models Are Zero-Shot Learners},
  author={Wei, Jason and Bosma, Maarten and Zhao, Vincent Y. and others}, journal={arXiv:2109.01652}, year={2021}}
@inproceedings{wang2022supernaturalinstructions,
  title={Super-NaturalInstructions: Generalization via Declarative Instructions on 1600+ NLP Tasks},
  author={Wang, Yizhong and Mishra, Swaroop and Alipoormolabashi, Pegah and others}, booktitle={EMNLP}, year={2022}}
@inproceedings{wang2023selfinstruct,
  title={Self-Instruct: Aligning Language Models with Self-Generated Instructions},
  author={Wang, Yizhong and Kordi, Yeganeh and Mishra, Swaroop and others}, booktitle={ACL}, year={2023}}
"""
MODEL_CITATIONS = {  # model name fragment -> BibTeX; other models: cite them from their own cards
    "SmolLM2": """@misc{allal2025smollm2, title={SmolLM2: When Smol Goes Big -- Data-Centric Training of a Small
  Language Model}, author={Ben Allal, Loubna and Lozhkov, Anton and Bakouch, Elie and others}, year={2025},
  eprint={2502.02737}}
""",
}


@dataclass
class CardFacts:
    """What the card reports, gathered by the export stage (JSON-serialisable: kept in card.json)."""

    run_name: str
    seed: int
    export: dict[str, Any]  # the export section
    counts: dict[str, dict[str, int]]  # config -> split -> rows
    features: dict[str, list[dict[str, Any]]]  # config -> `dataset_info` features (from the Parquet schema)
    split_bytes: dict[str, dict[str, int]]  # config -> split -> Arrow bytes (`dataset_info` splits)
    samples: dict[str, dict[str, Any]]  # config -> one train row
    sources: dict[str, int]  # source -> exported rows
    models: list[str]
    stages: list[dict[str, Any]] = field(default_factory=list)  # upstream stages, oldest first
    template: dict[str, Any] = field(default_factory=dict)  # name, end_token, default_system
    preference: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    llamafactory: dict[str, str] = field(default_factory=dict)  # entry -> file
    version: int | None = None  # incremental runs: the dataset version (see instructforge.incremental)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1, default=str), encoding="utf-8")  # order kept

    @classmethod
    def load(cls, path: Path) -> CardFacts:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as e:  # missing, not JSON, or from another version's fields
            raise InstructforgeError(f"{path}: cannot read the card facts ({e}); rerun the export") from None


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for bound, label in bounds if n < bound), "n>100M")


def card_metadata(facts: CardFacts) -> dict[str, Any]:
    card = facts.export["card"]
    configs, infos = [], []
    for i, (name, splits) in enumerate(facts.counts.items()):
        present = [s for s in SPLITS if splits.get(s)]
        entry: dict[str, Any] = {"config_name": name,
                                 "data_files": [{"split": s, "path": f"data/{name}/{s}-*"} for s in present]}
        if i == 0:
            entry["default"] = True
        configs.append(entry)
        infos.append({"config_name": name, "features": facts.features[name],
                      "splits": [{"name": s, "num_bytes": facts.split_bytes[name][s], "num_examples": splits[s]}
                                 for s in present]})
    largest = max((sum(s.values()) for s in facts.counts.values()), default=0)
    tags = list(card["tags"]) + (["dpo", "preference"] if any(n.startswith("preference") for n in facts.counts)
                                 else [])
    meta: dict[str, Any] = {"pretty_name": card["pretty_name"] or facts.run_name, "language": card["language"],
                            "license": card["license"]}
    if card["license"] == "other":
        meta["license_name"] = card["license_name"]
        meta["license_link"] = card["license_link"]
    meta.update({"task_categories": ["text-generation"], "size_categories": [size_category(largest)],
                 "tags": list(dict.fromkeys(tags)), "configs": configs, "dataset_info": infos})
    return meta


def render_card(facts: CardFacts, repo_id: str | None = None, train_eval: dict[str, Any] | None = None) -> str:
    """The card. `repo_id`: the Hub repo the snippets load from (none: a local folder path);
    `train_eval`: the train stage's `eval` stats, rendered as a before/after section."""
    meta = yaml.safe_dump(card_metadata(facts), sort_keys=False, allow_unicode=True)
    title = facts.export["card"]["pretty_name"] or facts.run_name
    where = repo_id or "path/to/this/folder"
    parts = [
        f"---\n{meta}---\n",
        f"# {title}\n",
        *([f"Dataset version {facts.version} (each incremental run adds one).\n"] if facts.version else []),
        ("Instruction-tuning data built by instructforge: task collections and seed tasks, expanded with "
         "Self-Instruct, filtered, and exported in the configs below. Everything needed to rebuild it is "
         f"here: the config (`{CONFIG_FILE}`), the sources with their hashes, the model, and every filter "
         "with its thresholds and counts.\n"),
        "## Configs and which tool reads which\n",
        _table(["config", "columns", "meant for", *SPLITS],
               [[f"`{n}`", FORMAT_NOTES.get(n, ""), TOOL_NOTES.get(n, ("", ""))[0],
                 *(str(s.get(sp, 0)) for sp in SPLITS)] for n, s in facts.counts.items()]),
    ]
    traps = [f"- `{n}`: {TOOL_NOTES[n][1]}" for n in facts.counts if TOOL_NOTES.get(n, ("", ""))[1]]
    if traps:
        parts += ["**Traps** (a config loaded by the wrong tool trains on the wrong thing):\n", "\n".join(traps) + "\n"]
    parts += [_loading(facts, where), _prompt_format(facts), _preference(facts), _funnel(facts),
              _provenance(facts), _quality(facts)]
    if train_eval:
        parts.append(training_section(train_eval))
    models = [c for name, c in MODEL_CITATIONS.items() if any(name in m for m in facts.models)]
    parts += [_samples(facts), _limitations(facts), "## Citations\n", f"```bibtex\n{CITATIONS}{''.join(models)}```\n"]
    return "\n".join(p for p in parts if p)


def eval_rows(evaluation: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(metric path, base, adapter) for every {"base": x, "adapter": y} in the train stage's `eval`
    stats, at any depth (`metrics / rougeL`, `per_task / qa / loss`)."""
    rows = []
    for key, value in evaluation.items():
        if not isinstance(value, dict):
            continue
        name = f"{prefix}{key}"
        if {"base", "adapter"} <= set(value):
            rows.append((name, value["base"], value["adapter"]))
        else:
            rows += eval_rows(value, f"{name} / ")
    return rows


def eval_pivot(evaluation: dict[str, Any]) -> dict[str, dict[str, tuple[Any, Any]]]:
    """{task: {metric: (base, adapter)}} from the `eval` stats; "all" for the held-out aggregate."""
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for key, base, adapter in eval_rows(evaluation):
        *where, metric = key.split(" / ")
        task = " / ".join(w for w in where if w not in ("metrics", "per_task")) or "all"
        out.setdefault(task, {})[metric] = (base, adapter)
    return out


def training_section(evaluation: dict[str, Any]) -> str:
    """'Trained with this data: base -> adapter' from the train stage's `eval` stats."""
    pivot = eval_pivot(evaluation)
    if not pivot:
        return ""
    metrics = list(dict.fromkeys(m for cells in pivot.values() for m in cells))
    settings = {k: evaluation[k] for k in ("model", "settings") if k in evaluation}
    return ("## Trained with this data: base -> adapter\n\n"
            + (f"Evaluation setup: `{json.dumps(settings, sort_keys=True)}`\n\n" if settings else "")
            + _table(["task", *metrics], [[task, *(f"{_num(cells[m][0])} -> {_num(cells[m][1])}" if m in cells
                                                   else "" for m in metrics)] for task, cells in pivot.items()]))


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _loading(facts: CardFacts, where: str) -> str:
    first = next(iter(facts.counts), "sft")
    has = facts.counts.__contains__
    out = ["## Loading\n", "`datasets`:\n",
           f"```python\nfrom datasets import load_dataset\nds = load_dataset(\"{where}\", \"{first}\")\n```\n"]
    trl = []
    if has("sft"):
        trl.append(f"SFTTrainer(model=..., train_dataset=load_dataset(\"{where}\", \"sft\", split=\"train\"))")
    if has("preference"):
        trl.append(f"DPOTrainer(model=..., train_dataset=load_dataset(\"{where}\", \"preference\", "
                   "split=\"train\"))")
    if has("preference_kto"):
        trl.append(f"KTOTrainer(model=..., train_dataset=load_dataset(\"{where}\", \"preference_kto\", "
                   "split=\"train\"))")
    if trl:
        out += ["TRL:\n", "```python\nfrom datasets import load_dataset\n"
                "from trl import DPOTrainer, KTOTrainer, SFTTrainer\n" + "\n".join(trl) + "\n```\n"]
    if facts.llamafactory:
        first_entry = next(iter(facts.llamafactory))
        example = f"dataset: {first_entry}\n" + "".join(
            f"eval_dataset: {e}\n" for e in facts.llamafactory if e == f"{first_entry}_validation")
        out += [("LLaMA-Factory: `dataset_info.json` is included, one entry per split (validation and test have "
                "their own); set `dataset_dir` to the downloaded folder:\n"),
                _table(["entry", "file"], [[f"`{k}`", f"`{v}`"] for k, v in facts.llamafactory.items()]),
                f"```yaml\ndataset_dir: <folder>\n{example}```\n"]
    axolotl = _axolotl(facts, where)
    if axolotl:
        out += ["Axolotl (the `datasets:` stanza for each config it reads):\n", axolotl]
    return "\n".join(out)


AXOLOTL = {  # config -> Axolotl `datasets:` entry fields (type and column mapping); preference needs `rl: dpo`
    "sft": {"type": "chat_template", "field_messages": "messages",
            "message_property_mappings": {"role": "role", "content": "content"}},
    "sft_sharegpt": {"type": "chat_template", "field_messages": "conversations",
                     "message_property_mappings": {"role": "from", "content": "value"},
                     "roles": {"user": ["human"], "assistant": ["gpt"], "system": ["system"]}},
    "sft_alpaca": {"type": "alpaca"},
    "sft_text": {"type": "completion", "field": "text"},
    "preference": {"type": "chat_template.default", "field_messages": "prompt", "field_chosen": "chosen",
                   "field_rejected": "rejected"},
}


def _axolotl(facts: CardFacts, where: str) -> str:
    blocks = []
    for name, stanza in AXOLOTL.items():
        if name in facts.counts:
            rl = "rl: dpo\n" if name == "preference" else ""
            body = yaml.safe_dump({"datasets": [{"path": where, "name": name, "split": "train", **stanza}]},
                                  sort_keys=False)
            blocks.append(f"`{name}`:\n```yaml\n{rl}{body}```\n")
    return "\n".join(blocks)


def _prompt_format(facts: CardFacts) -> str:
    p = facts.export["prompt"]
    splits = facts.export["splits"]
    lines = ["## How an example becomes a conversation\n",
             (f"- user turn: `{json.dumps(p['user_template'])}` (with input), "
             f"`{json.dumps(p['user_template_no_input'])}` (without), in every config"),
             f"- system prompt: {json.dumps(p['system']) if p['system'] else 'none (no system turn in any config)'}"]
    t = facts.template
    if t:
        end = t["end_token"]
        lines.append(f"- `sft_text` is rendered with the chat template of **{t['name']}**; rows end right after "
                     "the answer, with no end token: the trainer appends its `eos_token` (TRL's SFTTrainer to a text "
                     "that lacks it, LLaMA-Factory's pre-training stage always), so it is never doubled"
                     + (f". That token must be `{end}`, this template's end of turn (TRL: "
                        f"`SFTConfig(eos_token=\"{end}\")` when the tokenizer's differs)" if end else ""))
        if t.get("default_system") and not p["system"]:
            lines.append(f"- this template adds a default system turn ({json.dumps(t['default_system'])}) to "
                         "conversations without one; `sft_text` has no system turn, as configured, but a tool that "
                         "applies this template to `sft`/`preference` itself will add it")
    lines.append(f"- splits by a hash of the example id (seed {facts.seed}): train {splits['train']}, validation "
                 f"{splits['validation']}, test {splits['test']}"
                 f"{', stratified by task' if splits['stratify_by_task'] else ''}\n")
    return "\n".join(lines)


def _preference(facts: CardFacts) -> str:
    pref = facts.preference
    if not pref:
        return ""
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(pref.get("dropped", {}).items())) or "none"
    cfg = facts.export.get("preference") or {}
    return "## Preference pairs\n\n" + _bullets({
        "pairs": f"{pref['pairs']} from {pref['prompts']} prompts",
        "prompts without a pair": dropped,
        "candidates cut off by max_tokens (finish reason `length`)": pref.get("truncated", "not recorded"),
        "judge": f"`{pref['judge']}` ({pref.get('judge_failures', 0)} failed grades)",
        "sampling": f"k={pref['k']}, temperatures {pref['temperatures']}, top_p {cfg.get('top_p')}, "
                    f"max_tokens {cfg.get('max_tokens')}",
        "rejected answer": pref["rejected"]})


def _funnel(facts: CardFacts) -> str:
    rows, settings = [], []
    for st in facts.stages:
        stats, name = st["stats"], st["stage"]
        for f in stats.get("funnel", []):
            rows.append([name, str(f["filter"]), str(f["rows_in"]), str(f["rows_out"]),
                         str(f["rows_in"] - f["rows_out"])])
        for reason, n in sorted(stats.get("rejected_by_reason", {}).items()):
            rows.append([name, reason, "", "", str(n)])
        if not stats.get("funnel") and not stats.get("rejected_by_reason"):
            rows.append([name, "(all)", "", str(stats.get("rows_out", "")), str(stats.get("rows_rejected", 0))])
        section = st.get("section") or {}
        steps = ({"mixing": section["mixing"], "render": section.get("render")} if "mixing" in section
                 else section.get("steps"))
        if steps:
            settings.append(f"`{name}`:\n```json\n{json.dumps(steps, indent=1, sort_keys=True)}\n```\n")
    if not rows:
        return ""
    return ("## Funnel over every stage\n\n"
            + _table(["stage", "step / reason", "rows in", "rows out", "removed"], rows)
            + ("\nEvery step's settings and thresholds, as run:\n\n" + "\n".join(settings) if settings else ""))


def _provenance(facts: CardFacts) -> str:
    out = ["## Provenance\n", "Sources (rows ingested and exported; content hash of each file read):\n"]
    files = {}
    for st in facts.stages:
        files.update(st.get("files") or {})
    ingested = next((st["stats"].get("per_source", {}) for st in facts.stages if st["stage"] == "ingest"), {})
    out.append(_table(["source", "ingested", "exported", "license"],
                      [[f"`{s}`", str(ingested.get(s, "")), str(facts.sources.get(s, 0)), _source_license(facts, s)]
                       for s in sorted(set(facts.sources) | set(ingested))]))
    if files:
        out.append(_table(["file", "content hash"], [[f"`{Path(f).name}`", f"`{h}`"] for f, h in sorted(files.items())]))
    ingest = next((st.get("section") or {} for st in facts.stages if st["stage"] == "ingest"), {})
    hub_sets = [f for f in ingest.get("files", []) if f.get("dataset")]
    if hub_sets:
        out.append(_table(["dataset", "subset", "split", "preset"],
                          [[f"`{f['dataset']}`", str(f.get("subset") or ""), f["split"], f["preset"]] for f in hub_sets]))
    models = facts.models or ["none"]
    license_ = facts.export["card"]["model_license"] or next(
        (lic for m in models if BUNDLED_MODEL_LICENSE[0] in m for lic in [BUNDLED_MODEL_LICENSE[1]]), "not recorded")
    out.append(_bullets({"model": ", ".join(f"`{m}`" for m in models), "model license": license_,
                         "run seed": facts.seed}))
    gen = next((s for s in facts.stages if s["stage"] == "generate"), None)
    if gen:
        sec = gen.get("section") or {}
        keys = ("mode", "prompt_style", "target", "prompts_per_round", "human_examples", "machine_examples",
                "novelty_threshold", "sampling", "instance_max_tokens", "instance_temperature")
        out += ["Generation (Self-Instruct) settings, as run:\n",
                "```json\n" + json.dumps({k: sec[k] for k in keys if k in sec}, indent=1) + "\n```\n"]
        if gen.get("prompts"):
            out += ["Generation prompts (`<...>`: where the pool's tasks go):\n"] + [
                f"{k}:\n```text\n{v}\n```\n" for k, v in gen["prompts"].items()]
    out += ["Stages (code version and fingerprint, from each stage's manifest):\n",
            _table(["stage", "code", "fingerprint"],
                   [[s["stage"], f"`{_code_version(s['code'])}`", f"`{s['fingerprint']}`"] for s in facts.stages]),
            (f"To rebuild: `pip install instructforge` at the code version above, then "
            f"`instructforge run {CONFIG_FILE}` (the config this run used, in this repo).\n")]
    return "\n".join(out)


def _code_version(code: Any) -> str:
    """The package version and one digest of the stage's code (its modules' sources and library
    versions, listed one by one in the stage's manifest `code`): a line, not the whole list."""
    if not isinstance(code, dict):
        return str(code)
    digest = hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:16]
    return f"instructforge {code.get('version', '?')}, code {digest}"


def _source_license(facts: CardFacts, source: str) -> str:
    configured = facts.export["card"]["source_licenses"]
    if source in configured or source in LICENSE_NOTES:
        return configured.get(source) or LICENSE_NOTES[source]
    if source.startswith("selfinstruct:"):
        return "generated by the model: its license and terms of use apply"
    return "not recorded (set export.card.source_licenses)"


def _quality(facts: CardFacts) -> str:
    q = facts.quality
    if not q:
        return ""
    lines = ["## Quality facts to know before training\n"]
    lines.append(_bullets({k: v for k, v in (
        ("generated answers cut off by max_tokens (rejected)", q.get("generation_truncated")),
        ("preference candidates cut off by max_tokens", (facts.preference or {}).get("truncated")),
        ("preference prompts whose answers all tied (no pair)", (facts.preference or {}).get("dropped", {}).get("tie")),
        ("rows removed by language ID", q.get("language_rejections")),
        ("rows removed as benchmark contamination", q.get("contamination")),
    ) if v is not None}))
    for title, key in (("Language-ID rejections (check they are not false positives)", "language_examples"),
                       ("Contamination matches", "contamination_examples")):
        if q.get(key):
            lines += [f"{title}:\n", _table(["reason", "text"], [[r["reason"], r["text"][:160]] for r in q[key]])]
    return "\n".join(lines)


def _samples(facts: CardFacts) -> str:
    if not facts.samples:
        return ""
    return "## One record per config\n\n" + "\n".join(
        f"`{n}`:\n```json\n{json.dumps(r, ensure_ascii=False)}\n```\n" for n, r in facts.samples.items())


def _limitations(facts: CardFacts) -> str:
    items = [f"Generated by {', '.join(f'`{m}`' for m in facts.models)}: a model this size writes simple, sometimes "
             "wrong tasks and answers; filters remove duplicates and obvious failures, not factual errors."
             if facts.models else "",
             "Preference labels come from an automatic judge; tied prompts yield no pair." if facts.preference else "",
             "Heuristic filters (language ID, repetition) misfire on short or numeric rows: see the quality facts.",
             "Decontamination is n-gram overlap against the listed benchmarks only."]
    return "## Known limitations\n\n" + "\n".join(f"- {i}" for i in items if i) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _bullets(items: dict[str, Any]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in items.items()) + "\n"


def parse_card(text: str) -> tuple[dict[str, Any], str]:
    """(YAML metadata, body) of a card; used by push and the tests."""
    if not text.startswith("---\n"):
        raise ValueError("card has no YAML header")
    header, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(header), body
