"""The pipeline is a plain list of stages; each is a function of (its inputs, its config section).

A stage whose config section is absent is not configured: `run` skips it and stages after it
read its inputs instead (so `filter` reads ingest directly when there is no `selfinstruct:`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from instructforge.config import PipelineConfig
from instructforge.errors import ExitCode, NothingNew, RunLocked
from instructforge.fingerprints import code_digests, engine_fingerprint
from instructforge.incremental import Incremental, latest_version
from instructforge.lock import RunLock
from instructforge.records import Example
from instructforge.runs import RunDir, StageOutput, write_json_atomic
from instructforge.summary import LAST_RUN, RunSummary, exit_code_for

CONFIG_COPY = "instructforge.yaml"


@dataclass(frozen=True)
class Stage:
    index: int
    name: str
    section: str  # attribute of PipelineConfig
    # defines run(ctx) -> stats | None; optionally SCHEMA, summary(output) -> renderables, and
    # input_fingerprint(section, run) -> digests of the files and models it reads besides its inputs
    module: str
    inputs: tuple[str, ...] = ()
    # whether the stage calls the engine with this section: only then are the engine's settings
    # (those that change outputs) and its code part of the stage's fingerprint
    uses_engine: Callable[[Any], bool] = lambda section: False
    resumable: bool = False

    def load(self) -> Any:
        return import_module(self.module)


STAGES: list[Stage] = [
    Stage(1, "ingest", "ingest", "instructforge.ingest.stage"),
    Stage(2, "generate", "selfinstruct", "instructforge.selfinstruct.stage", ("ingest",),
          uses_engine=lambda section: True, resumable=True),
    Stage(3, "filter", "filters", "instructforge.filters.stage", ("ingest", "generate"),
          uses_engine=lambda section: any(step.type == "judge" for step in section.steps)),
    Stage(4, "export", "export", "instructforge.export.stage", ("filter",),
          uses_engine=lambda section: section.preference is not None and section.preference.judge != "human"),
    Stage(5, "train", "train", "instructforge.train.stage", ("export",), resumable=True),
]
BY_NAME = {s.name: s for s in STAGES}


def configured(cfg: PipelineConfig, stage: Stage) -> bool:
    return stage.name == "ingest" or getattr(cfg, stage.section) is not None


def input_stages(cfg: PipelineConfig, stage: Stage) -> list[Stage]:
    """Upstream stages this one reads; an unconfigured upstream is replaced by its own inputs."""
    out: list[Stage] = []
    for name in stage.inputs:
        up = BY_NAME[name]
        for s in [up] if configured(cfg, up) else input_stages(cfg, up):
            if s not in out:
                out.append(s)
    return out


StageCallback = Callable[[Stage, StageOutput, bool], None]


class Pipeline:
    """Runs stages in order through the stage cache, sharing one lazily created engine."""

    def __init__(self, cfg: PipelineConfig, *, use_request_cache: bool = True):
        self.cfg = cfg
        self.run_dir = RunDir(cfg.run.path)  # relative to where you run, like `make demo`'s runs/demo
        self.use_request_cache = use_request_cache
        self._engine: Any = None
        self.outputs: dict[str, StageOutput] = {}
        self.summary: RunSummary | None = None  # the last run's last-run.json record
        self.incremental = Incremental(self.run_dir) if cfg.run.incremental else None

    def engine(self) -> Any:
        if self._engine is None:
            from instructforge.executors import create_run_engine

            cache = self.run_dir.root / "request-cache.sqlite" if self.use_request_cache else None
            self._engine = create_run_engine(self.cfg.context(), self.cfg.engine, request_cache=cache,
                                             cache_dir=self.cfg.run.cache_dir)
        return self._engine

    def close(self) -> None:
        if self._engine is not None and hasattr(self._engine, "close"):
            self._engine.close()
        self._engine = None

    def run(self, until: str | None = None, *, force: bool = False,
            on_stage: StageCallback | None = None) -> dict[str, StageOutput]:
        """Run every configured stage (up to and including `until`, which need not be configured).

        `force` reruns `until` (or, without `until`, every stage) even when its cache matches.
        The run holds the run directory's lock throughout (`RunLocked` if another run has it),
        writes the resolved config to runs/<run>/instructforge.yaml first and runs/<run>/last-run.json
        when it ends, however it ends; `self.summary` holds that record.
        """
        root = self.run_dir.root
        self.summary = RunSummary(self.cfg.run.name, root, sys.argv)
        try:
            with RunLock(root):
                try:
                    self.write_config(root / CONFIG_COPY)
                    self._run_stages(until, force, on_stage)
                    self._publish(until)
                    self.summary.finish(ExitCode.OK)
                except BaseException as e:
                    self.summary.finish(exit_code_for(e), str(e) or type(e).__name__)
                    raise
                finally:
                    write_json_atomic(root / LAST_RUN, self.summary.data)
        except RunLocked as e:
            self.summary.finish(e.exit_code, str(e))  # the holder's last-run.json is left alone
            raise
        return self.outputs

    def _publish(self, until: str | None) -> None:
        """`export.push_to`: after a whole run, publish the export (only changed files, none when
        unchanged; see export/hub.py). A failed push fails the run and says what to rerun."""
        repo_id = self.cfg.export.push_to if self.cfg.export is not None else None
        if repo_id is None or until is not None:
            return
        from instructforge.export.hub import push_export

        result = push_export(self.run_dir.root, repo_id)
        self.summary.data["push"] = {"repo_id": repo_id, "commit": result.commit,
                                     "changed": result.changed, "deleted": result.deleted}

    def write_config(self, path: Path) -> None:
        """The config this run resolved (file + --set overrides + defaults), to rerun or publish it."""
        text = yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(f"# resolved config of run {self.cfg.run.name}; relative paths are relative to "
                       f"{self.cfg.base_dir.resolve()}\n{text}", encoding="utf-8")
        os.replace(tmp, path)

    def _run_stages(self, until: str | None, force: bool, on_stage: StageCallback | None) -> None:
        for stage in STAGES:
            if until is None and not configured(self.cfg, stage):
                continue
            if until is not None and stage.name != until and not configured(self.cfg, stage):
                continue
            started = time.time()
            self.summary.running(stage.name)
            out, skipped = self.run_stage(stage, force=force and until in (None, stage.name))
            ups = [self.outputs[s.name].stats() for s in input_stages(self.cfg, stage)]
            rows_in = (sum(u.get("rows_out", 0) for u in ups) if ups
                       else out.stats().get("rows_out", 0) + out.stats().get("rows_rejected", 0))
            self.summary.stage(stage.name, out, skipped, rows_in, time.time() - started)
            if on_stage:
                on_stage(stage, out, skipped)
            if stage.name == until:
                break
        if self.incremental is not None and not self.incremental.changed:
            raise NothingNew(f"incremental run {self.cfg.run.name}: no new rows since version "
                             f"{latest_version(self.run_dir.finished(1, 'ingest'))} of the sources; nothing was done")

    def run_stage(self, stage: Stage, *, force: bool = False) -> tuple[StageOutput, bool]:
        inputs = [self.outputs[s.name] for s in input_stages(self.cfg, stage)]
        module = stage.load()
        section = getattr(self.cfg, stage.section)
        if section is None:  # asked for explicitly without a section: run with defaults (config untouched)
            section = type(self.cfg).model_fields[stage.section].annotation.__args__[0]()
        run = self.cfg.context()
        uses_engine = stage.uses_engine(section)
        fp_config: dict[str, Any] = {"section": section.output_settings(),
                                     "seed": self.cfg.run.seed, "on_error": self.cfg.run.on_error}
        if hasattr(module, "input_fingerprint"):  # files and models the stage reads besides its inputs
            fp_config["files"] = module.input_fingerprint(section, run)
        if uses_engine:
            fp_config["engine"] = engine_fingerprint(self.cfg.engine, run.resolve, run.cache_dir)
        code = code_digests(module.__name__, *(["instructforge.engines"] if uses_engine else []))
        schema: pa.Schema = getattr(module, "SCHEMA", Example.arrow_schema())
        runner = self.incremental.run_stage if self.incremental is not None else self.run_dir.run_stage
        out, skipped = runner(
            stage.index, stage.name, config=fp_config, inputs=inputs,
            code=code, fn=module.run, schema=schema, resumable=stage.resumable, force=force,
            section=section, run=run, engine_factory=self.engine if uses_engine else None)
        self.outputs[stage.name] = out
        return out, skipped
