"""Human rankings round-trip: k sampled answers per prompt out to annotators, their rankings back in.

`instructforge annotate export RUN` writes every prompt the export stage sampled answers for, with
its candidates (from the stage's `pairs/` and its tie/too-few rejections), in one of three formats:
  jsonl          one prompt per line; annotators fill `ranks` ({candidate id: rank}) and `annotator`
  csv            one row per (prompt, candidate); annotators fill `rank` and `annotator`
  label-studio   tasks to import into Label Studio (List + Ranker), plus the labeling config XML;
                 its JSON export of the annotated tasks is read back
`instructforge annotate import RUN FILE` checks the filled file against the sampled candidates and
writes `RUN/annotations/<file stem>.rankings.jsonl`; `export.preference: {judge: human, rankings:
that file}` then builds the preference data (pairs and rankings) from people's ranks, with the
annotator and time kept as provenance.

Ranks: 1 is best; a tie is the same whole number on several answers (1, 1, 3); every candidate of a
prompt gets a rank. Anything else (missing or non-integer ranks, "1=2"-style ties, unknown prompt or
candidate ids, one annotator ranking a prompt twice) is an error naming the file and row.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from instructforge.errors import InputError
from instructforge.export.config import PromptConfig
from instructforge.export.formats import user_content
from instructforge.export.preference import Candidate
from instructforge.records import Example

FORMATS = ("jsonl", "csv", "label-studio")
CSV_COLUMNS = ["example_id", "candidate_id", "prompt", "response", "rank", "annotator", "annotated_at"]
LABEL_CONFIG = """<View>
  <Header value="Rank the responses: drag the best to the top"/>
  <Text name="prompt" value="$prompt"/>
  <List name="responses" value="$items" title="Responses"/>
  <Ranker name="rank" toName="responses"/>
</View>
"""


@dataclass
class Sampled:
    """A prompt and the answers sampled for it (candidate ids c1..ck, in sampling order)."""

    example_id: str
    prompt: str
    candidates: list[str]

    def ids(self) -> list[str]:
        return [f"c{i + 1}" for i in range(len(self.candidates))]


@dataclass
class Ranking:
    """One annotator's ranks for one prompt: candidates as [{id, text, rank}], 1 = best."""

    example_id: str
    prompt: str
    candidates: list[dict[str, Any]]
    annotator: str
    annotated_at: str | None
    imported_at: str
    source: str  # file:row it came from


def export_dir(run: Path) -> Path:
    found = sorted(p for p in run.glob("*-export") if p.is_dir())
    if not found:
        raise InputError("no finished export stage in this run (run `instructforge export` first)", file=str(run))
    return found[-1]


def _parquet_rows(folder: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]


def sampled_prompts(run: Path) -> list[Sampled]:
    """Every prompt the export stage sampled at least two usable candidates for (answers cut off by
    max_tokens were dropped there): those that formed a pair and the ties (candidates in the evidence)."""
    stage = export_dir(run)
    prompt_cfg = PromptConfig.model_validate(json.loads((stage / "stats.json").read_text())["prompt_format"])
    out: dict[str, Sampled] = {}
    for row in _parquet_rows(stage / "pairs"):
        meta = dict(row["meta"] or {})
        out[meta["example_id"]] = Sampled(meta["example_id"], row["prompt"],
                                          [c["text"] for c in json.loads(meta["candidates"])])
    for row in _parquet_rows(stage / "rejected"):
        evidence = dict(row.get("evidence") or {})
        if row.get("filter") != "preference" or "candidates" not in evidence:
            continue
        ex = Example.model_validate({k: row[k] for k in Example.model_fields if k in row} | {"meta": {}})
        out[ex.id] = Sampled(ex.id, user_content(ex, prompt_cfg), [c["text"] for c in json.loads(evidence["candidates"])])
    out = {k: s for k, s in out.items() if len(s.candidates) >= 2}  # nothing to rank otherwise
    if not out:
        raise InputError("the export sampled no prompt with two or more candidates (set export.preference)",
                         file=str(stage))
    return sorted(out.values(), key=lambda s: s.example_id)


