"""Config loading: unknown keys and bad values name the file and key path; YAML errors the line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from instructforge.config import load_config, parse_config
from instructforge.errors import ConfigError


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, "run: {name: exp1, seed: 3}\n"), {"run.seed": 9})
    assert cfg.run.name == "exp1" and cfg.run.seed == 9
    assert cfg.selfinstruct is None and cfg.filters is None  # unconfigured stages
    assert cfg.resolve("data/x.jsonl") == tmp_path / "data/x.jsonl"


@pytest.mark.parametrize("text, expected", [
    ("run: {nmae: x}\n", "run.nmae: unknown key"),
    ("run: {seed: many}\n", "run.seed: Input should be a valid integer"),
    ("run: {on_error: ignore}\n", "run.on_error: Input should be 'strict' or 'record'"),
    ("bogus_section: {}\n", "bogus_section: unknown key"),
    ("run: {name: 'has space'}\n", "run.name: String should match pattern"),
])
def test_bad_values_name_file_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}:1: ") and expected in str(e.value)


def test_yaml_and_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml:2: invalid YAML"):
        load_config(_write(tmp_path, "run:\n  name: x: y\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("run: {name: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"c\.yaml: empty config file"):  # ambiguous: say so
        load_config(_write(tmp_path, "# nothing yet\n"))
    assert load_config(_write(tmp_path, "{}\n")).run.name == "default"  # all defaults, on purpose


def test_cli_prints_one_line_error_and_exits_nonzero(tmp_path):
    path = _write(tmp_path, "run: {nmae: x}\n")
    proc = subprocess.run([sys.executable, "-m", "instructforge.cli", "ingest", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2  # ExitCode.CONFIG
    assert "run.nmae: unknown key" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "instructforge.cli", "--debug", "ingest", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_speed_only_settings_stay_out_of_fingerprints():
    # the stage fingerprint hashes output_settings(): tuning speed or patience never reruns a stage
    a = parse_config({"selfinstruct": {}, "filters": {}})
    b = parse_config({"selfinstruct": {"overlap_rounds": False}, "filters": {"batch_size": 7},
                      "engine": {"timeout_s": 5, "concurrency": 64, "cpu_threads": 2, "backend": "vllm"}})
    for section in ("selfinstruct", "filters", "engine"):
        assert getattr(a, section).output_settings() == getattr(b, section).output_settings()
    c = parse_config({"selfinstruct": {"novelty_threshold": 0.5}, "engine": {"seed": 3}})
    assert c.selfinstruct.output_settings() != a.selfinstruct.output_settings()
    assert c.engine.output_settings() != a.engine.output_settings()
    # nested sections and lists of sections are filtered too
    assert "batch_size" not in a.filters.output_settings() and a.filters.output_settings()["steps"]
