"""One self-contained HTML file per run: what each stage kept and dropped, and what the data looks like.

Everything is read from the run directory (manifests, stats, shards), so a report can be made for
any finished or half-finished run, on any machine, without the config.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from instructforge.errors import InstructforgeError
from instructforge.runs import MANIFEST, StageOutput, read_table

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#4a7fd4;height:12px}.rej{background:#d46a4a}.muted{color:#777}
pre{white-space:pre-wrap;margin:0;max-height:12em;overflow:auto;font-size:12px}
"""


def write_report(run_dir: Path | str, out: Path | None = None) -> Path:
    run_dir = Path(run_dir)
    stages = sorted((p for p in run_dir.glob("[0-9][0-9]-*") if (p / MANIFEST).exists()),
                    key=lambda p: p.name)
    if not stages:
        raise InstructforgeError(f"{run_dir}: no finished stages (run `instructforge run CONFIG` first)")
    outputs = [StageOutput.load(p) for p in stages]
    body = [f"<h1>instructforge run <code>{_e(run_dir.name)}</code></h1>",
            _stages_table(outputs), _funnel(outputs)]
    examples = _last_examples(outputs)
    if examples is not None and examples.num_rows:
        body += [_lengths(examples), _similarity(outputs), _verbs(examples), _samples(examples)]
    body.append(_rejections(outputs))
    out = out or run_dir / "report.html"
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(run_dir.name)}</title>"
           f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out)
    return out


def _e(x: Any) -> str:
    return html.escape(str(x))


def _stages_table(outputs: list[StageOutput]) -> str:
    rows = "".join(
        f"<tr><td>{_e(o.path.name)}</td><td class=n>{s.get('rows_out', 0):,}</td>"
        f"<td class=n>{s.get('rows_rejected', 0):,}</td><td class=n>{s.get('seconds', 0):.1f}</td>"
        f"<td class=muted>{_e(o.fingerprint)}</td></tr>"
        for o in outputs for s in [o.stats()])
    return ("<h2>Stages</h2><table><tr><th>stage</th><th>rows out</th><th>rejected</th><th>seconds</th>"
            f"<th>fingerprint</th></tr>{rows}</table>")


def _funnel(outputs: list[StageOutput]) -> str:
    """Rows in and out of each step of each stage, with why rows left."""
    steps: list[tuple[str, int, int]] = []
    for o in outputs:
        st = o.stats()
        for f in st.get("funnel", []):
            steps.append((f"{o.path.name} / {f.get('filter', f.get('name', '?'))}",
                          int(f.get("rows_in", 0)), int(f.get("rows_out", 0))))
    if not steps:
        return ""
    top = max(r_in for _, r_in, _ in steps) or 1
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td class=n>{r_in:,}</td><td class=n>{r_out:,}</td>"
        f"<td class=n>{r_in - r_out:,}</td><td style='width:40%'><div style='display:flex'>"
        f"<div class=bar style='width:{100 * r_out / top:.1f}%'></div>"
        f"<div class='bar rej' style='width:{100 * (r_in - r_out) / top:.1f}%'></div></div></td></tr>"
        for name, r_in, r_out in steps)
    return ("<h2>Filter funnel</h2><table><tr><th>step</th><th>in</th><th>out</th><th>removed</th>"
            f"<th>kept / removed</th></tr>{rows}</table>")


def _last_examples(outputs: list[StageOutput]) -> pa.Table | None:
    """The rows of the last stage that holds Example rows (the data that goes to export)."""
    for o in reversed(outputs):
        table = read_table(o.data)
        if {"instruction", "output"} <= set(table.column_names):
            return table
    return None


def _histogram(title: str, values: list[float], bins: list[float], fmt: str = "{:g}") -> str:
    # values past the last edge count in the last bin; values below the first are left out
    counts = np.histogram(np.minimum(np.asarray(values, dtype=float), bins[-1]), bins)[0].tolist()
    top = max(counts) or 1
    rows = "".join(
        f"<tr><td>{fmt.format(bins[i])}–{fmt.format(bins[i + 1])}</td><td class=n>{c:,}</td>"
        f"<td style='width:50%'><div class=bar style='width:{100 * c / top:.1f}%'></div></td></tr>"
        for i, c in enumerate(counts))
    return f"<h3>{_e(title)}</h3><table>{rows}</table>"


