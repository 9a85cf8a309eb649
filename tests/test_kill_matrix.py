"""Kills at any point: real `instructforge` processes SIGKILLed at named points of every stage
(`INSTRUCTFORGE_KILL_AT`, see instructforge.faults), then rerun until one completes. Each stage's
points are chained (kill early, rerun killed later, ..., rerun to the end), so every rerun also
resumes from what the kills before it left; some links are a full disk instead (`ENOSPC ...`: the
process must exit 74 with one line naming the file). Checked: the rerun completes; no row is lost
or duplicated (by id); kept and rejected rows cover the input; the stage equals an uninterrupted run.

The fast tests below the matrix check the pieces in process: rejection event ids, a resumable
stage never appending a shard twice, complete-checkpoint selection and metrics after resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from instructforge.errors import ExitCode
from instructforge.faults import ENOSPC_AT, KILL_AT
from instructforge.records import Example
from instructforge.runs import SAVED_SHARDS, RunDir, read_table

STAGE_DIRS = {"ingest": "01-ingest", "generate": "02-generate", "filter": "03-filter", "export": "04-export",
              "train": "05-train"}
# kill points per stage, in the order a run meets them (NAME@N: the N-th time; instructforge.faults);
# "ENOSPC NAME" makes that point a full disk instead of a kill
CHAINS = {
    "ingest": ["ingest:start", "ingest:closed", "ingest:done"],
    "generate": ["generate:batch@2", "ENOSPC write@2", "generate:round@1", "generate:closed"],
    "filter": ["filter:start", "filter:closed", "filter:done"],
    # start; after its second file (hub shards are written first); shards done, card not; all done
    "export": ["export:start", "written@2", "ENOSPC write@3", "export:card", "export:done"],
    # step 1 (no checkpoint yet); right after checkpoint-2; right after checkpoint-4, which is then
    # damaged as a kill inside the save leaves it; disk full at the next checkpoint (resumes from 2:
    # saves 4 again); after the data shard, before the stats
    "train": ["train:step@1", "train:save@1", "train:save@1", "ENOSPC train:save@1", "train:closed"],
}


def _config(tmp_path: Path, model_dir: Path) -> Path:
    cfg = {
        "run": {"name": "km", "root": str(tmp_path / "runs"), "seed": 0},
        "engine": {"backend": "transformers", "model": str(model_dir)},
        "ingest": {"collections": [{"path": "bundled:flan_mini.yaml", "tasks": ["antonyms", "entailment"]}],
                   "seeds": [{"path": "bundled:seed_tasks.jsonl"}], "mixing": {"max_per_task": 4}},
        "selfinstruct": {"target": 8, "prompts_per_round": 1, "max_rounds": 2, "sampling": {"max_tokens": 160},
                         "instance_max_tokens": 48},
        "filters": {"steps": [{"type": "exact_dedup"}, {"type": "heuristics"}]},
        "export": {},
        "train": {"method": "sft", "max_steps": 4, "save_steps": 2, "batch_size": 2, "max_length": 64,
                  "logging_steps": 1, "samples": 1, "sample_max_tokens": 8, "eval": {"enabled": False},
                  "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
    }
    path = tmp_path / "km.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _cli(verb: str, config: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (KILL_AT, ENOSPC_AT)}
    if fault:
        kind, _, point = fault.rpartition(" ")
        env[ENOSPC_AT if kind == "ENOSPC" else KILL_AT] = point
    return subprocess.run([sys.executable, "-m", "instructforge.cli", verb, str(config)], capture_output=True,
                          text=True, timeout=600, check=False, env=env)


def _rows(folder: Path, columns: tuple[str, ...]) -> Counter:
    if not folder.exists():
        return Counter()
    table = read_table(folder)
    return Counter(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


def _snapshot(stage_dir: Path, stage: str) -> dict:
    """What must equal an uninterrupted run: kept and rejected rows (with multiplicity)."""
    if stage == "train":
        return {"data": _rows(stage_dir / "data", ("prompt", "reference", "before"))}
    snap = {"data": _rows(stage_dir / "data", ("id",)),
            "rejected": _rows(stage_dir / "rejected", ("id", "filter", "reason", "event_id"))}
    if stage == "export":
        hub = stage_dir / "hub"
        snap["hub"] = {str(p.relative_to(hub)): pq.read_table(p).to_pylist() for p in sorted(hub.rglob("*.parquet"))}
        snap["card"] = (hub / "README.md").exists()
    return snap


def _forget(run_root: Path, stage: str) -> None:
    """Remove a stage's output and work directories, so it runs again from nothing."""
    name = STAGE_DIRS[stage]
    shutil.rmtree(run_root / name)
    for work in run_root.glob(f".{name}.*"):
        shutil.rmtree(work)


