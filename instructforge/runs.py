"""Run directory and stage cache.

    runs/<run>/<NN-stage>/data/part-*.parquet       rows the stage produced
                          rejected/part-*.parquet   rows it removed, + stage, filter, reason, evidence
                          stats.json                counts, funnel
                          manifest.json             fingerprint = hash(input fingerprints, config, code)

A stage runs in a work directory `.<NN-stage>.<fp>.work/` and is renamed into place only when
complete, so a crash never leaves a half-written stage that looks done. Shards are written to a
temporary name and renamed, so a crash never leaves a half-written shard either. Resumable stages
(Self-Instruct) keep their shards in the work directory across crashes and continue from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from instructforge import __version__
from instructforge.records import Example, rejected_schema

MANIFEST = "manifest.json"
SHARD_ROWS = 50_000


def fingerprint(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


_code_versions: dict[str, str] = {}


def code_version(*modules: str) -> str:
    """Package version + hash of the source of the given packages: editing a stage reruns it."""
    key = ",".join(modules)
    if key not in _code_versions:
        h = hashlib.sha256(__version__.encode())
        for name in modules:
            mod = import_module(name)
            root = Path(mod.__file__).parent
            for f in sorted(root.rglob("*.py")):
                h.update(f.relative_to(root).as_posix().encode())
                h.update(f.read_bytes())
        _code_versions[key] = f"{__version__}+{h.hexdigest()[:12]}"
    return _code_versions[key]


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def write_table_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


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
        """Write what is buffered as one shard now (resumable stages call this per checkpoint)."""
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
        self.out = ShardWriter(work / "data", schema, prefix=prefix)
        self._rejected = ShardWriter(work / "rejected", rejected_schema(schema), prefix=prefix)
        self.stats: dict[str, Any] = {}

    def write(self, rows: pa.Table | pa.RecordBatch | Iterable[dict]) -> None:
        self.out.write(rows)

    def reject(self, rows: pa.Table | Iterable[dict], filter: str, reason: str | None = None,
               evidence: list[dict[str, str]] | dict[str, str] | None = None) -> None:
        """Keep removed rows with why. Rows may carry their own `reason`/`evidence` (per row)."""
        schema = self._rejected.schema
        if isinstance(rows, pa.Table):
            rows = rows.to_pylist()
        rows = list(rows)
        if not rows:
            return
        ev = evidence if isinstance(evidence, list) else [evidence or {}] * len(rows)
        table = pa.Table.from_pylist(
            [{"stage": self.stage, "filter": filter, "reason": reason or filter, "evidence": e or {}, **r}
             for r, e in zip(rows, ev, strict=True)], schema=schema)
        self._rejected.write(table)

    def checkpoint(self) -> dict[str, list[str]]:
        """Flush kept and rejected rows to shards now; returns the shard names on disk.

        A resumable stage stores this with its own state and passes it to `rollback` on resume.
        """
        self.out.flush()
        self._rejected.flush()
        return {w.folder.name: sorted(p.name for p in w.folder.glob("part-*.parquet"))
                for w in (self.out, self._rejected)}

    def rollback(self, saved: dict[str, list[str]]) -> None:
        """Delete shards written after the checkpoint `saved` (a crash mid-round), keep the rest."""
        for writer in (self.out, self._rejected):
            keep = set(saved.get(writer.folder.name, []))
            for shard in writer.folder.glob("part-*.parquet"):
                if shard.name not in keep:
                    shard.unlink()
        self.out = ShardWriter(self.out.folder, self.out.schema, prefix=self.out.prefix)
        self._rejected = ShardWriter(self._rejected.folder, self._rejected.schema, prefix=self._rejected.prefix)

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


class RunDir:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def stage_path(self, index: int, name: str) -> Path:
        return self.root / f"{index:02d}-{name}"

    def finished(self, index: int, name: str) -> StageOutput | None:
        path = self.stage_path(index, name)
        return StageOutput.load(path) if (path / MANIFEST).exists() else None

    def run_stage(self, index: int, name: str, *, config: Any, inputs: list[StageOutput],
                  code: str, fn: Callable[[StageContext], dict[str, Any] | None],
                  schema: pa.Schema | None = None, resumable: bool = False,
                  force: bool = False, section: Any = None, run: RunContext | None = None,
                  engine_factory: Callable[[], Any] | None = None, previous: StageOutput | None = None,
                  version: int | None = None, prepare: Callable[[Path], None] | None = None,
                  manifest_extra: dict[str, Any] | None = None) -> tuple[StageOutput, bool]:
        """Run `fn` unless a stage with the same fingerprint is on disk. Returns (output, skipped).

        Incremental runs (instructforge.incremental) pass `previous` and `version`, `prepare` (fills
        a new work directory with the earlier versions' shards) and `manifest_extra` (the versions).
        """
        fp = fingerprint({"stage": name, "config": config, "code": code,
                          "inputs": [i.fingerprint for i in inputs]})
        final = self.stage_path(index, name)
        done = self.finished(index, name)
        if done and done.fingerprint == fp and not force:
            return done, True

        work = self.root / f".{final.name}.{fp}.work"
        if (work / MANIFEST).exists() and not force:  # crashed between completion and rename
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
        extra = fn(ctx) or {}
        ctx.close()
        stats = {"stage": name, "rows_out": ctx.rows_out, "rows_rejected": ctx.rows_rejected,
                 "seconds": round(time.time() - started, 3), **ctx.stats, **extra}
        write_json_atomic(work / "stats.json", stats)
        write_json_atomic(work / MANIFEST, {
            "stage": name, "fingerprint": fp, "config": config, "code": code,
            "inputs": [{"path": str(i.path), "fingerprint": i.fingerprint} for i in inputs],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(manifest_extra or {}),
        })
        return self._promote(work, final), False

    def _promote(self, work: Path, final: Path) -> StageOutput:
        """Swap the finished work directory into place; the old one is removed only after."""
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
        return StageOutput.load(final)
