"""`instructforge` command line: `run CONFIG` and one verb per stage.

Every verb exits 0 only on success; user errors print one line (add --debug for the traceback).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from instructforge.errors import ConfigError, ExitCode, InputError, InstructforgeError, storage_error
from instructforge.logs import LogFormat, setup_logging

EXIT_CODES = """\b
Exit codes (README "Exit codes"):
  0    success
  1    unexpected error (a bug; --debug shows the traceback)
  2    bad config file, option or usage
  3    bad input data (file, line and field named)
  4    the LLM engine failed after its retries (a rerun resumes)
  5    incremental run: nothing new in the sources, nothing done
  74   cannot write: disk full, read-only or no permission (free space, rerun to resume)
  75   another run holds the run directory (try again later)
  130  interrupted (SIGINT/SIGTERM; a rerun resumes)
Every run writes runs/<run>/last-run.json: status, exit code, per-stage rows and seconds."""

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, epilog=EXIT_CODES,
                  help="Build instruction-tuning datasets: ingest -> generate -> filter -> export -> train.")
console = Console(stderr=True)
log = logging.getLogger("instructforge.cli")
state = {"debug": False}

ConfigArg = Annotated[Path, typer.Argument(help="Pipeline YAML config (see configs/demo.yaml).",
                                           exists=False, dir_okay=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config value, e.g. --set run.name=exp2 --set selfinstruct.target=100.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun the stage even if its cached output matches.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Bypass the persistent LLM request cache.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the run summary (as in runs/<run>/last-run.json) "
                                       "on stdout; messages stay on stderr.")]
LogFormatOpt = Annotated[LogFormat, typer.Option("--log-format", help="text (for people) or json (one JSON "
                                                 "object per line on stderr, for log collectors).")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    state["debug"] = debug


def _overrides(sets: list[str] | None) -> dict[str, Any]:
    from instructforge.ingest.readers import parse_yaml

    out = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:  # the config file's YAML rules: a duplicate key is an error here too
            out[key.strip()] = parse_yaml(value, f"--set {item!r}")
        except InputError as e:
            raise ConfigError(str(e)) from None
    return out


def _run(config: Path, sets: list[str] | None, until: str | None, force: bool, no_cache: bool,
         json_out: bool = False, log_format: LogFormat = "text") -> None:
    from instructforge.config import load_config
    from instructforge.pipeline import Pipeline
    from instructforge.summary import STATUS, exit_code_for

    setup_logging(log_format, console)
    pipe = None

    def on_stage(stage, out, skipped):
        st = out.stats()
        log.info("%s: %s -> %s", stage.name, "cached, skipped" if skipped else "done", out.path,
                 extra={"event": "stage_done", "stage": stage.name, "cached": skipped,
                        "rows_out": st.get("rows_out", 0), "rows_rejected": st.get("rows_rejected", 0)})
        summary = getattr(stage.load(), "summary", None)
        if summary and log_format == "text":
            for renderable in summary(out):
                console.print(renderable)

    summary: dict[str, Any] | None = None
    try:
        with _stdout_to_stderr() if json_out else contextlib.nullcontext():
            try:
                pipe = Pipeline(load_config(config, _overrides(sets)), use_request_cache=not no_cache)
                try:
                    pipe.run(until, force=force, on_stage=on_stage)
                finally:
                    pipe.close()
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    log.warning("interrupted: finished shards are kept; rerun to resume",
                                extra={"event": "interrupted"})
                code = exit_code_for(e)  # replaced by the run's own summary when it got that far
                summary = {"status": STATUS.get(code, "failed"), "exit_code": code, "error": str(e)}
                raise
    finally:
        if pipe is not None and pipe.summary is not None:
            summary = pipe.summary.data
            if log_format == "text" and summary["stages"]:
                console.print(_table(summary))
        if json_out and summary is not None:
            print(json.dumps(summary, indent=2, default=str), flush=True)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for the `--json` summary alone: whatever else writes to it during the run (a
    library's logger, a worker process) goes to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"run {summary['run']}: {summary['status']}")
    for col in ("stage", "status", "rows in", "rows out", "rejected", "seconds"):
        table.add_column(col, justify="left" if col in ("stage", "status") else "right")
    for st in summary["stages"]:
        table.add_row(st["stage"], st["status"], f"{st['rows_in']:,}", f"{st['rows_out']:,}",
                      f"{st['rows_rejected']:,}", f"{st['seconds']:.1f}")
    return table


@app.command()
def run(config: ConfigArg, set_: SetOpt = None, force: ForceOpt = False, no_cache: NoCacheOpt = False,
        json_out: JsonOpt = False, log_format: LogFormatOpt = "text",
        incremental: Annotated[bool, typer.Option(
            "--incremental", help="Same as run.incremental: true: process only rows earlier runs of this run "
            "directory did not see; each stage grows by a new version. Exit code 5 when nothing is new.")] = False,
        ) -> None:
    """Run every configured stage in order. Reads CONFIG; writes runs/<run.name>/<NN-stage>/.

    A stage whose fingerprint (inputs + config + code) matches what is on disk is skipped, so
    rerunning is free and a crashed run resumes.
    """
    _run(config, [*(set_ or []), *(["run.incremental=true"] if incremental else [])], None, force, no_cache,
         json_out, log_format)


def _stage_command(name: str, doc: str) -> None:
    def command(config: ConfigArg, set_: SetOpt = None, force: ForceOpt = False,
                no_cache: NoCacheOpt = False, json_out: JsonOpt = False, log_format: LogFormatOpt = "text") -> None:
        _run(config, set_, name, force, no_cache, json_out, log_format)

    command.__doc__ = doc
    app.command(name=name)(command)


_stage_command("ingest", "Read the task collections, seeds and files in `ingest:`; write Example rows "
               "to runs/<run>/01-ingest/ (data/, rejected/, stats.json).")
_stage_command("generate", "Expand the ingested seed tasks with Self-Instruct (`selfinstruct:`) through "
               "the engine; write runs/<run>/02-generate/. Resumes after a crash.")
_stage_command("filter", "Apply `filters:` (dedup, novelty, heuristics, decontamination, judge) to the "
               "ingested and generated rows; write kept rows and rejected rows with reasons to 03-filter/.")
_stage_command("export", "Turn filtered rows into SFT and preference datasets in the Hub layout, with a "
               "dataset card (`export:`); write runs/<run>/04-export/.")
_stage_command("train", "Train a LoRA/QLoRA adapter (SFT, DPO, both, or a reward model) on the export and "
               "evaluate it against the base model (`train:`); write runs/<run>/05-train/.")


@app.command()
def push(run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/demo.")],
         repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo, e.g. me/my-data.")],
         private: Annotated[bool, typer.Option("--private")] = False,
         revision: Annotated[str | None, typer.Option("--revision")] = None,
         dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be uploaded.")] = False,
         ) -> None:
    """Publish a run's export (runs/<run>/04-export/hub/, its config, the card with the repo id) to a Hub
    dataset repo. Only files that differ from the remote are committed, in one commit checked against
    the branch head (a concurrent writer is refused); nothing when nothing changed. Token: HF_TOKEN or
    `hf auth login`; it is never printed or stored. Endpoint: HF_ENDPOINT. Refused (exit 75) while a
    run holds the run directory, so a half-replaced export is never published."""
    from instructforge.export.hub import push_export
    from instructforge.lock import RunLock

    with RunLock(run_dir) if run_dir.is_dir() else contextlib.nullcontext():
        push_export(run_dir, repo_id, private=private, revision=revision, dry_run=dry_run, console=console)


@app.command()
def verify(run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/demo.")]) -> None:
    """Check every stage of a run directory against its manifest: each shard's size, checksum and row
    count, and that each stage was built from the stage outputs now on disk. Exit 0 if sound, else
    3 with one line per problem."""
    from instructforge.integrity import verify_run

    if not run_dir.is_dir():
        raise InputError("not a run directory", file=str(run_dir))
    report = verify_run(run_dir)
    for stage, problems in report.items():
        print(f"{stage}: {'ok' if not problems else problems[0]}")
        for problem in problems[1:]:
            print(f"{stage}: {problem}")
    if not report or any(report.values()):
        raise typer.Exit(ExitCode.INPUT)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/demo.")]) -> None:
    """Write runs/<run>/report.html, one self-contained file: funnel over all stages, tasks, sources, splits,
    lengths, similarity, verb-noun diversity, generation, preference, contamination, rejected rows, training."""
    from instructforge.report import write_report

    path = write_report(run_dir)
    console.print(f"report: {path.resolve()}")


annotate_app = typer.Typer(no_args_is_help=True, help="Human rankings: send sampled answers to annotators, "
                           "read their rankings back (then export.preference.judge: human).")
app.add_typer(annotate_app, name="annotate")


@annotate_app.command("export")
def annotate_export(
        run_dir: Annotated[Path, typer.Argument(help="A run directory whose export sampled preference answers.")],
        format_: Annotated[str, typer.Option("--format", help="jsonl | csv | label-studio (tasks JSON + "
                                             "labeling config XML).")] = "jsonl",
        out: Annotated[Path | None, typer.Option("--out", help="Output file (default "
                                                  "RUN/annotations/to-rank.<ext>).")] = None) -> None:
    """Write every prompt the export sampled answers for, with its k candidates, for people to rank."""
    from instructforge.export.annotation import annotate_export as write

    files, prompts = write(run_dir, format_, out)
    console.print(f"{prompts} prompts to rank: {', '.join(map(str, files))}")


@annotate_app.command("import")
def annotate_import(
        run_dir: Annotated[Path, typer.Argument(help="The run directory the annotation file came from.")],
        file: Annotated[Path, typer.Argument(help="The filled file: .jsonl, .csv, or Label Studio's JSON export.")],
) -> None:
    """Check people's rankings (errors name the row) and write RUN/annotations/<stem>.rankings.jsonl."""
    from instructforge.export.annotation import annotate_import as read

    path, rankings = read(run_dir, file)
    annotators = sorted({r.annotator for r in rankings})
    console.print(f"{len(rankings)} rankings from {len(annotators)} annotator(s) -> {path}\n"
                  f"use them: --set export.preference.judge=human --set export.preference.rankings={path.resolve()}")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (systemd stop, kill) ends a run like Ctrl-C: summary written, exit 130


def main() -> None:
    # Torch's OpenMP threads busy-wait; on small shared machines that is 10-60x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    signal.signal(signal.SIGTERM, _terminate)
    setup_logging("text", console)
    try:
        app()  # typer turns KeyboardInterrupt into exit code 130 (ExitCode.INTERRUPTED)
    except InstructforgeError as e:
        if state["debug"]:
            raise
        quiet = e.exit_code == ExitCode.NOTHING_NEW  # not a failure: no "error:" for a scheduler's log
        log.log(logging.INFO if quiet else logging.ERROR, "%s", e,
                extra={"event": "nothing_new" if quiet else "error", "exit_code": e.exit_code})
        sys.exit(e.exit_code)
    except Exception as e:  # a full or read-only disk met where no write site named the file
        err = storage_error(e)
        if err is None or state["debug"]:
            raise
        log.error("%s", err, extra={"event": "error", "exit_code": err.exit_code})
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
