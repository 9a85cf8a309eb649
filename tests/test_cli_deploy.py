"""deploy/: the systemd service and the cron line run exactly the command they contain, from an
install directory laid out like /opt/instructforge, with the exit codes and last-run.json a
scheduler reads."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from instructforge.config import load_config
from instructforge.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
INSTALL = "/opt/instructforge"  # where deploy/ expects the checkout


def _install(tmp_path: Path) -> Path:
    """An install directory: the project's configs and its virtual environment."""
    root = tmp_path / "opt"
    root.mkdir()
    shutil.copytree(REPO / "configs", root / "configs")
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read(REPO / "deploy" / "instructforge.service")
    return parser["Service"]


def _last_run(root: Path) -> dict:
    cfg = load_config(root / "configs" / "scheduled.yaml")
    return json.loads((root / cfg.run.path / "last-run.json").read_text(encoding="utf-8"))


def test_systemd_service_and_cron_line_run_the_scheduled_config(tmp_path):
    root = _install(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INSTRUCTFORGE_CACHE": str(tmp_path / "cache")}
    service = _service()
    assert service["Type"] == "oneshot" and service["WorkingDirectory"] == INSTALL
    assert {ExitCode.NOTHING_NEW, ExitCode.LOCKED} <= {int(c) for c in service["SuccessExitStatus"].split()}
    timer = (REPO / "deploy" / "instructforge.timer").read_text(encoding="utf-8")
    assert "Unit=instructforge.service" in timer and "OnCalendar=" in timer

    command = shlex.split(service["ExecStart"].replace(INSTALL, str(root)))
    first = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == ExitCode.OK, first.stderr[-3000:]
    last = _last_run(root)
    assert last["status"] == "ok" and last["exit_code"] == 0 and last["stages"][0]["stage"] == "ingest"
    assert all(json.loads(line) for line in first.stderr.splitlines() if line.strip())  # JSON log lines
    assert (root / load_config(root / "configs" / "scheduled.yaml").run.path / "instructforge.yaml").exists()

    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == ExitCode.NOTHING_NEW, again.stderr[-3000:]
    assert _last_run(root)["status"] == "nothing_new"

    cron = [line for line in (REPO / "deploy" / "cron.example").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    assert len(cron) == 1
    fields = re.split(r"\s+", cron[0], maxsplit=5)
    assert len(fields) == 6  # five time fields, then the command
    line = fields[5].replace(INSTALL, str(root))
    by_cron = subprocess.run(["/bin/sh", "-c", line], env=env, capture_output=True, text=True, timeout=600,
                             check=False)
    assert by_cron.returncode == ExitCode.NOTHING_NEW, by_cron.stderr
    logged = (root / "logs" / "instructforge.log").read_text(encoding="utf-8").splitlines()
    assert logged and all(json.loads(x) for x in logged)
    assert _last_run(root)["status"] == "nothing_new"
