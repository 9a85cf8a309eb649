"""Hub push against a local Hub stand-in with real commits: nothing pushed when unchanged, only changed
files otherwise, a concurrent writer detected, 429/5xx retried, the token never written anywhere.

The stand-in (`LocalHub`) is a small HTTP server implementing the endpoints the `huggingface_hub`
client calls for a push (create repo and branch, repo info, recursive tree with LFS metadata,
preupload, ndjson commit with `parentCommit`), keeping every commit's files in memory. The client
and our code run unchanged against it through `endpoint=`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import yaml
from huggingface_hub.utils.sha import git_hash
from rich.console import Console

from instructforge.config import parse_config
from instructforge.errors import InstructforgeError
from instructforge.export import hub as hub_module
from instructforge.export import stage as export_stage
from instructforge.export.hub import push_export
from instructforge.records import Example
from instructforge.runs import RunDir

TOKEN = "hf_test_secret_token_value"
REPO = "me/data"


class LocalHub(ThreadingHTTPServer):
    """Repos as {branch: head} and {commit: {path: bytes}}; `fail` queues error answers per endpoint;
    `before_commit` runs just before a commit is applied (a concurrent writer)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.branches: dict[str, str] = {}
        self.commits: dict[str, dict] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, authorization
        self.fail: dict[str, list[int]] = {}
        self.parents: list[str | None] = []  # the parentCommit each commit request named
        self.before_commit = None
        self.lock = threading.Lock()

    def new_commit(self, parent: str | None, files: dict[str, bytes], message: str) -> str:
        sha = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
        self.commits[sha] = {"parent": parent, "files": files, "message": message}
        return sha

    def files(self, revision: str = "main") -> dict[str, bytes]:
        return self.commits[self.branches.get(revision, revision)]["files"]

    def history(self, branch: str = "main") -> list[str]:
        """Commit messages, newest first."""
        out, sha = [], self.branches[branch]
        while sha:
            out.append(self.commits[sha]["message"])
            sha = self.commits[sha]["parent"]
        return out


class _Handler(BaseHTTPRequestHandler):
    server: LocalHub

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        hub = self.server
        url = urlparse(self.path)
        path = unquote(url.path)
        hub.requests.append((method, path, self.headers.get("Authorization")))
        body = self._body() if method == "POST" else b""
        parts = path.split("/")  # /api/datasets/<ns>/<name>/<endpoint>/<revision>
        endpoint = parts[5] if path.startswith("/api/datasets/") and len(parts) > 5 else path
        queued = hub.fail.get(endpoint)
        if queued:
            self._send(queued.pop(0), {"error": "injected failure"})
            return
        if method == "POST" and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, {"error": "Invalid credentials"})
            return
        with hub.lock:
            if path == "/api/repos/create":
                self._create(json.loads(body))
            elif path == "/api/validate-yaml":
                self._validate(json.loads(body)["content"])
            elif path.startswith(f"/api/datasets/{REPO}"):
                self._repo(method, path[len(f"/api/datasets/{REPO}"):], parse_qs(url.query), body)
            else:
                self._send(404, {"error": f"no route {path}"})

    def _create(self, payload: dict) -> None:
        hub = self.server
        repo = f"{payload['organization']}/{payload['name']}"
        assert repo == REPO and payload["type"] == "dataset"
        if "main" in hub.branches:
            self._send(409, {"error": "You already created this dataset repo", "url": f"{hub.url}/datasets/{repo}"})
            return
        hub.branches["main"] = hub.new_commit(None, {".gitattributes": b"*.parquet filter=lfs\n"}, "initial commit")
        self._send(200, {"url": f"{hub.url}/datasets/{repo}"})

    def _validate(self, card: str) -> None:
        try:
            meta = yaml.safe_load(card.split("---\n")[1])
            assert isinstance(meta, dict) and meta.get("configs")
        except Exception as e:  # noqa: BLE001 - any problem is the card's
            self._send(400, {"errors": [{"message": f"invalid card metadata: {e}"}]})
            return
        self._send(200, {"errors": [], "warnings": []})

    def _repo(self, method: str, rest: str, query: dict, body: bytes) -> None:
        hub = self.server
        if "main" not in hub.branches:
            self._send(404, {"error": "Repository not found"})
            return
        parts = rest.strip("/").split("/", 2)
        kind, rev = (parts + ["", ""])[:2]
        if method == "GET" and kind in ("", "revision"):
            sha = hub.branches.get(rev or "main", rev or "main")
            if sha not in hub.commits:
                self._send(404, {"error": "Revision not found"})
                return
            self._send(200, {"id": REPO, "sha": sha, "private": False,
                             "siblings": [{"rfilename": p} for p in sorted(hub.commits[sha]["files"])]})
        elif method == "GET" and kind == "tree":
            sha = hub.branches.get(rev, rev)
            self._send(200, [_entry(p, c) for p, c in sorted(hub.commits[sha]["files"].items())])
        elif method == "POST" and kind == "preupload":
            files = hub.files(rev)
            self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                        "oid": git_hash(files[f["path"]]) if f["path"] in files else None}
                                       for f in json.loads(body)["files"]]})
        elif method == "POST" and kind == "branch":
            if rev in hub.branches:
                self._send(409, {"error": "Branch already exists"})
                return
            hub.branches[rev] = hub.branches["main"]
            self._send(200, {})
        elif method == "POST" and kind == "commit":
            self._commit(rev, [json.loads(line) for line in body.splitlines() if line.strip()])
        else:
            self._send(404, {"error": f"no route {rest}"})

    def _commit(self, branch: str, items: list[dict]) -> None:
        hub = self.server
        if hub.before_commit:
            writer, hub.before_commit = hub.before_commit, None
            writer()
        header = items[0]["value"]
        hub.parents.append(header.get("parentCommit"))
        head = hub.branches[branch]
        if header.get("parentCommit") and header["parentCommit"] != head:
            self._send(412, {"error": "A commit has happened since. Please refresh and try again."})
            return
        files = dict(hub.commits[head]["files"])
        for item in items[1:]:
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                del files[item["value"]["path"]]
            else:
                raise AssertionError(f"unexpected commit item {item['key']}")
        hub.branches[branch] = sha = hub.new_commit(head, files, header["summary"])
        self._send(200, {"commitUrl": f"{hub.url}/datasets/{REPO}/commit/{sha}", "commitOid": sha,
                         "success": True})