def write_annotation_file(items: list[Sampled], path: Path, fmt: str) -> list[Path]:
    """The file(s) annotators work on; returns what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for s in items:
                f.write(json.dumps({"example_id": s.example_id, "prompt": s.prompt,
                                    "candidates": [{"id": i, "text": t} for i, t in zip(s.ids(), s.candidates,
                                                                                       strict=True)],
                                    "ranks": dict.fromkeys(s.ids()), "annotator": "", "annotated_at": ""},
                                   ensure_ascii=False) + "\n")
        return [path]
    if fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, CSV_COLUMNS)
            w.writeheader()
            for s in items:
                for i, t in zip(s.ids(), s.candidates, strict=True):
                    w.writerow({"example_id": s.example_id, "candidate_id": i, "prompt": s.prompt, "response": t,
                                "rank": "", "annotator": "", "annotated_at": ""})
        return [path]
    if fmt == "label-studio":
        tasks = [{"data": {"example_id": s.example_id, "prompt": s.prompt,
                           "items": [{"id": i, "title": f"Response {i[1:]}", "body": t}
                                     for i, t in zip(s.ids(), s.candidates, strict=True)]}} for s in items]
        path.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
        config = path.with_suffix(".label_config.xml")
        config.write_text(LABEL_CONFIG, encoding="utf-8")
        return [path, config]
    raise InputError(f"unknown annotation format (use one of {', '.join(FORMATS)})", field="format")


def _rank(value: Any, where: dict[str, Any], candidate: str) -> int:
    """A rank as written by a person: a whole number >= 1 (\"2\" and 2.0 are fine)."""
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise InputError(f"missing rank for candidate {candidate}", **where)
        if not value.isdigit():
            raise InputError(f"rank {value!r} of candidate {candidate} is not a whole number >= 1 "
                             "(a tie is the same number on several candidates, e.g. 1, 1, 3)", **where)
        value = int(value)
    if value is None:
        raise InputError(f"missing rank for candidate {candidate}", **where)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 1:
        raise InputError(f"rank {value!r} of candidate {candidate} is not a whole number >= 1 "
                         "(a tie is the same number on several candidates, e.g. 1, 1, 3)", **where)
    return int(value)


def _ranking(s: Sampled | None, example_id: str, ranks: dict[str, Any], annotator: Any, annotated_at: Any,
             where: dict[str, Any], now: str) -> Ranking:
    if s is None:
        raise InputError(f"unknown example id {example_id!r} (not a prompt this run sampled)", **where)
    if not isinstance(annotator, str | int) or not str(annotator).strip():
        raise InputError("missing annotator (who ranked this prompt is kept as provenance)", **where)
    unknown = sorted(set(ranks) - set(s.ids()))
    if unknown:
        raise InputError(f"unknown candidate id(s) {', '.join(unknown)} (this prompt has {', '.join(s.ids())})",
                         **where)
    cands = [{"id": i, "text": t, "rank": _rank(ranks.get(i), where, i)}
             for i, t in zip(s.ids(), s.candidates, strict=True)]
    if max(c["rank"] for c in cands) > len(cands):
        raise InputError(f"rank {max(c['rank'] for c in cands)} is above the number of candidates ({len(cands)})",
                         **where)
    when = str(annotated_at).strip() if annotated_at not in (None, "") else None
    return Ranking(example_id, s.prompt, cands, str(annotator).strip(), when, now,
                   f"{where['file']}:{where['line']}")


def read_annotations(path: Path, items: list[Sampled]) -> list[Ranking]:
    """The rankings in a filled annotation file (format from its suffix / content), checked row by row."""
    by_id = {s.example_id: s for s in items}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    file = str(path)
    out: list[Ranking] = []
    if path.suffix == ".csv":
        groups: dict[str, dict[str, Any]] = {}
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("example_id", "candidate_id", "rank", "annotator") if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"missing column(s) {', '.join(missing)}", file=file, line=1)
            for n, row in enumerate(reader, start=2):
                where = {"file": file, "line": n}
                key = (row["example_id"], (row.get("annotator") or "").strip())
                g = groups.setdefault(key, {"ranks": {}, "line": n, "annotated_at": row.get("annotated_at")})
                if row["candidate_id"] in g["ranks"]:
                    raise InputError(f"duplicate row for candidate {row['candidate_id']} of this prompt and "
                                     f"annotator (first at line {g['line']})", **where, field="candidate_id")
                g["ranks"][row["candidate_id"]] = row["rank"]
        for (example_id, annotator), g in groups.items():
            out.append(_ranking(by_id.get(example_id), example_id, g["ranks"], annotator, g["annotated_at"],
                                {"file": file, "line": g["line"]}, now))
    elif path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = {"file": file, "line": n}
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"not JSON: {e.msg}", **where) from None
            if not isinstance(row, dict) or not isinstance(row.get("ranks"), dict):
                raise InputError("expected an object with `ranks`: {candidate id: rank}", **where, field="ranks")
            out.append(_ranking(by_id.get(row.get("example_id")), row.get("example_id"), row["ranks"],
                                row.get("annotator"), row.get("annotated_at"), where, now))
    elif path.suffix == ".json":
        out = _label_studio(path, by_id, now)
    else:
        raise InputError("unknown annotation file type (.jsonl, .csv, or Label Studio's .json export)", file=file)
    seen: dict[tuple[str, str], str] = {}
    for r in out:
        key = (r.example_id, r.annotator)
        if key in seen:
            raise InputError(f"annotator {r.annotator!r} ranked prompt {r.example_id} twice (also at {seen[key]})",
                             file=file, line=int(r.source.rsplit(":", 1)[1]))
        seen[key] = r.source
    if not out:
        raise InputError("no rankings in the file", file=file)
    return out


