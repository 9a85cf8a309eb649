"""Training in several data-parallel processes (`train.processes`): the stage starts them with torch's
launcher and the Trainer's DDP runs over gloo on CPU, 2 processes with one torch thread each.

The model-backed test trains the bundled model for 2 steps: a 2-process run killed right after its
first checkpoint resumes from it, and its losses equal an uninterrupted 1-process run's (same global
batch, seed and data order). The fast tests check the pieces: settings, checkpoints written by
several processes, which failure is reported, and that launched processes die with their parent.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_train import make_export, run_train_stage, tiny

from instructforge.errors import ConfigError, StorageError
from instructforge.faults import KILL_AT
from instructforge.train.device import detect
from instructforge.train.launch import PARENT_PID, WorkerError, root_cause


def test_processes_setting_and_per_process_batch(tmp_path):
    from instructforge.train.loop import common_args

    assert detect("cpu", processes=None).processes == 1 and detect("cpu", processes=2).processes == 2
    args = common_args(tiny(), detect("cpu", processes=2), tmp_path, seed=0, has_eval=False, epochs=1,
                       max_steps=None, learning_rate=1e-3)
    assert args["per_device_train_batch_size"] == 2 and args["per_device_eval_batch_size"] == 2  # batch_size 4
    with pytest.raises(ConfigError, match="do not split evenly over 3 training processes"):
        run_train_stage(tmp_path, tmp_path / "no-model-needed", n=4, train={"batch_size": 4, "processes": 3})


def test_checkpoint_of_two_processes_needs_each_rng_state(tmp_path):
    import torch
    from safetensors.torch import save_file

    from instructforge.train.loop import last_complete_checkpoint

    for step in (1, 2):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        save_file({"w": torch.zeros(2)}, str(path / "adapter_model.safetensors"))
        for name in ("optimizer.pt", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth"):
            torch.save({"step": step}, path / name)
        (path / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    (tmp_path / "checkpoint-2" / "rng_state_1.pth").unlink()  # rank 1 was stopped before writing it
    assert last_complete_checkpoint(tmp_path, 2, delete=False) == tmp_path / "checkpoint-1"
    assert (tmp_path / "checkpoint-2").exists()  # only the main process deletes
    assert last_complete_checkpoint(tmp_path, 2) == tmp_path / "checkpoint-1"
    assert not (tmp_path / "checkpoint-2").exists()
    assert last_complete_checkpoint(tmp_path, 1) is None  # a 1-process run writes rng_state.pth


def test_root_cause_is_the_killed_process_else_the_first_error(tmp_path):
    def failure(exitcode: int) -> SimpleNamespace:
        return SimpleNamespace(exitcode=exitcode, signal_name=lambda: signal.Signals(-exitcode).name)

    def raised(rank: int, at: float, error: Exception) -> None:
        (tmp_path / f"error-{rank}.pkl").write_bytes(pickle.dumps((at, error)))

    raised(1, 2.0, WorkerError("process 1 of 2 failed: RuntimeError: connection closed by peer"))
    assert str(root_cause({0: failure(-9), 1: failure(1)}, tmp_path, 2)) == "process 0 of 2 was killed by SIGKILL"
    raised(0, 1.0, StorageError("/x/sft: cannot write: no space left on device"))
    # the earliest error; the launcher's SIGTERM to the other process is no cause
    assert isinstance(root_cause({0: failure(1), 1: failure(-15)}, tmp_path, 2), StorageError)
    for p in tmp_path.glob("error-*"):
        p.unlink()
    assert str(root_cause({1: failure(3), 0: failure(-15)}, tmp_path, 2)) == "process 0 of 2 was killed by SIGTERM"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_launched_process_dies_with_its_parent():
    child = ("import signal, time; from instructforge.train.launch import die_with_parent; "
             "die_with_parent(signal.SIGKILL); print('ready', flush=True); time.sleep(120)")
    parent = (f"import os, subprocess, sys, time; os.environ[{PARENT_PID!r}] = str(os.getpid()); "
              f"p = subprocess.Popen([sys.executable, '-c', {child!r}]); print(p.pid, flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait()
    for _ in range(100):
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the child outlived its parent")


def _alive(pid: int) -> bool:
    """Running (a zombie left to a non-reaping init is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_two_process_sft_resumes_after_a_kill_and_matches_one_process(tmp_path, bundled_model_dir, monkeypatch):
    from safetensors import safe_open

    from instructforge.train.data import load_splits
    from instructforge.train.launch import run_phase
    from instructforge.train.metrics import read_metrics
    from instructforge.train.sft import train_sft

    train = {**tiny(max_steps=2, save_steps=1, samples=1, sample_max_tokens=4).model_dump(), "processes": 2,
             "eval": {"enabled": False}}
    cfg = tiny(max_steps=2, save_steps=1)
    splits = load_splits(make_export(tmp_path / "ref", n=16).path / "hub" / "data" / "sft", ("messages",))
    ref = run_phase(train_sft, cfg, str(bundled_model_dir), splits, tmp_path / "ref" / "sft", detect("cpu"),
                    tmp_path / "ref" / "metrics.jsonl")  # 1 process: in this one
    assert not (tmp_path / "ref" / "sft" / "launch").exists()
    ref_losses = [m["loss"] for m in read_metrics(tmp_path / "ref" / "metrics.jsonl") if "loss" in m]

    monkeypatch.setenv(KILL_AT, "train:step@2")  # rank 0, after step 2, so checkpoint-1 is whole on both
    with pytest.raises(WorkerError) as killed:
        run_train_stage(tmp_path, bundled_model_dir, n=16, train=train)
    message = str(killed.value)
    assert message.startswith("train sft: process 0 of 2 was killed by SIGKILL; output of every process: ")
    assert "\n" not in message and Path(message.rpartition(": ")[2]).is_file()
    work = next((tmp_path / "t").glob(".05-train.*.work"))
    assert (work / "sft" / "checkpoints" / "checkpoint-1" / "rng_state_1.pth").exists()

    monkeypatch.delenv(KILL_AT)
    out = run_train_stage(tmp_path, bundled_model_dir, n=16, train=train)
    stats = out.stats()
    sft = stats["phases"]["sft"]
    assert stats["processes"] == 2 and sft["resumed_from"] == "checkpoint-1" and sft["steps"] == 2
    losses = [(m["step"], m["loss"]) for m in read_metrics(out.path / "metrics.jsonl") if "loss" in m]
    assert [s for s, _ in losses] == [1, 2]  # step 1 logged by the killed run, step 2 after the resume
    assert [loss for _, loss in losses] == pytest.approx(ref_losses, rel=1e-4)
    assert sft["eval"]["eval_loss"] == pytest.approx(ref.eval["eval_loss"], rel=1e-3)
    assert not (out.path / "sft" / "launch").exists() and not (out.path / "sft" / "checkpoints").exists()

    adapter, ref_adapter = out.path / "adapter", tmp_path / "ref" / "sft" / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == sorted(p.name for p in ref_adapter.iterdir())
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as a, \
            safe_open(str(ref_adapter / "adapter_model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        key = min(a.keys())
        assert (a.get_tensor(key) - b.get_tensor(key)).abs().max() < 1e-4
    assert len(out.table().to_pylist()) == 1 and out.table().to_pylist()[0]["after"]