def _entry(path: str, content: bytes) -> dict:
    """A tree entry as the Hub lists it: Parquet files are LFS pointers with the content's sha256."""
    entry = {"type": "file", "path": path, "size": len(content), "oid": git_hash(content)}
    if path.endswith(".parquet"):
        sha = hashlib.sha256(content).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(content)}\n".encode()
        entry |= {"oid": git_hash(pointer), "lfs": {"oid": sha, "size": len(content), "pointerSize": len(pointer)}}
    return entry


@pytest.fixture
def local_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(hub_module, "BACKOFF_S", 0.01)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # the tests run offline; this is local
    server = LocalHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def make_run(root: Path, n: int, formats: list[str], name: str = "demo") -> Path:
    section = {"formats": formats, "chat_template": "chatml"}
    cfg = parse_config({"run": {"name": name, "root": str(root)}, "export": section})
    run = RunDir(root / name)
    rows = [Example(instruction=f"Count to {i}.", output=" ".join(map(str, range(1, i + 1))), task="count",
                    source="seeds:s.jsonl").model_dump() for i in range(1, n + 1)]
    ingest, _ = run.run_stage(1, "ingest", config={"n": n}, inputs=[], code="t", fn=lambda ctx: ctx.write(rows))
    run.run_stage(4, "export", config=section, inputs=[ingest], code="t", fn=export_stage.run,
                  section=cfg.export, run=cfg.context())
    (run.root / "instructforge.yaml").write_text(f"run:\n  name: {name}\nexport: {json.dumps(section)}\n")
    return run.root


def push(run: Path, hub: LocalHub, **kw):
    buf = io.StringIO()
    result = push_export(run, REPO, endpoint=hub.url, console=Console(file=buf, width=300), **kw)
    return result, buf.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_dry_run_lists_every_file_and_contacts_nothing(tmp_path, local_hub):
    run = make_run(tmp_path, 30, ["messages", "alpaca"])
    result, out = push(run, local_hub, dry_run=True, private=True)
    hub = run / "04-export" / "hub"
    local = sorted(p.relative_to(hub).as_posix() for p in hub.rglob("*") if p.is_file())
    assert sorted(result.changed) == sorted([*local, "instructforge.yaml"])
    assert result.changed[-1] == "README.md"
    assert all(f in out for f in local) and "private" in out
    assert local_hub.requests == []