def _label_studio(path: Path, by_id: dict[str, Sampled], now: str) -> list[Ranking]:
    """Label Studio's JSON export: one task per prompt, each non-cancelled annotation one ranking
    (List + Ranker without buckets saves {"ranker": {<tag name>: [ids, best first]}})."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"not JSON: {e.msg}", file=str(path), line=e.lineno) from None
    if not isinstance(tasks, list):
        raise InputError("expected Label Studio's JSON export: a list of tasks", file=str(path))
    out = []
    for n, task in enumerate(tasks, start=1):
        where = {"file": str(path), "line": n}  # the n-th task of the export
        example_id = (task.get("data") or {}).get("example_id") if isinstance(task, dict) else None
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            results = [r for r in ann.get("result") or [] if r.get("type") == "ranker"]
            if len(results) != 1:
                raise InputError(f"expected one ranker result per annotation, found {len(results)}", **where)
            orders = results[0].get("value", {}).get("ranker") or {}
            if len(orders) != 1:
                raise InputError("ranker buckets are not supported: use List + Ranker without buckets", **where)
            order = next(iter(orders.values()))
            if len(set(order)) != len(order):
                raise InputError("a candidate appears twice in the ranking", **where)
            ranks = {cid: i + 1 for i, cid in enumerate(order)}
            annotator = ann.get("completed_by")
            if isinstance(annotator, dict):
                annotator = annotator.get("email") or annotator.get("id")
            out.append(_ranking(by_id.get(example_id), example_id, ranks, annotator,
                                ann.get("updated_at") or ann.get("created_at"), where, now))
    return out


def write_rankings(rankings: list[Ranking], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in rankings)


def load_rankings(path: Path) -> list[Ranking]:
    """An imported rankings file (`annotate import` wrote and checked it)."""
    if not path.exists():
        raise InputError("no such rankings file (write it with `instructforge annotate import`)", file=str(path))
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            out.append(Ranking(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise InputError(f"not a rankings row ({e}); re-run `instructforge annotate import`",
                             file=str(path), line=n) from None
    return out


def human_candidates(rankings: list[Ranking], examples: list[Example], path: str
                     ) -> list[tuple[Example, list[Candidate], dict[str, str]]]:
    """(example, its candidates scored by people, provenance) per ranked prompt. Several annotators'
    ranks of one prompt are averaged (score = k + 1 - rank, higher is better)."""
    by_id = {e.id: e for e in examples}
    grouped: dict[str, list[Ranking]] = {}
    for r in rankings:
        if r.example_id not in by_id:
            raise InputError(f"prompt {r.example_id} is not among this export's examples", file=path,
                             line=int(r.source.rsplit(":", 1)[1]) if r.source.rsplit(":", 1)[-1].isdigit() else None)
        grouped.setdefault(r.example_id, []).append(r)
    out = []
    for example_id, rs in grouped.items():
        k = len(rs[0].candidates)
        cands = [Candidate(c["text"], None, "stop",
                           score=round(sum(k + 1 - r.candidates[i]["rank"] for r in rs) / len(rs), 6),
                           aspects={f"rank:{r.annotator}": float(r.candidates[i]["rank"]) for r in rs})
                 for i, c in enumerate(rs[0].candidates)]
        provenance = {"annotators": json.dumps([{"annotator": r.annotator, "annotated_at": r.annotated_at,
                                                 "imported_at": r.imported_at, "source": r.source} for r in rs])}
        out.append((by_id[example_id], cands, provenance))
    return out


def annotate_export(run: Path, fmt: str, out: Path | None = None) -> tuple[list[Path], int]:
    """`annotate export`: (files written, prompts) for annotators; default RUN/annotations/to-rank.<ext>."""
    if fmt not in FORMATS:
        raise InputError(f"unknown annotation format {fmt!r} (use one of {', '.join(FORMATS)})", field="--format")
    items = sampled_prompts(run)
    path = out or run / "annotations" / f"to-rank.{'json' if fmt == 'label-studio' else fmt}"
    return write_annotation_file(items, path, fmt), len(items)


def annotate_import(run: Path, file: Path) -> tuple[Path, list[Ranking]]:
    """`annotate import`: check a filled file and write RUN/annotations/<stem>.rankings.jsonl."""
    if not file.is_file():
        raise InputError("no such annotation file", file=str(file))
    rankings = read_annotations(file, sampled_prompts(run))
    path = run / "annotations" / f"{file.stem}.rankings.jsonl"
    write_rankings(rankings, path)
    return path, rankings
