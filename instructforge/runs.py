"""Run directory and stage cache.

    runs/<run>/<NN-stage>/data/part-*.parquet       rows the stage produced
                          rejected/part-*.parquet   rows it removed, + stage, filter, reason, evidence,
                                                    event_id (tells repeated rejections apart)
                          stats.json                counts, funnel
                          manifest.json             fingerprint = hash(input fingerprints, config
                                                    incl. files/models read, code), why it ran, and
                                                    each file's size, rows and checksum

The fingerprint's parts are built in instructforge.fingerprints; a stage whose fingerprint matches
is reused only if its files still match the manifest (instructforge.integrity), else it reruns and
the manifest says why (`ran_because`).

A stage runs in a work directory `.<NN-stage>.<fp>.work/` and is renamed into place only when
complete, so a crash never leaves a half-written stage that looks done. Shards are written to a
temporary name and renamed, so a crash never leaves a half-written shard either. Resumable stages
(Self-Instruct, train) keep the shards of their last `checkpoint()` in the work directory across
crashes and continue from them; shards written after it are dropped on resume, never appended twice.
A full or read-only disk at a write is a one-line StorageError naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from instructforge import faults
from instructforge.errors import storage_error
from instructforge.fingerprints import fingerprint
from instructforge.integrity import MANIFEST, checksums, read_manifest, verify_stage
from instructforge.records import Example, content_id, rejected_schema

SHARD_ROWS = 50_000
SAVED_SHARDS = ".saved-shards.json"  # a resumable stage's shards as of its last checkpoint()
log = logging.getLogger("instructforge.runs")


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with _storage(path, tmp):
        faults.point("write", tmp)
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, path)
    faults.point("written", path)


def write_table_atomic(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with _storage(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        faults.point("write", tmp)
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    faults.point("written", path)


@contextmanager
def _storage(path: Path, tmp: Path) -> Iterator[None]:
    """A full or read-only disk is a one-line StorageError naming the file; the partial file goes."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        err = storage_error(e, path)
        if err is None:
            raise
        raise err from e


def shard_paths(folder: Path, versions: Iterable[int] | None = None) -> list[Path]:
    """The shards of a data/ or rejected/ folder in order; with `versions`, only those incremental
    versions' shards (`part-vNNNN-*.parquet`, see instructforge.incremental)."""
    if versions is None:
        return sorted(folder.glob("part-*.parquet"))
    return sorted(s for v in versions for s in folder.glob(f"part-v{v:04d}-*.parquet"))


def read_table(folder: Path, versions: Iterable[int] | None = None) -> pa.Table:
    """All shards of a data/ or rejected/ folder as one table (temporary files ignored)."""
    shards = shard_paths(folder, versions)
    if not shards:
        raise FileNotFoundError(f"no shards in {folder}")
    return pa.concat_tables([pq.read_table(s) for s in shards], promote_options="default")


