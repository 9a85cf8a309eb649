"""Hub push: dry run, the operations committed, idempotent re-push, token handling.

Only the HTTP calls of `HfApi` are replaced; everything up to them (the folder, the card, the
operations and their files) is real.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from rich.console import Console
from typer.testing import CliRunner

from instructforge.cli import app
from instructforge.config import parse_config
from instructforge.errors import InstructforgeError
from instructforge.export import stage as export_stage
from instructforge.export.hub import push_export
from instructforge.records import Example
from instructforge.runs import RunDir

TOKEN = "hf_test_secret_token_value"


def _make_run(root: Path, n: int, formats: list[str]) -> Path:
    section = {"formats": formats, "chat_template": "chatml"}
    cfg = parse_config({"run": {"name": "demo", "root": str(root)}, "export": section})
    run = RunDir(root / "demo")
    rows = [Example(instruction=f"Count to {i}.", output=" ".join(map(str, range(1, i + 1))), task="count",
                    source="seeds:s.jsonl").model_dump() for i in range(1, n + 1)]
    ingest, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="t", fn=lambda ctx: ctx.write(rows))
    run.run_stage(4, "export", config=section, inputs=[ingest], code="t", fn=export_stage.run,
                  section=cfg.export, run=cfg.context())
    return run.root


class FakeHub:
    """Records the calls `push_export` makes; holds the remote file list between pushes."""

    def __init__(self, monkeypatch):
        self.remote: set[str] = {".gitattributes"}
        self.calls: list[tuple] = []
        hub = self

        def create_repo(api, repo_id, **kw):
            hub.calls.append(("create_repo", repo_id, kw, api.token))

        def create_branch(api, repo_id, **kw):
            hub.calls.append(("create_branch", repo_id, kw))

        def list_repo_files(api, repo_id, **kw):
            hub.calls.append(("list_repo_files", repo_id, kw))
            return sorted(hub.remote)

        def create_commit(api, repo_id, operations, **kw):
            ops = list(operations)
            hub.calls.append(("create_commit", repo_id, ops, kw))
            for op in ops:
                if isinstance(op, CommitOperationDelete):
                    hub.remote.discard(op.path_in_repo)
                else:
                    hub.remote.add(op.path_in_repo)

        for name, fn in (("create_repo", create_repo), ("create_branch", create_branch),
                         ("list_repo_files", list_repo_files), ("create_commit", create_commit)):
            monkeypatch.setattr(HfApi, name, fn)

    def commits(self) -> list[tuple]:
        return [c for c in self.calls if c[0] == "create_commit"]


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200), buf


def test_dry_run_lists_every_file_and_contacts_nothing(tmp_path, monkeypatch):
    run = _make_run(tmp_path, 30, ["messages", "alpaca"])
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for name in ("create_repo", "create_commit", "list_repo_files", "create_branch"):
        monkeypatch.setattr(HfApi, name, lambda *a, **k: pytest.fail("dry run made a Hub call"))
    console, buf = _console()
    ops = push_export(run, "me/data", private=True, revision=None, dry_run=True, console=console)
    hub = run / "04-export" / "hub"
    local = sorted(p.relative_to(hub).as_posix() for p in hub.rglob("*") if p.is_file())
    assert all(isinstance(op, CommitOperationAdd) for op in ops)
    assert sorted(op.path_in_repo for op in ops) == local
    assert ops[-1].path_in_repo == "README.md"
    assert {"README.md", "dataset_info.json", "data/sft/train-00000-of-00001.parquet"} <= set(local)
    out = buf.getvalue()
    assert all(f in out for f in local) and "private" in out


def test_push_commits_the_folder_and_repush_is_idempotent(tmp_path, monkeypatch):
    run = _make_run(tmp_path, 30, ["messages", "alpaca"])
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub = FakeHub(monkeypatch)
    hub.remote |= {"data/sft/train-00000-of-00002.parquet", "data/old_config/train-00000-of-00001.parquet",
                   "notes.txt"}
    console, buf = _console()
    ops = push_export(run, "me/data", private=True, revision="v1", dry_run=False, console=console)

    (_, repo, kw, token), = [c for c in hub.calls if c[0] == "create_repo"]
    assert (repo, kw, token) == ("me/data", {"repo_type": "dataset", "private": True, "exist_ok": True}, TOKEN)
    assert ("create_branch", "me/data", {"branch": "v1", "repo_type": "dataset", "exist_ok": True}) in hub.calls
    (_, _, committed, kw), = hub.commits()
    assert committed == ops
    deleted = sorted(op.path_in_repo for op in ops if isinstance(op, CommitOperationDelete))
    # stale data files go; files outside data/ are the repo owner's and stay
    assert deleted == ["data/old_config/train-00000-of-00001.parquet", "data/sft/train-00000-of-00002.parquet"]
    fingerprint = (run / "04-export" / "manifest.json").read_text().split('"fingerprint": "')[1][:24]
    assert kw["repo_type"] == "dataset" and kw["revision"] == "v1" and fingerprint in kw["commit_message"]
    added = {op.path_in_repo: op for op in ops if isinstance(op, CommitOperationAdd)}
    folder = run / "04-export" / "hub"
    assert all(Path(op.path_or_fileobj).read_bytes() == (folder / p).read_bytes() for p, op in added.items())
    assert TOKEN not in buf.getvalue()

    ops2 = push_export(run, "me/data", private=True, revision="v1", dry_run=False, console=_console()[0])
    assert not [op for op in ops2 if isinstance(op, CommitOperationDelete)]
    assert sorted(op.path_in_repo for op in ops2) == sorted(added)
    assert hub.remote == set(added) | {".gitattributes", "notes.txt"}


def test_repush_after_reexport_replaces_the_split(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub = FakeHub(monkeypatch)
    run = _make_run(tmp_path / "a", 30, ["messages", "alpaca"])
    push_export(run, "me/data", dry_run=False, console=_console()[0])
    first = set(hub.remote)
    run = _make_run(tmp_path / "b", 30, ["messages"])  # the alpaca config is gone from the export
    ops = push_export(run, "me/data", dry_run=False, console=_console()[0])
    deleted = {op.path_in_repo for op in ops if isinstance(op, CommitOperationDelete)}
    assert deleted == {f for f in first if f.startswith("data/sft_alpaca/")} and deleted
    assert not any(f.startswith("data/sft_alpaca/") for f in hub.remote)


def test_push_needs_hf_token_and_a_finished_export(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    run = _make_run(tmp_path, 5, ["messages"])
    with pytest.raises(InstructforgeError, match="HF_TOKEN"):
        push_export(run, "me/data", dry_run=False, console=_console()[0])
    with pytest.raises(InstructforgeError, match="no finished export"):
        push_export(tmp_path / "nope", "me/data", dry_run=True, console=_console()[0])
    card = run / "04-export" / "hub" / "README.md"
    card.write_text(card.read_text().replace("data/sft/train-*", "data/sft/missing-*"))
    with pytest.raises(InstructforgeError, match="no files match"):
        push_export(run, "me/data", dry_run=True, console=_console()[0])


def test_cli_push_dry_run(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    run = _make_run(tmp_path, 5, ["messages"])
    result = CliRunner().invoke(app, ["push", str(run), "--repo-id", "me/data", "--dry-run"])
    assert result.exit_code == 0, result.output
