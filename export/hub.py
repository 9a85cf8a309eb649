"""The Hub layout on disk, and publishing it.

    hub/README.md                                      card (YAML `configs` map splits to files)
    hub/dataset_info.json                              LLaMA-Factory stanzas (when alpaca/sharegpt/ranking)
    hub/data/<config>/<split>-0000i-of-0000n.parquet   one folder per config, empty splits omitted

`push_export` uploads that folder in one commit: every local file is added, and remote files under
`data/` that the export no longer has are deleted, so re-pushing replaces splits idempotently.
The token comes from `HF_TOKEN` only and is passed to the client, never printed or stored.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from rich.console import Console
from rich.table import Table

from instructforge.errors import InstructforgeError
from instructforge.export.card import parse_card
from instructforge.export.splits import SPLITS
from instructforge.runs import StageOutput, write_table_atomic

EXPORT_STAGE = "04-export"


def write_config(hub: Path, config: str, splits: dict[str, pa.Table], shard_rows: int) -> dict[str, list[str]]:
    """Write one config's splits as numbered shards. Returns split -> shard paths relative to `hub`."""
    files: dict[str, list[str]] = {}
    for split in SPLITS:
        table = splits.get(split)
        if table is None or table.num_rows == 0:
            continue
        n = -(-table.num_rows // shard_rows)
        files[split] = []
        for i in range(n):
            rel = f"data/{config}/{split}-{i:05d}-of-{n:05d}.parquet"
            write_table_atomic(hub / rel, table.slice(i * shard_rows, shard_rows))
            files[split].append(rel)
    return files


def hub_files(hub: Path) -> list[str]:
    """Every file of the export folder, relative, in upload order (card last)."""
    files = sorted(p.relative_to(hub).as_posix() for p in hub.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    return sorted(files, key=lambda f: f == "README.md")


def _export_folder(run_dir: Path) -> tuple[Path, StageOutput]:
    stage = run_dir / EXPORT_STAGE
    if not (stage / "manifest.json").exists():
        raise InstructforgeError(f"{run_dir}: no finished export (run `instructforge export CONFIG` first)")
    out = StageOutput.load(stage)
    hub = stage / "hub"
    card = hub / "README.md"
    if not card.exists():
        raise InstructforgeError(f"{hub}: no README.md dataset card")
    try:
        meta, _ = parse_card(card.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InstructforgeError(f"{card}: {e}") from None
    for config in meta.get("configs", []):
        for entry in config["data_files"]:
            if not list(hub.glob(entry["path"])):
                raise InstructforgeError(f"{card}: config {config['config_name']} split {entry['split']}: "
                                         f"no files match {entry['path']}")
    return hub, out


def push_export(run_dir: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                dry_run: bool = False, console: Console | None = None) -> list:
    """Upload `<run_dir>/04-export/hub` to the dataset repo `repo_id` in one commit.

    Returns the commit operations (with `dry_run`, the additions only: nothing is contacted).
    """
    console = console or Console(stderr=True)
    hub, out = _export_folder(Path(run_dir))
    files = hub_files(hub)
    adds = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(hub / f)) for f in files]
    message = f"instructforge export of run {Path(run_dir).name} (fingerprint {out.fingerprint})"
    target = f"{repo_id}@{revision}" if revision else repo_id
    if dry_run:
        table = Table(title=f"dry run: would upload to {target} (dataset, {'private' if private else 'public'})")
        table.add_column("file")
        table.add_column("bytes", justify="right")
        for f in files:
            table.add_row(f, f"{(hub / f).stat().st_size:,}")
        console.print(table)
        console.print(f"commit message: {message}")
        console.print("remote files under data/ that this export lacks would be deleted")
        return adds

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise InstructforgeError("HF_TOKEN is not set: export a Hugging Face write token as HF_TOKEN")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    remote = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    stale = sorted(f for f in remote if f.startswith("data/") and f not in set(files))
    operations = [CommitOperationDelete(path_in_repo=f) for f in stale] + adds
    info = api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset",
                             revision=revision)
    console.print(f"pushed {len(adds)} files ({len(stale)} stale removed) to {target}: "
                  f"{getattr(info, 'commit_url', '')}")
    return operations