def _lengths(table: pa.Table) -> str:
    parts = ["<h2>Length distributions (words)</h2>"]
    bins = [0, 5, 10, 20, 40, 80, 160, 320, 640, 1280]
    for col in ("instruction", "input", "output"):
        words = [len((t or "").split()) for t in table.column(col).to_pylist()]
        parts.append(_histogram(f"{col}: median {sorted(words)[len(words) // 2]} words", words, bins))
    return "".join(parts)


def _similarity(outputs: list[StageOutput]) -> str:
    """ROUGE-L of each generated instruction to its nearest neighbour (Self-Instruct's Figure 2)."""
    scores: list[float] = []
    exact_above = 0.0
    for o in outputs:
        if not o.path.name.endswith("generate"):
            continue
        table = read_table(o.data)
        if "meta" not in table.column_names:
            continue
        section = o.manifest.get("config", {}).get("section", {})
        exact_above = max(exact_above, float(section.get("nearest_exact_above", 0.0)))
        seen = set()
        for row_id, meta in zip(table.column("task").to_pylist(), table.column("meta").to_pylist()):
            m = dict(meta or [])
            value = next((m[k] for k in ("nearest_score", "nearest_similarity", "rougeL") if k in m), None)
            if value is not None and row_id not in seen:
                seen.add(row_id)
                scores.append(float(value))
    if not scores:
        return ""
    bins = [round(0.1 * i, 1) for i in range(11)]
    caption = f"{len(scores):,} generated tasks"
    if exact_above > 0:  # the novelty index finds the exact nearest neighbour only above this score
        caption += (f"; scores below {exact_above:g} are lower bounds "
                    "(set selfinstruct.nearest_exact_above: 0 for exact ones)")
    return ("<h2>Similarity to nearest instruction (ROUGE-L)</h2>"
            + _histogram(caption, scores, bins, "{:.1f}"))


def _verbs(table: pa.Table, top: int = 20) -> str:
    """Leading word of each instruction: for imperative instructions this is the root verb."""
    words = Counter()
    for text in table.column("instruction").to_pylist():
        m = re.match(r"\W*([A-Za-z]+)", text or "")
        if m:
            words[m.group(1).lower()] += 1
    rows = "".join(f"<tr><td>{_e(w)}</td><td class=n>{c:,}</td></tr>" for w, c in words.most_common(top))
    return ("<h2>Top leading verbs</h2><p class=muted>first word of each instruction (the root verb of "
            f"imperative instructions)</p><table>{rows}</table>")


def _samples(table: pa.Table, n: int = 12) -> str:
    step = max(1, table.num_rows // n)
    rows = "".join(
        f"<tr><td>{_e(r['task'])}</td><td><pre>{_e(r['instruction'])}</pre></td><td><pre>{_e(r['input'])}</pre>"
        f"</td><td><pre>{_e(r['output'])}</pre></td></tr>"
        for r in table.take(list(range(0, table.num_rows, step))[:n]).to_pylist())
    return ("<h2>Example rows</h2><table><tr><th>task</th><th>instruction</th><th>input</th><th>output</th>"
            f"</tr>{rows}</table>")


def _rejections(outputs: list[StageOutput]) -> str:
    counts: Counter[tuple[str, str, str]] = Counter()
    for o in outputs:
        if not any(o.rejected.glob("part-*.parquet")):
            continue
        rej = read_table(o.rejected)
        for r in rej.select(["stage", "filter", "reason"]).to_pylist():
            reason = re.sub(r"\d+(\.\d+)?", "N", r["reason"] or "")  # group reasons differing by numbers
            key = (r["stage"], r["filter"], reason)
            counts[key] += 1
    if not counts:
        return "<h2>Removed rows</h2><p>none</p>"
    rows = "".join(f"<tr><td>{_e(s)}</td><td>{_e(f)}</td><td>{_e(why)}</td><td class=n>{c:,}</td></tr>"
                   for (s, f, why), c in counts.most_common())
    return ("<h2>Removed rows, by reason</h2><p class=muted>every removed row is in "
            "&lt;stage&gt;/rejected/*.parquet with its evidence</p><table><tr><th>stage</th><th>filter</th>"
            f"<th>reason</th><th>rows</th></tr>{rows}</table>")