def _damage_newest_checkpoint(run_root: Path) -> str:
    """What a kill inside the Trainer's save leaves: weights written, optimizer cut short, no state."""
    ckpts = sorted(run_root.glob(".05-train.*.work/sft/checkpoints/checkpoint-*"),
                   key=lambda p: int(p.name.split("-")[1]))
    newest = ckpts[-1]
    (newest / "trainer_state.json").unlink()
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    return newest.name


@pytest.mark.slow
def test_kill_matrix(tmp_path, bundled_model_dir):
    config = _config(tmp_path, bundled_model_dir)
    run_root = tmp_path / "runs" / "km"
    reference = _cli("run", config)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = {stage: _snapshot(run_root / d, stage) for stage, d in STAGE_DIRS.items()}
    ref_train = json.loads((run_root / "05-train" / "stats.json").read_text())["phases"]["sft"]
    assert expected["generate"]["data"] and expected["generate"]["rejected"]  # the generate cases mean something

    for stage, chain in CHAINS.items():
        _forget(run_root, stage)
        works: set[str] = set()
        for i, point in enumerate(chain):
            failed = _cli(stage, config, point)
            works |= {p.name for p in run_root.glob(f".{STAGE_DIRS[stage]}.*.work")}
            assert len(works) == 1, f"{stage}: its fingerprint changed during the test (code edited meanwhile?)"
            if point.startswith("ENOSPC"):
                assert failed.returncode == ExitCode.STORAGE, f"{stage}: {point}\n{failed.stderr[-2000:]}"
                assert "Traceback" not in failed.stderr and "no space left on device" in failed.stderr
                if stage == "train":  # this run found the damaged checkpoint-4 and went back to 2
                    assert "checkpoint-4 is incomplete" in failed.stderr, failed.stderr[-2000:]
                continue
            assert failed.returncode == -signal.SIGKILL, f"{stage}: {point} was not reached\n{failed.stderr[-2000:]}"
            if stage == "train" and i == 2:
                assert _damage_newest_checkpoint(run_root) == "checkpoint-4"
        rerun = _cli(stage, config)
        assert rerun.returncode == 0, f"{stage}: rerun after {chain}\n{rerun.stderr[-3000:]}"
        stage_dir = run_root / STAGE_DIRS[stage]
        assert _snapshot(stage_dir, stage) == expected[stage], f"{stage} differs after kills at {chain}"
        assert not list(run_root.glob(f".{STAGE_DIRS[stage]}.*")), "a work directory was left behind"
        assert not [p for p in stage_dir.rglob("*") if ".tmp-" in p.name]

    # kept and rejected rows of the filter cover its input exactly (nothing lost on the way)
    filtered = run_root / "03-filter"
    inputs = set(read_table(run_root / "01-ingest" / "data").column("id").to_pylist())
    inputs |= set(read_table(run_root / "02-generate" / "data").column("id").to_pylist())
    kept = set(read_table(filtered / "data").column("id").to_pylist())
    assert kept | set(read_table(filtered / "rejected").column("id").to_pylist()) == inputs

    # train: the last resume found checkpoint-4 whole again (saved anew before the disk filled up);
    # metrics.jsonl holds each step once and the reported losses cover the whole run (step 1 was
    # logged by the first killed process)
    from instructforge.train.metrics import read_metrics

    sft = json.loads((run_root / "05-train" / "stats.json").read_text())["phases"]["sft"]
    steps = [m["step"] for m in read_metrics(run_root / "05-train" / "metrics.jsonl") if "loss" in m]
    assert steps == [1, 2, 3, 4] and sft["steps"] == 4 and sft["resumed_from"] == "checkpoint-4"
    assert sft["first_loss"] == pytest.approx(ref_train["first_loss"], rel=1e-4)
    assert len(read_table(run_root / "05-train" / "data")) == 1  # one sample row, not one per attempt


