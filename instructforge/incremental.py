"""Incremental runs (`run.incremental: true`, `instructforge run --incremental`).

Every stage of an incremental run directory grows by versions. Version N of a stage is its
shards `data/part-vNNNN-*.parquet` and `rejected/part-vNNNN-*.parquet`; its manifest lists the
versions under `incremental`:

    "incremental": {"base": {"config": <hash>, "files": <hash>, "code": <hash>}, "versions": [
        {"version": 1, "full": true, "full_because": "first incremental run", "inputs": {"01-ingest": 1}},
        {"version": 2, "full": false, "full_because": null, "inputs": {"01-ingest": 2}}]}

`inputs` says up to which version of each input the stage has consumed. A run:

- **ingest** reads its sources again and writes, as a new version, only the rows whose content
  id no earlier version kept or rejected (the earlier versions' shards *are* the persistent
  "seen ids" set, so it cannot disagree with the stage's data after a crash; ids are counted, so
  one more copy of an earlier row is new). No new row: no new version. Ingest's cost follows
  what is new: each single-file `files:` source records its size and content digest per version;
  one unchanged since then is not read at all, and a JSONL file that only grew (its old bytes hash
  to the old digest) is read from the old end, line numbers continuing (a CSV file likewise,
  after its header line). Their earlier rows (kept in `sources/`, by file) leave the seen ids, so
  the rows written are those a whole re-read would write. A sampling mix (`max_per_task`,
  `total`) or `max_rows` needs every row: then all is read.
- **every later stage** reads only the input versions it has not consumed yet, gets its previous
  output as `ctx.previous` (the filters load their persisted indexes from it, so every earlier
  row counts as before every new row) and writes one new version next to the earlier ones. The
  work directory starts with hard links to the earlier versions' shards and is renamed into place
  when complete, as for any stage, so a killed run leaves the previous version intact and a rerun
  does the same work again.
- **train** (`WHOLE`) learns from the whole export again whenever the export has a new version.
- If no stage has anything new, the run raises `NothingNew` (exit code 5) and changes nothing.

A change of a stage's config section, of its code, or of a reference file it reads (a benchmark,
a novelty pool: everything in its fingerprint except its input rows and ingest's sources) makes
appending to it wrong, so that stage is rebuilt from all input versions as a new *full* version
(logged with the reason), and so is every stage downstream of it. `--force` does the same.
Versions keep counting up, so the export's dataset version only grows.

Incremental == one run over everything holds for sources that only grow (appended rows) and for
rules where earlier rows win: exact and MinHash dedup with keep `first`, novelty, heuristics and
decontamination. Ingest caps/mixing that sample a share of a source, and keep rules that prefer a
later row (`longest_output`, `highest_score`), cannot un-publish a row kept earlier; their
incremental result is the full rule applied to the new rows only.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from instructforge.fingerprints import files_digest
from instructforge.ingest.readers import READ_FROM, resolve_source, split_suffix
from instructforge.integrity import verify_stage
from instructforge.runs import RunDir, StageContext, StageOutput, fingerprint, shard_paths

log = logging.getLogger("instructforge.incremental")

WHOLE = {"train"}  # stages that always read every version of their input
WHAT = {"config": "its config section", "files": "a reference file it reads", "code": "its code"}
INDEX_DIR = "index"  # persisted filter indexes: rewritten by each version, never linked
SOURCES_DIR = "sources"  # per version, (file, id) of every row read from each tracked source file


class _NoNewRows(Exception):
    """Ingest found no row it had not seen: no new version is written."""


def versions(out: StageOutput) -> list[dict[str, Any]]:
    return (out.manifest.get("incremental") or {}).get("versions", [])


def latest_version(out: StageOutput | None) -> int:
    """The stage's newest version number (0 when it has none): the export's dataset version."""
    vs = versions(out) if out is not None else []
    return vs[-1]["version"] if vs else 0


def seen_ids(out: StageOutput) -> Counter[str]:
    """How many rows with each content id earlier versions of a stage kept or rejected."""
    seen: Counter[str] = Counter()
    for folder in (out.data, out.rejected):
        for shard in shard_paths(folder):
            counts = pc.value_counts(pq.read_table(shard, columns=["id"]).column("id"))
            seen.update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                                 strict=True)))
    return seen


def link_earlier_versions(previous: StageOutput) -> Callable[[Path], None]:
    """`prepare` for a new version: hard links to the previous output's Parquet files (shards are
    never modified in place, only replaced), built aside and renamed so a kill leaves no half copy."""
    def prepare(work: Path) -> None:
        tmp = work.with_name(work.name.removesuffix(".work") + ".prep.work")  # swept like a stale work dir
        shutil.rmtree(tmp, ignore_errors=True)
        for src in previous.path.rglob("*.parquet"):
            rel = src.relative_to(previous.path)
            if rel.parts[0] == INDEX_DIR or src.name.startswith("."):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(src, tmp / rel)
        tmp.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, work)
    return prepare


def _without(rows: Any, seen: Counter[str]) -> tuple[Any, int]:
    """`rows` (a table, a batch or dicts) without the ones seen before, and how many those were.

    Counted, not a set: a source that had an id k times before and has it k + 1 times now has one
    new copy (the last), which goes on to exact dedup like the copy in a run over everything.
    """
    tabular = isinstance(rows, pa.Table | pa.RecordBatch)
    if not tabular:
        rows = list(rows)
    ids = rows.column("id").to_pylist() if tabular else [r.get("id") if isinstance(r, dict) else r.id
                                                          for r in rows]
    new = []
    for row_id in ids:
        old = seen[row_id] > 0
        if old:
            seen[row_id] -= 1
        new.append(not old)
    if tabular:
        return rows.filter(pa.array(new)), new.count(False)
    return [r for r, keep in zip(rows, new, strict=True) if keep], new.count(False)


def _source_files(section: Any, run: Any) -> dict[str, str]:
    """{path: its rows' `source`} of the ingest sources whose reading can be skipped or shortened."""
    if section.mixing.max_per_task is not None or section.mixing.total is not None:
        return {}
    paths = [resolve_source(f.path, run.resolve) for f in section.files
             if f.path is not None and f.max_rows is None]
    names = Counter(p.name for p in paths)
    return {str(p): f"file:{p.name}" for p in paths if p.is_file() and names[p.name] == 1}


def _scan(path: Path, mark: int, size: int) -> tuple[str, str, int, bool]:
    """One pass over a JSONL or CSV file's first `size` bytes: (xxh3 of the first `mark`, xxh3 of all
    `size`, newlines after `mark`, whether it ends with one). xxh3, not sha256: a grown file is
    hashed in every incremental run, and this is ~10x cheaper."""
    h = xxhash.xxh3_128()
    head, lines, last = "", 0, b""
    with path.open("rb") as f:
        for start, end in ((0, mark), (mark, size)):
            remaining = end - start
            while remaining > 0 and (chunk := f.read(min(remaining, 1 << 22))):
                h.update(chunk)
                remaining, last = remaining - len(chunk), chunk[-1:]
                lines += chunk.count(b"\n") if start == mark else 0
            head = head or h.hexdigest()
    return head, h.hexdigest(), lines, last == b"\n"


def _one_line_header(path: Path) -> bool:
    """A CSV tail is read after the file's first line: only right when that line is the whole header."""
    if split_suffix(path)[0] != ".csv":
        return True
    with path.open("rb") as f:
        return b'"' not in f.readline()


def plan_sources(prev: StageOutput | None, files: dict[str, str], cache_dir: Path | None
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(READ_FROM for this version, {file: bytes, digest, read[, xxh3, lines, ends_line]} for its
    manifest entry).

    A JSONL or CSV file is read up to its size now, so rows appended while this run reads are left whole to
    the next run; a file that changed while it was hashed gets no digest (the next run reads it whole).
    """
    if not files:
        return {}, {}
    last = versions(prev)[-1].get("sources", {}) if prev is not None and versions(prev) else {}
    stamps = {f: (Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in files}
    digests = files_digest([Path(f) for f in files], cache_dir)
    read_from: dict[str, Any] = {}
    records: dict[str, dict[str, Any]] = {}
    for file in files:
        path, old = Path(file), last.get(file) or {}
        size = stamps[file][0]
        steady = (path.stat().st_size, path.stat().st_mtime_ns) == stamps[file]
        rec = {"bytes": size, "digest": digests[file] if steady else None, "read": "whole"}
        if rec["digest"] is not None and (old.get("bytes"), old.get("digest")) == (size, rec["digest"]):
            read_from[file], rec["read"] = "skip", "unchanged"
            rec.update({k: old[k] for k in ("xxh3", "lines", "ends_line") if k in old})
        elif split_suffix(path) in ((".jsonl", ""), (".csv", "")):
            grown = old.get("ends_line") and 0 < old["bytes"] < size and _one_line_header(path)
            mark = old["bytes"] if grown else 0
            head, rec["xxh3"], lines, rec["ends_line"] = _scan(path, mark, size)
            if grown and head == old.get("xxh3"):
                read_from[file], rec["lines"] = (mark, old["lines"], size), old["lines"] + lines
                rec["read"] = f"from byte {mark}"
            else:
                read_from[file], rec["lines"] = (0, 0, size), lines + (_scan(path, 0, mark)[2] if mark else 0)
        records[file] = rec
    return read_from, records


def _earlier_rows(prev: StageOutput, files: list[str]) -> Counter[str]:
    """Ids of the rows earlier versions read from `files`, since each file was last read whole."""
    history = versions(prev)
    since = {f: max((v["version"] for v in history if v.get("sources", {}).get(f, {}).get("read") == "whole"),
                    default=0) for f in files}
    rows: Counter[str] = Counter()
    for shard in sorted((prev.path / SOURCES_DIR).glob("part-v*.parquet")):
        version = int(shard.name.removeprefix("part-v").split(".")[0])
        t = pq.read_table(shard).to_pydict()
        rows.update(i for f, i in zip(t["file"], t["id"], strict=True) if f in since and version >= since[f])
    return rows


def read_sources(fn: Callable[[StageContext], Any], seen: Counter[str], files: dict[str, str],
                 read_from: dict[str, Any], version: int, appending: bool) -> Callable[[StageContext], Any]:
    """Wrap ingest's `run`: files are read from where `read_from` says, rows (kept or rejected) seen by
    earlier versions are not written again, and the ids read from each tracked file are kept."""
    def run(ctx: StageContext) -> Any:
        write, reject = ctx.write, ctx.reject
        skipped = 0
        by_label = {label: f for f, label in files.items()}
        read: list[tuple[str, str]] = []  # (file, id) of every row read from a tracked file

        def track(rows: Any) -> None:
            if isinstance(rows, pa.Table | pa.RecordBatch):  # kept rows: their source names the file
                rows = rows.select(["id", "source"]).to_pylist()
            for r in rows:
                d = r if isinstance(r, dict) else r.model_dump()
                file = by_label.get(d.get("source") or "") or (d.get("meta") or {}).get("file")
                if file in files:
                    read.append((file, d["id"]))

        def write_new(rows: Any) -> None:
            nonlocal skipped
            rows = rows if isinstance(rows, pa.Table | pa.RecordBatch) else list(rows)
            track(rows)
            rows, n = _without(rows, seen)
            skipped += n
            write(rows)

        def reject_new(rows: Any, filter: str, reason: str | None = None, evidence: Any = None) -> None:
            nonlocal skipped
            rows = rows.to_pylist() if isinstance(rows, pa.Table) else list(rows)
            if isinstance(evidence, list):  # per-row evidence travels with its row
                rows = [{**r, "evidence": e} for r, e in zip(rows, evidence, strict=True)]
                evidence = None
            track(rows)
            rows, n = _without(rows, seen)
            skipped += n
            reject(rows, filter, reason, evidence)

        ctx.write, ctx.reject = write_new, reject_new  # type: ignore[method-assign]
        token = READ_FROM.set(read_from)
        try:
            extra = fn(ctx)
        finally:
            READ_FROM.reset(token)
        if appending and ctx.rows_out == 0 and ctx.rows_rejected == 0:
            shutil.rmtree(ctx.work, ignore_errors=True)
            raise _NoNewRows
        if files:
            (ctx.work / SOURCES_DIR).mkdir(exist_ok=True)
            pq.write_table(pa.table({"file": [f for f, _ in read], "id": [i for _, i in read]},
                                    schema=pa.schema([("file", pa.string()), ("id", pa.string())])),
                           ctx.work / SOURCES_DIR / f"part-v{version:04d}.parquet")
        ctx.stats["seen_skipped"] = skipped
        ctx.stats["files_unchanged"] = sorted(f for f, r in read_from.items() if r == "skip")
        ctx.stats["files_read_from"] = {f: r[0] for f, r in read_from.items() if r != "skip" and r[0]}
        return extra
    return run


class Incremental:
    """The incremental side of one pipeline run: plans each stage's new version and remembers
    whether any stage had something new."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.changed: list[str] = []  # stages that wrote a new version in this run

    def run_stage(self, index: int, name: str, *, config: dict[str, Any], code: str,
                  inputs: list[StageOutput], fn: Callable[[StageContext], Any], force: bool = False,
                  **kwargs: Any) -> tuple[StageOutput, bool]:
        """Run one stage as a new version (or skip it); same result shape as `RunDir.run_stage`."""
        sources = not inputs  # the first stage: its files are the sources, read again each run
        base = {"config": fingerprint({k: v for k, v in config.items() if k != "files"}),
                "files": fingerprint({} if sources else config.get("files", {})), "code": fingerprint(code)}
        prev = self.run_dir.finished(index, name)
        history = versions(prev) if prev is not None else []
        consumed = history[-1]["inputs"] if history else {}
        reason = self._full_reason(prev, base, inputs, consumed, force or name in WHOLE)
        version = latest_version(prev) + 1
        if reason is None:
            pending = [self._pending(i, consumed) for i in inputs]
            if not sources and not any(self._rows(v) for v in pending):
                return prev, True  # nothing new reached this stage
            inputs = pending
        else:
            if prev is not None and name not in WHOLE:
                log.warning("%s: rebuilding from all input versions as version %d (%s)", name, version, reason)
            history = []
        entry = {"version": version, "full": reason is not None, "full_because": reason,
                 "inputs": {i.path.name: latest_version(i) for i in inputs}}
        if sources:
            run = kwargs.get("run")
            files = _source_files(kwargs["section"], run) if run is not None else {}
            read_from, entry["sources"] = plan_sources(None if reason else prev, files,
                                                       run.cache_dir if run is not None else None)
            not_reread = [f for f, r in read_from.items() if r == "skip" or r[0]]
            seen = Counter() if reason else seen_ids(prev) - _earlier_rows(prev, not_reread)
            fn = read_sources(fn, seen, files, read_from, version, appending=reason is None)
        try:
            out, skipped = self.run_dir.run_stage(
                index, name, config=config, code=code, inputs=inputs, fn=fn, force=force,
                previous=None if reason else prev, version=version,
                prepare=None if reason else link_earlier_versions(prev),
                manifest_extra={"incremental": {"base": base, "versions": [*history, entry]}}, **kwargs)
        except _NoNewRows:
            return prev, True
        if not skipped:
            self.changed.append(name)
        return out, skipped

    @staticmethod
    def _full_reason(prev: StageOutput | None, base: dict[str, str], inputs: list[StageOutput],
                     consumed: dict[str, int], force: bool) -> str | None:
        """Why this stage cannot append a version to its previous output (None: it can)."""
        if prev is None:
            return "first incremental run"
        damaged = verify_stage(prev.path, prev.manifest)
        if damaged:  # never build on (or hand downstream) shards that are not what was written
            return "cached output damaged: " + "; ".join(damaged)
        if not versions(prev):
            return "the existing output was not written by an incremental run"
        before = prev.manifest["incremental"]["base"]
        changed = [WHAT[k] for k in WHAT if not isinstance(before, dict) or before.get(k) != base[k]]
        if changed:
            return f"{' and '.join(changed)} changed"
        if force:
            return "forced (--force, or a stage that always reads its whole input)"
        for inp in inputs:
            seen = consumed.get(inp.path.name)
            if seen is None:
                return f"new input {inp.path.name}"
            if any(v["full"] and v["version"] > seen for v in versions(inp)):
                return f"input {inp.path.name} was rebuilt"
        return None

    @staticmethod
    def _pending(inp: StageOutput, consumed: dict[str, int]) -> StageOutput:
        newer = tuple(v["version"] for v in versions(inp) if v["version"] > consumed[inp.path.name])
        return StageOutput(inp.path, inp.fingerprint, inp.manifest, versions=newer)

    @staticmethod
    def _rows(view: StageOutput) -> int:
        return sum(pq.ParquetFile(s).metadata.num_rows for s in shard_paths(view.data, view.versions))