def iter_batches(folder: Path, batch_size: int = 10_000,
                 versions: Iterable[int] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a stage's rows shard by shard, so big stages never hold everything in memory."""
    for shard in shard_paths(folder, versions):
        yield from pq.ParquetFile(shard).iter_batches(batch_size=batch_size)


class ShardWriter:
    """Buffers rows and writes them as numbered, atomically renamed Parquet shards."""

    def __init__(self, folder: Path, schema: pa.Schema, shard_rows: int = SHARD_ROWS, prefix: str = "part-"):
        self.folder, self.schema, self.shard_rows = folder, schema, shard_rows
        self.prefix = prefix  # part-vNNNN- in incremental runs: earlier versions' shards stay as they are
        folder.mkdir(parents=True, exist_ok=True)
        self._next = len(list(folder.glob(f"{prefix}*.parquet")))
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.rows = sum(pq.ParquetFile(s).metadata.num_rows for s in folder.glob(f"{prefix}*.parquet"))

    def write(self, rows: pa.Table | pa.RecordBatch | Iterable[dict]) -> None:
        table = self._as_table(rows)
        if table.num_rows == 0:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one shard now (resumable stages: through StageContext.checkpoint)."""
        if not self._buffer:
            return
        write_table_atomic(self.folder / f"{self.prefix}{self._next:05d}.parquet", pa.concat_tables(self._buffer))
        self._next += 1
        self._buffer, self._buffered = [], 0

    def close(self) -> None:
        self.flush()
        if self._next == 0:  # an empty stage still has a readable, typed shard
            write_table_atomic(self.folder / f"{self.prefix}00000.parquet", self.schema.empty_table())
            self._next = 1

    def _as_table(self, rows: pa.Table | pa.RecordBatch | Iterable[dict]) -> pa.Table:
        if isinstance(rows, pa.RecordBatch):
            rows = pa.Table.from_batches([rows])
        if isinstance(rows, pa.Table):
            return rows.select(self.schema.names).cast(self.schema)
        return pa.Table.from_pylist(list(rows), schema=self.schema)


@dataclass
class StageOutput:
    """A finished stage on disk; with `versions`, a view of only those incremental versions' rows."""

    path: Path
    fingerprint: str
    manifest: dict[str, Any] = field(default_factory=dict)
    versions: tuple[int, ...] | None = None

    @classmethod
    def load(cls, path: Path) -> StageOutput:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        return cls(path, manifest["fingerprint"], manifest)

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def rejected(self) -> Path:
        return self.path / "rejected"

    def table(self) -> pa.Table:
        return read_table(self.data, self.versions)

    def batches(self, batch_size: int = 10_000) -> Iterator[pa.RecordBatch]:
        return iter_batches(self.data, batch_size, self.versions)

    def stats(self) -> dict[str, Any]:
        return json.loads((self.path / "stats.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class RunContext:
    """The small part of the run every stage may read besides its own section (never the whole config)."""

    name: str = "default"
    seed: int = 0
    on_error: str = "strict"  # strict | record
    base_dir: Path = Path(".")  # relative paths in the config are resolved from here
    cache_dir: Path | None = None  # request cache and converted models; none = user cache
    engine_model: str | None = None  # the engine's configured model (export renders its chat template)
    incremental: bool = False
    executor: str = "local"
    ray: Any = None  # the `ray:` section (instructforge.executors.config.RayConfig)

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p


class StageContext:
    """What a stage function gets: its own config section, the run context, its inputs, a writer for
    kept rows and one for removed rows."""

    def __init__(self, stage: str, work: Path, inputs: list[StageOutput], schema: pa.Schema,
                 section: Any = None, run: RunContext | None = None,
                 engine_factory: Callable[[], Any] | None = None,
                 previous: StageOutput | None = None, version: int | None = None):
        self.stage, self.work, self.inputs = stage, work, inputs
        self.schema = schema
        self.section = section  # this stage's typed config section (read-only)
        self.run = run or RunContext()
        self._engine_factory = engine_factory
        # incremental runs: this stage's previous finished output (its indexes, its pool) and the
        # version being written; `inputs` are then views of the input versions not yet consumed
        self.previous, self.version = previous, version
        prefix = f"part-v{version:04d}-" if version else "part-"
        _drop_unsaved_shards(work, prefix)
        self.out = ShardWriter(work / "data", schema, prefix=prefix)
        self._rejected = ShardWriter(work / "rejected", rejected_schema(schema), prefix=prefix)
        self._events = _rejection_counts(self._rejected.folder)
        self.stats: dict[str, Any] = {}

    def write(self, rows: pa.Table | pa.RecordBatch | Iterable[dict]) -> None:
        self.out.write(rows)

    def reject(self, rows: pa.Table | Iterable[dict], filter: str, reason: str | None = None,
               evidence: list[dict[str, str]] | dict[str, str] | None = None) -> None:
        """Keep removed rows with why. Rows may carry their own `reason`/`evidence` (per row).

        Each rejected row gets an `event_id`: a hash of (stage, filter, reason, row id, how many
        times this stage rejected that row for that reason before), so the same candidate rejected
        twice gives two rows that can be told apart, and a rerun gives the same ids."""
        schema = self._rejected.schema
        if isinstance(rows, pa.Table):
            rows = rows.to_pylist()
        rows = list(rows)
        if not rows:
            return
        ev = evidence if isinstance(evidence, list) else [evidence or {}] * len(rows)
        full = [{"stage": self.stage, "filter": filter, "reason": reason or filter, "evidence": e or {}, **r}
                for r, e in zip(rows, ev, strict=True)]
        for r in full:
            key = _event_key(r)
            r["event_id"] = content_id(self.stage, *key, str(self._events[key]))
            self._events[key] += 1
        self._rejected.write(pa.Table.from_pylist(full, schema=schema))

    def checkpoint(self) -> dict[str, list[str]]:
        """Flush kept and rejected rows to shards now; returns the shard names on disk.

        A resumable stage stores this with its own state and passes it to `rollback` on resume.
        """
        self.out.flush()
        self._rejected.flush()
        saved = {w.folder.name: sorted(p.name for p in w.folder.glob("part-*.parquet"))
                 for w in (self.out, self._rejected)}
        write_json_atomic(self.work / SAVED_SHARDS, saved)
        return saved

    def rollback(self, saved: dict[str, list[str]]) -> None:
        """Delete shards written after the checkpoint `saved` (a crash mid-round), keep the rest (and
        always the earlier incremental versions' shards: only this version's prefix is looked at)."""
        for writer in (self.out, self._rejected):
            keep = set(saved.get(writer.folder.name, []))
            for shard in writer.folder.glob(f"{writer.prefix}*.parquet"):
                if shard.name not in keep:
                    shard.unlink()
        self.out = ShardWriter(self.out.folder, self.out.schema, prefix=self.out.prefix)
        self._rejected = ShardWriter(self._rejected.folder, self._rejected.schema, prefix=self._rejected.prefix)
        self._events = _rejection_counts(self._rejected.folder)

    @property
    def engine(self) -> Any:
        """The pipeline's engine, created on first use and shared by every stage of the run."""
        if self._engine_factory is None:
            raise RuntimeError(f"stage {self.stage} was not given an engine")
        return self._engine_factory()

    @property
    def rows_out(self) -> int:
        return self.out.rows

    @property
    def rows_rejected(self) -> int:
        return self._rejected.rows

    def close(self) -> None:
        self.out.close()
        self._rejected.close()


def _drop_unsaved_shards(work: Path, prefix: str) -> None:
    """A resumed stage starts from its last checkpoint: shards of this version written after it (by a
    process killed before the stage finished) are deleted, so a rerun never appends a shard twice."""
    path = work / SAVED_SHARDS
    saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for folder in ("data", "rejected"):
        for shard in (work / folder).glob(f"{prefix}*.parquet"):
            if shard.name not in saved.get(folder, []):
                shard.unlink()


def _event_key(row: dict[str, Any]) -> tuple[str, str, str]:
    row_id = row.get("id") or content_id(json.dumps({k: v for k, v in row.items() if k != "evidence"},
                                                    sort_keys=True, default=str))
    return str(row["filter"]), str(row["reason"]), str(row_id)


def _rejection_counts(folder: Path) -> Counter:
    """Rejections already on disk per (filter, reason, row id): where a resumed stage's counts go on."""
    counts: Counter = Counter()
    for shard in sorted(folder.glob("part-*.parquet")):
        names = pq.read_schema(shard).names
        columns = ["filter", "reason", "id"] if "id" in names else [n for n in names if n != "evidence"]
        counts.update(_event_key(r) for r in pq.read_table(shard, columns=columns).to_pylist())
    return counts


def changed_parts(manifest: dict[str, Any], parts: dict[str, Any], limit: int = 4) -> list[str]:
    """Which parts of a stage's fingerprint differ from its manifest, e.g. `config.files./x/bench.jsonl`."""
    old = {"config": manifest.get("config"), "code": manifest.get("code")}
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if a == b or len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{where}.{key}")
        else:
            out.append(where)

    for key in ("config", "code"):
        walk(old[key], parts[key], key)
    before = manifest.get("inputs", [])
    if len(before) != len(parts["inputs"]):
        out.append("inputs")
    else:
        out += [f"input {Path(i['path']).name}" for i, now in zip(before, parts["inputs"], strict=True)
                if i.get("fingerprint") != now]
    return out or ["fingerprint"]


class RunDir:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def stage_path(self, index: int, name: str) -> Path:
        return self.root / f"{index:02d}-{name}"

    def finished(self, index: int, name: str) -> StageOutput | None:
        path = self.stage_path(index, name)
        return StageOutput.load(path) if (path / MANIFEST).exists() else None

    def run_stage(self, index: int, name: str, *, config: Any, inputs: list[StageOutput],
                  code: str | dict[str, str], fn: Callable[[StageContext], dict[str, Any] | None],
                  schema: pa.Schema | None = None, resumable: bool = False,
                  force: bool = False, section: Any = None, run: RunContext | None = None,
                  engine_factory: Callable[[], Any] | None = None, previous: StageOutput | None = None,
                  version: int | None = None, prepare: Callable[[Path], None] | None = None,
                  manifest_extra: dict[str, Any] | None = None) -> tuple[StageOutput, bool]:
        """Run `fn` unless a stage with the same fingerprint is on disk. Returns (output, skipped).

        Incremental runs (instructforge.incremental) pass `previous` and `version`, `prepare` (fills
        a new work directory with the earlier versions' shards) and `manifest_extra` (the versions).
        """
        parts = {"stage": name, "config": config, "code": code, "inputs": [i.fingerprint for i in inputs]}
        fp = fingerprint(parts)
        final = self.stage_path(index, name)
        reason = "forced" if force else self.why_run(final, fp, parts)
        if reason is None:
            return StageOutput.load(final), True
        damaged = reason.startswith("cached output")  # a warning: someone or something changed the run dir
        log.log(logging.WARNING if damaged else logging.INFO, "%s: running (%s)", name, reason,
                extra={"stage": name, "event": "run", "reason": reason})

        work = self.root / f".{final.name}.{fp}.work"
        if (work / MANIFEST).exists() and not force and not verify_stage(work):  # crashed before the rename
            return self._promote(work, final), False
        if work.exists() and (force or not resumable):
            shutil.rmtree(work)
        for stale in self.root.glob(f".{final.name}.*.work"):  # other fingerprints: obsolete
            if stale != work:
                shutil.rmtree(stale, ignore_errors=True)
        if prepare is not None and not work.exists():
            prepare(work)
        work.mkdir(parents=True, exist_ok=True)

        ctx = StageContext(name, work, inputs, schema or Example.arrow_schema(),
                           section=section, run=run, engine_factory=engine_factory,
                           previous=previous, version=version)
        started = time.time()
        faults.point(f"{name}:start")
        extra = fn(ctx) or {}
        ctx.close()
        faults.point(f"{name}:closed")
        stats = {"stage": name, "rows_out": ctx.rows_out, "rows_rejected": ctx.rows_rejected,
                 "seconds": round(time.time() - started, 3), **ctx.stats, **extra}
        write_json_atomic(work / "stats.json", stats)
        faults.point(f"{name}:stats")
        write_json_atomic(work / MANIFEST, {
            "stage": name, "fingerprint": fp, "config": config, "code": code,
            "inputs": [{"path": str(i.path), "fingerprint": i.fingerprint} for i in inputs],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ran_because": reason,
            "files": checksums(work), **(manifest_extra or {}),
        })
        faults.point(f"{name}:done")
        return self._promote(work, final), False

    @staticmethod
    def why_run(final: Path, fp: str, parts: dict[str, Any]) -> str | None:
        """Why a stage must run (None: its finished output matches `fp` and is intact on disk)."""
        if not final.exists():
            return "not run before"
        try:
            manifest = read_manifest(final)
        except ValueError as e:
            return f"cached output unusable: {e}"
        if manifest["fingerprint"] != fp:
            return "changed: " + ", ".join(changed_parts(manifest, parts))
        problems = verify_stage(final, manifest)
        return "cached output damaged: " + "; ".join(problems) if problems else None

    def _promote(self, work: Path, final: Path) -> StageOutput:
        """Swap the finished work directory into place; the old one is removed only after."""
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
        return StageOutput.load(final)