# -- the pieces, in process ------------------------------------------------------------------------

def _examples(n: int) -> list[dict]:
    return [Example(instruction=f"Task {i}.", output=str(i)).model_dump() for i in range(n)]


def test_rejection_event_ids_tell_repeats_apart_and_are_stable(tmp_path):
    def stage(ctx):
        rows = _examples(2)
        ctx.reject(rows, "novelty", "too similar")
        ctx.reject(rows[:1], "novelty", "too similar")  # the same candidate, rejected again
        ctx.reject(rows[:1], "heuristics", "too short")

    ids = []
    for root in ("a", "b"):
        out, _ = RunDir(tmp_path / root).run_stage(2, "generate", config={}, inputs=[], code="v", fn=stage)
        rejected = read_table(out.rejected).to_pylist()
        assert [r["id"] for r in rejected].count(rejected[0]["id"]) == 3
        ids.append([r["event_id"] for r in rejected])
    assert len(set(ids[0])) == 4 and ids[0] == ids[1]  # distinct within a run, equal across reruns


def test_resumed_rejections_continue_the_event_count(tmp_path):
    run = RunDir(tmp_path / "r")
    row = _examples(1)

    def first(ctx):
        ctx.reject(row, "novelty", "too similar")
        ctx.checkpoint()
        raise KeyboardInterrupt

    def resumed(ctx):
        ctx.reject(row, "novelty", "too similar")

    with pytest.raises(KeyboardInterrupt):
        run.run_stage(2, "generate", config={}, inputs=[], code="v", fn=first, resumable=True)
    out, _ = run.run_stage(2, "generate", config={}, inputs=[], code="v", fn=resumed, resumable=True)
    assert len(set(read_table(out.rejected).column("event_id").to_pylist())) == 2


def test_resumable_stage_killed_after_its_last_shard_never_writes_it_twice(tmp_path, monkeypatch):
    """The train stage's case: data shard written, process gone before the stats."""
    run = RunDir(tmp_path / "r")

    def stage(ctx):
        ctx.write(_examples(3))

    monkeypatch.setenv("INSTRUCTFORGE_ENOSPC_AT", "train:closed")  # stands for the kill at that point
    with pytest.raises(OSError):
        run.run_stage(5, "train", config={}, inputs=[], code="v", fn=stage, resumable=True)
    work = next(run.root.glob(".05-train.*.work"))
    assert len(list((work / "data").glob("part-*.parquet"))) == 1 and not (work / SAVED_SHARDS).exists()
    monkeypatch.delenv("INSTRUCTFORGE_ENOSPC_AT")
    out, _ = run.run_stage(5, "train", config={}, inputs=[], code="v", fn=stage, resumable=True)
    ids = out.table().column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 3