def test_push_then_unchanged_push_makes_no_commit(tmp_path, local_hub):
    run = make_run(tmp_path, 30, ["messages", "alpaca"])
    result, out = push(run, local_hub)
    remote = local_hub.files()
    hub = run / "04-export" / "hub"
    for rel, content in snapshot(hub).items():
        if rel != "README.md":
            assert remote[rel] == content, rel
    assert remote["instructforge.yaml"] == (run / "instructforge.yaml").read_bytes()
    assert f'load_dataset("{REPO}"' in remote["README.md"].decode()
    assert REPO not in (hub / "README.md").read_text()  # the local card is left as the export wrote it
    fingerprint = json.loads((run / "04-export" / "manifest.json").read_text())["fingerprint"]
    assert fingerprint in local_hub.history()[0] and len(local_hub.history()) == 2
    assert result.commit == local_hub.branches["main"]
    # every write carried the token, and it appears in nothing we printed
    assert all(auth == f"Bearer {TOKEN}" for m, _, auth in local_hub.requests if m == "POST")
    assert TOKEN not in out

    head, seen = local_hub.branches["main"], len(local_hub.requests)
    result, out = push(run, local_hub)
    assert local_hub.branches["main"] == head and len(local_hub.history()) == 2
    assert result.commit is None and result.changed == [] and "nothing pushed" in out
    assert not any("/commit/" in path for _, path, _ in local_hub.requests[seen:])


def test_changed_export_pushes_only_changed_files_and_removes_stale_data(tmp_path, local_hub):
    run = make_run(tmp_path / "a", 30, ["messages", "alpaca"])
    push(run, local_hub)
    first = dict(local_hub.files())
    # another export of the same run name: fewer rows (messages + alpaca change), no alpaca config
    run = make_run(tmp_path / "b", 20, ["messages"])
    result, _ = push(run, local_hub)
    remote = local_hub.files()
    assert not any(p.startswith("data/sft_alpaca/") for p in remote)
    assert {p for p in first if p.startswith("data/sft_alpaca/")} <= set(result.deleted)
    assert set(result.deleted) == {p for p in first if p.startswith("data/")} - set(remote)
    assert "instructforge.yaml" in result.changed and ".gitattributes" in remote
    assert all(remote[p] == (run / "04-export" / "hub" / p).read_bytes() for p in result.changed
               if p.startswith("data/"))
    assert len(local_hub.history()) == 3  # one commit for the whole change
    # a third push with one data file edited sends just that file (and nothing else)
    shard = next((run / "04-export" / "hub" / "data").rglob("*.parquet"))
    rel = shard.relative_to(run / "04-export" / "hub").as_posix()
    shard.write_bytes(shard.read_bytes() + b"\0")
    result, _ = push(run, local_hub)
    assert result.changed == [rel] and result.deleted == []


def test_concurrent_writer_is_detected_and_nothing_is_overwritten(tmp_path, local_hub):
    run = make_run(tmp_path, 30, ["messages"])
    push(run, local_hub)
    run = make_run(tmp_path / "b", 25, ["messages"])
    before = snapshot(run)

    def other_writer():
        head = local_hub.branches["main"]
        files = {**local_hub.files(), "notes.md": b"someone else"}
        local_hub.branches["main"] = local_hub.new_commit(head, files, "concurrent edit")

    local_hub.before_commit = other_writer
    with pytest.raises(InstructforgeError, match="someone else committed.*nothing was overwritten.*rerun "
                                                 "`instructforge push"):
        push(run, local_hub)
    assert local_hub.history()[0] == "concurrent edit"
    assert local_hub.files()["notes.md"] == b"someone else"
    assert snapshot(run) == before
    result, _ = push(run, local_hub)  # the rerun the message asks for
    assert result.commit and local_hub.files()["notes.md"] == b"someone else"


def test_rate_limits_and_server_errors_are_retried(tmp_path, local_hub):
    run = make_run(tmp_path, 30, ["messages"])
    local_hub.fail = {"tree": [429], "commit": [503, 502]}
    result, out = push(run, local_hub)
    assert result.commit == local_hub.branches["main"] and len(local_hub.history()) == 2
    assert out.count("retrying") == 2  # the commit's 5xx by us; the client retries the tree's 429 itself
    assert sum("/commit/" in path for _, path, _ in local_hub.requests) == 3
    local_hub.fail = {"commit": [500] * 10}
    run = make_run(tmp_path / "b", 20, ["messages"])
    before = snapshot(run)
    with pytest.raises(InstructforgeError, match=r"HTTP 500.*run directory is unchanged; rerun `instructforge push"):
        push(run, local_hub)
    assert snapshot(run) == before and len(local_hub.history()) == 2


def test_large_push_goes_through_the_client_folder_upload(tmp_path, local_hub, monkeypatch):
    monkeypatch.setattr(hub_module, "LARGE_FILES", 2)
    run = make_run(tmp_path, 300, ["messages", "alpaca", "sharegpt"])
    push(make_run(tmp_path / "first", 5, ["messages"]), local_hub)
    head = local_hub.branches["main"]
    result, _ = push(run, local_hub)
    assert local_hub.parents[1] == head  # the batched upload's first commit is checked against the head
    remote = local_hub.files()
    assert len(result.changed) > 2
    assert all(remote[p] == (run / "04-export" / "hub" / p).read_bytes() for p in result.changed
               if p not in ("README.md", "instructforge.yaml"))
    assert REPO in remote["README.md"].decode()
    assert not list(run.glob(".push-*"))  # the scratch folder is gone
    result, out = push(run, local_hub)
    assert result.commit is None and "nothing pushed" in out


