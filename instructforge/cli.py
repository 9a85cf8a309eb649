"""`instructforge` command line: `run CONFIG` and one verb per stage.

Every verb exits 0 only on success; user errors print one line (add --debug for the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from instructforge.errors import ExitCode, InstructforgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build instruction-tuning datasets: ingest -> generate -> filter -> export -> train.")
console = Console(stderr=True)
state = {"debug": False}

ConfigArg = Annotated[Path, typer.Argument(help="Pipeline YAML config (see configs/demo.yaml).",
                                           exists=False, dir_okay=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config value, e.g. --set run.name=exp2 --set selfinstruct.target=100.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun the stage even if its cached output matches.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Bypass the persistent LLM request cache.")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    state["debug"] = debug


def _overrides(sets: list[str] | None) -> dict[str, Any]:
    out = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InstructforgeError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _run(config: Path, sets: list[str] | None, until: str | None, force: bool, no_cache: bool) -> None:
    from instructforge.config import load_config
    from instructforge.pipeline import Pipeline

    cfg = load_config(config, _overrides(sets))
    pipe = Pipeline(cfg, use_request_cache=not no_cache)
    rows = []

    def on_stage(stage, out, skipped):
        st = out.stats()
        rows.append((f"{stage.index:02d}-{stage.name}", "cached" if skipped else "ran",
                     st.get("rows_out", 0), st.get("rows_rejected", 0), st.get("seconds", 0)))
        console.print(f"[bold]{stage.name}[/]: {'cached, skipped' if skipped else 'done'} "
                      f"-> {out.path}")
        summary = getattr(stage.load(), "summary", None)
        if summary:
            for renderable in summary(out):
                console.print(renderable)

    try:
        pipe.run(until, force=force, on_stage=on_stage)
    finally:
        pipe.close()
    table = Table(title=f"run {cfg.run.name}")
    for col in ("stage", "status", "rows out", "rejected", "seconds"):
        table.add_column(col, justify="right" if col in ("rows out", "rejected", "seconds") else "left")
    for r in rows:
        table.add_row(r[0], r[1], f"{r[2]:,}", f"{r[3]:,}", f"{r[4]:.1f}")
    console.print(table)


@app.command()
def run(config: ConfigArg, set_: SetOpt = None, force: ForceOpt = False, no_cache: NoCacheOpt = False,
        incremental: Annotated[bool, typer.Option(
            "--incremental", help="Same as run.incremental: true: process only rows earlier runs of this run "
            "directory did not see; each stage grows by a new version. Exit code 5 when nothing is new.")] = False,
        ) -> None:
    """Run every configured stage in order. Reads CONFIG; writes runs/<run.name>/<NN-stage>/.

    A stage whose fingerprint (inputs + config + code) matches what is on disk is skipped, so
    rerunning is free and a crashed run resumes.
    """
    _run(config, [*(set_ or []), *(["run.incremental=true"] if incremental else [])], None, force, no_cache)


def _stage_command(name: str, doc: str) -> None:
    def command(config: ConfigArg, set_: SetOpt = None, force: ForceOpt = False,
                no_cache: NoCacheOpt = False) -> None:
        _run(config, set_, name, force, no_cache)

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
_stage_command("train", "Train a LoRA adapter (SFT, then DPO if asked) on the export (`train:`); write "
               "runs/<run>/05-train/.")


@app.command()
def push(run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/demo.")],
         repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo, e.g. me/my-data.")],
         private: Annotated[bool, typer.Option("--private")] = False,
         revision: Annotated[str | None, typer.Option("--revision")] = None,
         dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be uploaded.")] = False,
         ) -> None:
    """Publish a run's export folder to the Hugging Face Hub (token from HF_TOKEN only)."""
    from instructforge.export.hub import push_export

    push_export(run_dir, repo_id, private=private, revision=revision, dry_run=dry_run, console=console)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/demo.")]) -> None:
    """Write runs/<run>/report.html: filter funnel, lengths, similarity, root verbs, examples."""
    from instructforge.report import write_report

    path = write_report(run_dir)
    console.print(f"report: {path}")


def main() -> None:
    # Torch's OpenMP threads busy-wait; on small shared machines that is 10-60x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        app()
    except InstructforgeError as e:
        if state["debug"]:
            raise
        console.print(f"[red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished shards are kept; rerun to resume")
        sys.exit(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    main()
