"""A training phase in several data-parallel processes (`train.processes`), started by the stage.

The stage's process (the driver) keeps everything but the training loop: reading the export,
samples, evaluation, stats. For a phase (SFT, DPO, reward) it starts PyTorch's launcher, which
`accelerate launch` also runs for multi-GPU training, in a child process:

    driver  `run_phase`: writes `<phase>/launch/spec.pkl` (the phase function with its arguments:
            config, rows, device settings), starts the agent, waits, raises a failure as one line
    agent   `python -m instructforge.train.launch agent DIR N`: `torch.distributed.run` with N
            workers on this node (standalone rendezvous on a free port, no restarts)
    worker  `python -m instructforge.train.launch worker DIR`: one rank (one GPU, or CPU with gloo)
            running the same phase function a single-process run calls; the Trainer's DDP does
            the rest, and only rank 0 writes files (`instructforge.train.loop`)

Every process dies with the one that started it (Linux `PR_SET_PDEATHSIG`), so a killed driver
leaves no workers writing checkpoints under its rerun, which resumes from the last complete one.
The output of every process goes to `launch/workers.log`; the folder is removed when the phase
succeeds. A failure names the process and its cause in one line: a project error raised in a
worker (a full disk, a bad base model) is re-raised as itself, anything else is a `WorkerError`.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from instructforge.errors import InstructforgeError, storage_error
from instructforge.train.device import DeviceSettings, apply

if TYPE_CHECKING:
    from collections.abc import Callable

    from instructforge.train.config import TrainConfig
    from instructforge.train.loop import PhaseResult

SPEC, LOG, ERROR = "spec.pkl", "workers.log", "error.pkl"
PARENT_PID = "INSTRUCTFORGE_TRAIN_PARENT"  # the pid each launched process expects as its parent
PR_SET_PDEATHSIG = 1
log = logging.getLogger("instructforge.train")


class WorkerError(InstructforgeError):
    """A training process failed (an exception that is not a project error, or a signal)."""


def run_phase(train: Callable[..., PhaseResult], cfg: TrainConfig, base: str,
              splits: dict[str, list[dict[str, Any]]], folder: Path, settings: DeviceSettings, metrics_path: Path,
              **kwargs: Any) -> PhaseResult:
    """`train` (`train_sft`, `train_dpo` or `train_reward`) in this process when there is one training
    process, else in `settings.processes` processes started here."""
    from instructforge.train.loop import is_done, load_result  # the agent process imports this module too

    if settings.processes == 1 or is_done(folder):
        return train(cfg, base, splits, folder, settings, metrics_path, **kwargs)
    launch = folder / "launch"
    threads = max(1, settings.threads // settings.processes)  # the node's cores, shared
    spec = (partial(train, cfg, base, splits, folder, settings, metrics_path, **kwargs),
            replace(settings, threads=threads))
    try:
        shutil.rmtree(launch, ignore_errors=True)  # a failed attempt's spec, log and error
        launch.mkdir(parents=True)
        (launch / SPEC).write_bytes(pickle.dumps(spec))
    except OSError as e:
        err = storage_error(e, launch)
        if err is None:
            raise
        raise err from e
    if settings.device == "cuda":  # the driver's cached blocks (samples before training) on GPU 0
        gc.collect()
        torch.cuda.empty_cache()
    log.info("train %s: %d processes on %s, %d examples per process and step; output in %s",
             folder.name, settings.processes, settings.device, cfg.batch_size // settings.processes, launch / LOG)
    code = _run_agent(launch, settings.processes, threads)
    if code != 0:
        raise _failure(launch, folder.name, code)
    shutil.rmtree(launch)
    return load_result(folder)


def _run_agent(launch: Path, processes: int, threads: int) -> int:
    """The launcher's exit code; stopped (with its workers) if the driver is interrupted meanwhile."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), PARENT_PID: str(os.getpid())}
    with (launch / LOG).open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", __name__, "agent", str(launch), str(processes)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            return proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()  # the agent stops its workers, then exits
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _failure(launch: Path, phase: str, code: int) -> InstructforgeError:
    """The error the agent recorded: a project error as itself, anything else in one line."""
    try:
        error = pickle.loads((launch / ERROR).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        error = WorkerError(f"the launcher exited with code {code}")
    if isinstance(error, WorkerError):
        return WorkerError(f"train {phase}: {error}; output of every process: {launch / LOG}")
    return error


# -- the agent and worker processes ----------------------------------------------------------------

def die_with_parent(sig: int) -> None:
    """Linux: the kernel sends `sig` to this process when the process that started it exits."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != int(os.environ[PARENT_PID]):  # it was gone before the call
        os.kill(os.getpid(), sig)
    os.environ[PARENT_PID] = str(os.getpid())  # for this process's own children


def agent(launch: Path, processes: int) -> int:
    """Run the workers with torch's launcher; on failure record the root cause for the driver."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    die_with_parent(signal.SIGTERM)  # the launcher stops its workers on SIGTERM
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={processes}", "--max-restarts=0",
                        "-m", __name__, "worker", str(launch)]))
    except ChildFailedError as e:
        (launch / ERROR).write_bytes(pickle.dumps(root_cause(e.failures, launch, processes)))
        return 1
    return 0


def root_cause(failures: dict[int, Any], launch: Path, processes: int) -> InstructforgeError:
    """A process killed by a signal first (its peers then fail on the broken connection; SIGTERM is
    how the launcher stops the others), else the earliest error a worker raised, else the first
    process that failed."""
    killed = sorted(rank for rank, f in failures.items() if f.exitcode < 0 and -f.exitcode != signal.SIGTERM)
    raised = [pickle.loads(p.read_bytes()) for p in launch.glob("error-*.pkl")]  # (time, error)
    if raised and not killed:
        return min(raised, key=lambda r: r[0])[1]
    rank = killed[0] if killed else min(failures)
    f = failures[rank]
    how = f"was killed by {f.signal_name()}" if f.exitcode < 0 else f"exited with code {f.exitcode}"
    return WorkerError(f"process {rank} of {processes} {how}")


def worker(launch: Path) -> None:
    """One rank: the phase function the driver pickled, on this rank's GPU (or the CPU)."""
    die_with_parent(signal.SIGKILL)
    rank, processes = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    try:
        train, settings = pickle.loads((launch / SPEC).read_bytes())
        if settings.device == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        apply(settings)
        train()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    except Exception as e:
        error = e if isinstance(e, InstructforgeError) else WorkerError(
            f"process {rank} of {processes} failed: {type(e).__name__}: {first_line(e)}")
        (launch / f"error-{rank}.pkl").write_bytes(pickle.dumps((time.time(), error)))
        raise  # the traceback goes to the log


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def main(argv: list[str]) -> None:
    role, folder, *rest = argv
    if role == "agent":
        sys.exit(agent(Path(folder), int(rest[0])))
    worker(Path(folder))


if __name__ == "__main__":
    # through the module's own name, so pickled errors name its classes rather than __main__'s
    from instructforge.train.launch import main as module_main

    module_main(sys.argv[1:])