def test_push_needs_a_token_and_a_finished_export(tmp_path, local_hub, monkeypatch):
    run = make_run(tmp_path, 5, ["messages"])
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(InstructforgeError, match="no Hugging Face token"):
        push(run, local_hub)
    with pytest.raises(InstructforgeError, match="no finished export"):
        push(tmp_path / "nope", local_hub, dry_run=True)
    card = run / "04-export" / "hub" / "README.md"
    card.write_text(card.read_text().replace("data/sft/train-*", "data/sft/missing-*"))
    with pytest.raises(InstructforgeError, match="no files match"):
        push(run, local_hub, dry_run=True)


def test_run_with_push_to_publishes_and_the_token_is_written_nowhere(tmp_path, local_hub):
    """`run` with export.push_to through the CLI (JSON logs): the export lands in the repo, the summary
    names the commit, and the token appears in no file of the run directory and no log line."""
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"instruction": f"Name {i} fruits that are red or yellow.",
                                          "output": ", ".join(["apple", "banana", "cherry"][: 1 + i % 3])}) + "\n"
                              for i in range(12)))
    cfg = tmp_path / "pub.yaml"
    cfg.write_text(yaml.safe_dump({
        "run": {"name": "pub", "root": str(tmp_path / "runs")},
        "ingest": {"files": [{"path": str(source), "preset": "alpaca", "task": "fruit"}]},
        "filters": {"steps": [{"type": "exact_dedup"}]},
        "export": {"formats": ["messages"], "chat_template": "chatml", "push_to": REPO}}))
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_ENDPOINT": local_hub.url, "HF_HUB_OFFLINE": "0",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "instructforge.cli", "run", str(cfg), "--log-format", "json",
                           "--json"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "pub"
    summary = json.loads((run_dir / "last-run.json").read_text())
    assert summary["push"]["commit"] == local_hub.branches["main"]
    assert local_hub.files()["instructforge.yaml"] == (run_dir / "instructforge.yaml").read_bytes()
    assert any(p.startswith("data/sft/") for p in local_hub.files())
    assert all(auth == f"Bearer {TOKEN}" for m, _, auth in local_hub.requests if m == "POST")
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaks == []


def test_incremental_versions_push_only_the_new_shards(tmp_path, local_hub):
    """Version 2 of an incremental export adds shards; the push sends those and the files that
    describe them (card, LLaMA-Factory stanzas), never version 1's shards again."""
    from instructforge.pipeline import Pipeline

    source = tmp_path / "rows.jsonl"

    def run(n: int) -> Path:
        source.write_text("".join(json.dumps({"instruction": f"Write the number {i} in words, please.",
                                              "output": f"The number is {i}."}) + "\n" for i in range(n)))
        cfg = parse_config({"run": {"name": "inc", "root": str(tmp_path / "runs"), "incremental": True},
                            "ingest": {"files": [{"path": str(source), "preset": "alpaca", "task": "numbers"}]},
                            "export": {"formats": ["messages", "alpaca"], "chat_template": "chatml"}})
        Pipeline(cfg).run()
        return tmp_path / "runs" / "inc"

    run_dir = run(40)
    first, _ = push(run_dir, local_hub)
    assert first.commit and all("-v0001-" in p for p in first.changed if p.startswith("data/"))
    run(60)
    second, _ = push(run_dir, local_hub)
    data = [p for p in second.changed if p.startswith("data/")]
    assert data and all("-v0002-" in p for p in data)
    assert "README.md" in second.changed and second.deleted == []
    assert {p for p in first.changed if p.startswith("data/")} <= set(second.unchanged)
    assert "Dataset version 2" in local_hub.files()["README.md"].decode()


def test_push_verb_through_the_cli(tmp_path, local_hub, monkeypatch):
    from typer.testing import CliRunner

    from instructforge.cli import app

    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", local_hub.url)  # what HF_ENDPOINT sets
    run = make_run(tmp_path, 10, ["messages"])
    first = CliRunner().invoke(app, ["push", str(run), "--repo-id", REPO])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, ["push", str(run), "--repo-id", REPO])
    assert second.exit_code == 0 and "nothing pushed" in " ".join(second.output.split())
    assert len(local_hub.history()) == 2 and TOKEN not in first.output + second.output