def _checkpoint(folder: Path, step: int) -> Path:
    import torch
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(4, 4)}, str(path / "adapter_model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"step": step, "state": torch.ones(64)}, path / name)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


@pytest.mark.parametrize("damage", ["no_state", "state_torn", "weights_cut", "optimizer_cut", "rng_missing"])
def test_resume_takes_only_a_complete_checkpoint(tmp_path, damage):
    from instructforge.train.loop import last_complete_checkpoint

    ckpts = tmp_path / "checkpoints"
    _checkpoint(ckpts, 2)
    newest = _checkpoint(ckpts, 4)
    if damage == "no_state":
        (newest / "trainer_state.json").unlink()
    elif damage == "state_torn":
        (newest / "trainer_state.json").write_text('{"global_st')
    elif damage == "weights_cut":
        w = newest / "adapter_model.safetensors"
        w.write_bytes(w.read_bytes()[:-8])
    elif damage == "optimizer_cut":
        o = newest / "optimizer.pt"
        o.write_bytes(o.read_bytes()[:100])
    else:
        (newest / "rng_state.pth").unlink()
    assert last_complete_checkpoint(ckpts) == ckpts / "checkpoint-2"
    assert not newest.exists()  # deleted, so the Trainer's rotation never keeps it either
    shutil.rmtree(ckpts / "checkpoint-2")
    with zipfile.ZipFile(_checkpoint(ckpts, 6) / "scheduler.pt") as z:
        assert z.testzip() is None
    assert last_complete_checkpoint(ckpts) == ckpts / "checkpoint-6"
    assert last_complete_checkpoint(tmp_path / "none") is None


def test_metrics_after_resume_hold_each_step_once_and_losses_cover_the_run(tmp_path):
    from instructforge.train.metrics import MetricsLog, read_metrics

    path = tmp_path / "metrics.jsonl"
    lines = [{"phase": "sft", "step": s, "loss": 4.0 - s} for s in (1, 2, 3, 4)]
    lines.insert(2, {"phase": "sft", "step": 2, "eval_loss": 2.5})
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"phase": "pre", "step": 9, "loss": 7.0}, *lines])
                    + '{"phase": "sft", "st')  # torn by the kill
    log = MetricsLog(path, "sft")
    log.truncate(2)  # resuming from checkpoint-2
    kept = read_metrics(path)
    assert [(r["phase"], r["step"]) for r in kept] == [("pre", 9), ("sft", 1), ("sft", 2), ("sft", 2)]
    assert path.read_text().endswith("\n")
    with path.open("a") as f:  # the resumed process logs steps 3 and 4
        f.write("".join(json.dumps({"phase": "sft", "step": s, "loss": 4.0 - s}) + "\n" for s in (3, 4)))
    assert log.loss_summary() == {"first_loss": 3.0, "last_loss": 0.0, "train_loss": 1.5}


def test_train_fingerprint_names_the_thread_count(monkeypatch, tmp_path, bundled_model_dir):
    from instructforge.runs import RunContext
    from instructforge.train.config import TrainConfig
    from instructforge.train.stage import input_fingerprint

    section = TrainConfig(base_model=str(bundled_model_dir), eval={"enabled": False})
    run = RunContext(base_dir=tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one = input_fingerprint(section, run)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    two = input_fingerprint(section, run)
    assert one["torch_threads"] == "1" and two["torch_threads"] == "2"
    assert {k: v for k, v in one.items() if k != "torch_threads"} == {
        k: v for k, v in two.items() if k != "torch_threads"}


@pytest.mark.slow
def test_killed_after_the_last_checkpoint_takes_no_extra_step(tmp_path, bundled_model_dir):
    """Trainer.train resumed from a checkpoint at max_steps would train one step more."""
    from transformers import TrainerCallback

    from instructforge.train.config import TrainConfig
    from instructforge.train.data import load_splits, write_split
    from instructforge.train.device import detect
    from instructforge.train.metrics import read_metrics
    from instructforge.train.sft import train_sft

    class KillAfterLastSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt

    rows = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": str(i)}]}
            for i in range(8)]
    write_split(tmp_path / "export", "train", rows)
    splits = load_splits(tmp_path / "export", ("messages",))
    cfg = TrainConfig.model_validate({"max_steps": 2, "save_steps": 2, "batch_size": 2, "max_length": 64,
                                      "logging_steps": 1, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}})
    metrics = tmp_path / "metrics.jsonl"
    with pytest.raises(KeyboardInterrupt):
        train_sft(cfg, str(bundled_model_dir), splits, tmp_path / "sft", detect("cpu"), metrics,
                  callbacks=[KillAfterLastSave()])
    result = train_sft(cfg, str(bundled_model_dir), splits, tmp_path / "sft", detect("cpu"), metrics)
    assert result.steps == 2 and result.resumed_from == "checkpoint-2"
    assert [m["step"] for m in read_metrics(metrics) if "loss" in m] == [1, 2]
    assert (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").exists()
