"""The Hub layout on disk, and publishing it safely from a scheduled job.

    hub/README.md                                      card (YAML `configs` map splits to files)
    hub/dataset_info.json                              LLaMA-Factory stanzas (when alpaca/sharegpt/ranking)
    hub/data/<config>/<split>-0000i-of-0000n.parquet   one folder per config, empty splits omitted
    hub/data/<config>/<split>-vNNNN-0000i-of-0000n.parquet   the same, for version N of an incremental run

`push_export` publishes that folder, the run's config (`instructforge.yaml`) and the card (with
the real repo id in its load snippets) to a dataset repo:

- it reads the branch head once, lists the remote files at that commit, and compares each local
  file with its remote copy by content (the LFS sha256, or the git blob sha1 of regular files):
  an unchanged export pushes nothing, a changed one only the changed files, and remote files under
  `data/` the export no longer has are deleted;
- the commit names that head as `parent_commit`, so if anyone else committed in between the Hub
  refuses it and nothing is overwritten (the error says so; rerun the push);
- more than `LARGE_FILES` files (or `LARGE_BYTES`) go through the client's folder upload, which
  with `hf_xet` commits in several batches and resumes where it stopped;
- 429 and 5xx answers are retried with backoff from the start (head, diff, commit): a commit that
  went through but whose answer was lost is then seen as "nothing changed", never made twice;
- a failure leaves the run directory as it was and says what to rerun.

The token is the Hub client's own: `HF_TOKEN` or `hf auth login`. It is never printed or stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.sha import git_hash, sha_fileobj
from rich.console import Console
from rich.table import Table

from instructforge.errors import InstructforgeError
from instructforge.export.card import CARD_FACTS, CONFIG_FILE, CardFacts, parse_card, render_card
from instructforge.export.splits import SPLITS
from instructforge.incremental import latest_version
from instructforge.runs import StageOutput

EXPORT_STAGE = "04-export"
TRAIN_STAGE = "05-train"
LARGE_FILES = 100
LARGE_BYTES = 1 << 30
RETRIES = 5
BACKOFF_S = 2.0
RETRY_STATUS = {429, 500, 502, 503, 504}
CONFLICT_STATUS = {409, 412}  # the branch moved since we read it (parent_commit check)


def split_shards(config: str, split: str, rows: int, shard_rows: int, version: int | None = None) -> list[str]:
    """The numbered shard files (relative to the hub folder) of a config's split of `rows` rows.

    With `version` (incremental runs) the names carry it, so earlier versions' files stay as they
    are and the card's `<split>-*` globs load every version.
    """
    tag = f"v{version:04d}-" if version else ""
    n = -(-rows // shard_rows)
    return [f"data/{config}/{split}-{tag}{i:05d}-of-{n:05d}.parquet" for i in range(n)]


def versioned_files(hub: Path) -> dict[str, dict[str, list[str]]]:
    """config -> split -> shard paths of every version in the folder (an incremental export's work
    folder holds the earlier versions' shards too), for the LLaMA-Factory stanzas."""
    files: dict[str, dict[str, list[str]]] = {}
    for folder in sorted(p for p in (hub / "data").glob("*") if p.is_dir()):
        for split in SPLITS:
            shards = sorted(p.relative_to(hub).as_posix() for p in folder.glob(f"{split}-*.parquet"))
            if shards:
                files.setdefault(folder.name, {})[split] = shards
    return files


def grow_card_facts(facts: CardFacts, previous: CardFacts | None, version: int) -> None:
    """An incremental export's card names its version and describes every version so far: rows,
    bytes and sources add up (`previous`: the card facts of the version before, if any)."""
    facts.version = version
    if previous is None:
        return
    for mine, before in ((facts.counts, previous.counts), (facts.split_bytes, previous.split_bytes)):
        for name, splits in before.items():
            for split, n in splits.items():
                mine.setdefault(name, {})[split] = mine.get(name, {}).get(split, 0) + n
    for source, n in previous.sources.items():
        facts.sources[source] = facts.sources.get(source, 0) + n
    for name in previous.counts:
        facts.features.setdefault(name, previous.features.get(name, []))
        facts.samples.setdefault(name, previous.samples.get(name, {}))


def hub_files(hub: Path) -> list[str]:
    """Every file of the export folder, relative, in upload order (card last)."""
    files = sorted(p.relative_to(hub).as_posix() for p in hub.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    return sorted(files, key=lambda f: f == "README.md")


def _export_folder(run_dir: Path) -> StageOutput:
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
    if not (stage / CARD_FACTS).exists():
        raise InstructforgeError(f"{stage}: no {CARD_FACTS} (export again with this version: "
                                 "`instructforge export CONFIG --force`)")
    return out


def publish_files(run_dir: Path, export: StageOutput, repo_id: str) -> dict[str, Path | bytes]:
    """path in repo -> local file (or content) of everything a push publishes: the export folder, the
    run's config, and the card re-rendered for the repo (its load snippets name `repo_id`; with the
    train stage's before/after evaluation when the run has one)."""
    hub = export.path / "hub"
    files: dict[str, Path | bytes] = {f: hub / f for f in hub_files(hub)}
    if (run_dir / CONFIG_FILE).exists():
        files[CONFIG_FILE] = run_dir / CONFIG_FILE
    train = run_dir / TRAIN_STAGE / "stats.json"
    train_eval = json.loads(train.read_text(encoding="utf-8")).get("eval") if train.exists() else None
    facts = CardFacts.load(export.path / CARD_FACTS)
    files["README.md"] = render_card(facts, repo_id=repo_id, train_eval=train_eval).encode()
    return dict(sorted(files.items(), key=lambda kv: kv[0] == "README.md"))


def _content(src: Path | bytes) -> bytes:
    return src if isinstance(src, bytes) else src.read_bytes()


def _sha256(src: Path | bytes) -> str:
    if isinstance(src, bytes):
        return hashlib.sha256(src).hexdigest()
    with src.open("rb") as f:
        return sha_fileobj(f).hex()


def same_content(src: Path | bytes, remote: RepoFile) -> bool:
    """Whether the local file is byte-identical to the remote one (LFS: sha256; regular: git sha1)."""
    size = len(src) if isinstance(src, bytes) else src.stat().st_size
    if size != remote.size:
        return False
    if remote.lfs is not None:
        return _sha256(src) == remote.lfs.sha256
    return git_hash(_content(src)) == remote.blob_id


@dataclass
class PushPlan:
    head: str | None  # the branch head the diff was made against (the commit's parent)
    changed: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass
class PushResult:
    repo_id: str
    version: int
    commit: str | None  # the new head; None when nothing was pushed
    changed: list[str]
    deleted: list[str]
    unchanged: list[str]


def plan_push(api: HfApi, repo_id: str, revision: str | None, files: dict[str, Path | bytes]) -> PushPlan:
    """Compare `files` with the branch head's tree: what changed, what is unchanged, which remote
    data files the export no longer has (files outside data/ are the repo owner's and stay)."""
    head = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    remote = {f.path: f for f in api.list_repo_tree(repo_id, repo_type="dataset", revision=head or revision,
                                                    recursive=True) if isinstance(f, RepoFile)}
    plan = PushPlan(head)
    for path, src in files.items():
        (plan.unchanged if path in remote and same_content(src, remote[path]) else plan.changed).append(path)
    plan.stale = sorted(p for p in remote if p.startswith("data/") and p not in files)
    return plan


def _commit(api: HfApi, repo_id: str, revision: str | None, plan: PushPlan, files: dict[str, Path | bytes],
            message: str, scratch: Path) -> None:
    """Commit the plan: one commit, or the client's batched folder upload for a large one."""
    size = sum(len(s) if isinstance(s, bytes) else s.stat().st_size for p, s in files.items() if p in plan.changed)
    if len(plan.changed) <= LARGE_FILES and size <= LARGE_BYTES:
        ops = [CommitOperationDelete(path_in_repo=p) for p in plan.stale]
        ops += [CommitOperationAdd(path_in_repo=p, path_or_fileobj=files[p] if isinstance(files[p], bytes)
                                   else str(files[p])) for p in plan.changed]
        api.create_commit(repo_id, ops, commit_message=message, repo_type="dataset", revision=revision,
                          parent_commit=plan.head)
        return
    # a large push: the changed files as links in a scratch folder, committed by the client in batches
    folder = Path(tempfile.mkdtemp(prefix=".push-", dir=scratch))
    try:
        for p in plan.changed:
            dst = folder / p
            dst.parent.mkdir(parents=True, exist_ok=True)
            src = files[p]
            if isinstance(src, bytes):
                dst.write_bytes(src)
            else:
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="dataset", revision=revision,
                          commit_message=message, parent_commit=plan.head, delete_patterns=plan.stale or None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def push_export(run_dir: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                dry_run: bool = False, console: Console | None = None,
                endpoint: str | None = None) -> PushResult:
    """Publish `<run_dir>/04-export/hub` (+ the run's config) to the dataset repo `repo_id`.

    Only files whose content differs from the remote are committed; nothing at all when none does.
    With `dry_run`, nothing is contacted: the files are listed.
    """
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    out = _export_folder(run_dir)
    files = publish_files(run_dir, out, repo_id)
    version = latest_version(out)
    message = (f"instructforge export of run {run_dir.name}"
               f"{f' (version {version})' if version else ''}, fingerprint {out.fingerprint}")
    target = f"{repo_id}@{revision}" if revision else repo_id
    if dry_run:
        table = Table(title=f"dry run: would publish to {target} (dataset, {'private' if private else 'public'})")
        table.add_column("file")
        table.add_column("bytes", justify="right")
        for f, src in files.items():
            table.add_row(f, f"{len(src) if isinstance(src, bytes) else src.stat().st_size:,}")
        console.print(table)
        console.print(f"commit message: {message}")
        console.print("files identical to the remote are skipped; remote files under data/ that this export "
                      "lacks are deleted")
        return PushResult(repo_id, version, None, list(files), [], [])

    api = HfApi(endpoint=endpoint)
    if get_token() is None:
        raise InstructforgeError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    command = f"`instructforge push {run_dir} --repo-id {repo_id}`"
    rerun = f"the run directory is unchanged; rerun {command}"
    if hf_constants.HF_HUB_OFFLINE:
        raise InstructforgeError(f"cannot push to {target}: HF_HUB_OFFLINE is set; unset it and run {command}")
    for attempt in range(RETRIES + 1):
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
            plan = plan_push(api, repo_id, revision, files)
            if not plan.changed and not plan.stale:
                console.print(f"{target} is up to date at {plan.head}: nothing pushed")
                return PushResult(repo_id, version, None, [], [], plan.unchanged)
            _commit(api, repo_id, revision, plan, files, message, run_dir)
            head = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
            console.print(f"pushed {len(plan.changed)} changed files ({len(plan.unchanged)} unchanged, "
                          f"{len(plan.stale)} stale removed) to {target}: commit {head}")
            return PushResult(repo_id, version, head, plan.changed, plan.stale, plan.unchanged)
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status in CONFLICT_STATUS:
                raise InstructforgeError(
                    f"push to {target} refused: someone else committed to it since this push read it "
                    f"(HTTP {status}); nothing was overwritten; {rerun}") from None
            if status not in RETRY_STATUS or attempt == RETRIES:
                raise InstructforgeError(f"push to {target} failed: HTTP {status} {_first_line(e)}; "
                                         f"{rerun}") from None
        except ValueError as e:  # the client's checks, e.g. the card's metadata refused by the Hub
            raise InstructforgeError(f"push to {target} refused: {e}; {rerun}") from None
        except httpx2.TransportError as e:
            if attempt == RETRIES:
                raise InstructforgeError(f"push to {target} failed: {type(e).__name__}: {e}; {rerun}") from None
        wait = BACKOFF_S * 2 ** attempt
        console.print(f"push to {target}: transient error, retrying in {wait:.1f}s")
        time.sleep(wait)
    raise InstructforgeError(f"push to {target} failed after {RETRIES} retries; {rerun}")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
