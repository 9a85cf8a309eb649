"""Incremental runs: half then whole == whole, nothing new -> exit 5, kills at any point -> same result.

Ingest + filter + export through the real pipeline (no model): a JSONL source with planted exact
duplicates, near duplicates, near-paraphrased instructions, low-quality rows and benchmark quotes,
split so that the second half duplicates rows of the first half and of itself.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from instructforge.config import parse_config
from instructforge.errors import ExitCode, NothingNew
from instructforge.faults import KILL_AT
from instructforge.pipeline import Pipeline
from instructforge.records import example_id
from instructforge.runs import read_table

WORDS = ["river", "mountain", "garden", "kitchen", "window", "market", "teacher", "student", "doctor",
         "village", "engine", "library", "letter", "music", "summer", "winter", "morning", "evening",
         "family", "friend", "history", "science", "planet", "ocean", "forest", "city", "bridge",
         "station", "museum", "camera", "picture", "story", "paper", "number", "answer", "question",
         "reason", "result", "method", "energy", "water", "light", "sound", "color", "animal", "flower",
         "weather", "journey", "travel", "dinner", "breakfast", "language", "country"]
BENCH = ("which planet in our solar system has the largest number of known moons orbiting "
         "around it according to recent observations")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` alpaca rows; about a third are planted copies or edits of an earlier row."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for i in range(n):
        kind = rng.random() if i >= 4 else 1.0
        if kind < 0.03:  # the same row again (same content id)
            rows.append(dict(rng.choice(rows)))
        elif kind < 0.08:  # exact duplicate of instruction + input, other output
            src = rng.choice(rows)
            rows.append({**src, "output": f"Another answer: {_text(rng, 25)}."})
        elif kind < 0.16:  # near duplicate: one word of the passage changed
            src = rng.choice([r for r in rows if r["input"]])
            words = src["input"].split()
            words[-1] = rng.choice(WORDS)
            rows.append({**src, "input": " ".join(words), "output": f"The result is {_text(rng, 25)}."})
        elif kind < 0.24:  # paraphrased instruction (ROUGE-L > 0.7), new passage
            src = rng.choice(rows)
            words = src["instruction"].split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
            rows.append({"instruction": " ".join(words), "input": _text(rng, 60),
                         "output": f"In short, {_text(rng, 25)}."})
        elif kind < 0.28:  # fails a quality rule
            rows.append(rng.choice([{"instruction": "Do it.", "input": "", "output": _text(rng, 20)},
                                    {"instruction": f"Tell me about the {_text(rng, 8)}.", "input": "",
                                     "output": "I'm sorry, but I cannot help with that request."}]))
        elif kind < 0.31:  # quotes the benchmark
            rows.append({"instruction": f"Answer this question about the {_text(rng, 6)}.",
                         "input": f"{BENCH} {_text(rng, 10)}", "output": f"It is {_text(rng, 20)}."})
        else:
            rows.append({"instruction": f"Explain how the {_text(rng, 10)} works.", "input": _text(rng, 60),
                         "output": f"The {_text(rng, 30)} is the answer."})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def config(tmp: Path, name: str, source: Path, *, incremental: bool = True, min_words: int = 3) -> dict:
    bench = tmp / "bench.jsonl"
    if not bench.exists():
        write_jsonl(bench, [{"question": BENCH}])
    return {
        "run": {"name": name, "root": str(tmp / "runs"), "incremental": incremental},
        "ingest": {"files": [{"path": str(source), "preset": "alpaca", "task": "t"}]},
        "filters": {"batch_size": 64, "steps": [
            {"type": "exact_dedup"},
            {"type": "minhash_dedup", "keep": "first"},
            {"type": "novelty", "threshold": 0.7},
            {"type": "heuristics", "min_words": {"instruction": min_words}},
            {"type": "decontamination", "benchmarks": [{"path": str(bench), "fields": ["question"]}]},
        ]},
        "export": {"formats": ["messages", "alpaca"], "chat_template": "chatml"},
    }


def run(cfg: dict) -> Pipeline:
    pipe = Pipeline(parse_config(cfg))
    pipe.run()
    return pipe


def outcome(run_dir: Path) -> dict:
    """Kept ids and (id, filter, reason) of every removed row, over every version of each stage."""
    kept = read_table(run_dir / "03-filter" / "data").column("id").to_pylist()
    rejected = read_table(run_dir / "03-filter" / "rejected").select(["id", "filter", "reason"]).to_pylist()
    exported = read_table(run_dir / "04-export" / "data").column("id").to_pylist()
    assert len(kept) == len(set(kept)) and sorted(exported) == sorted(kept)
    return {"kept": sorted(kept), "rejected": sorted((r["id"], r["filter"], r["reason"]) for r in rejected)}


def versions(stage_dir: Path) -> list[int]:
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    return [v["version"] for v in manifest["incremental"]["versions"]]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return make_rows(240)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, rows) -> dict:
    tmp = tmp_path_factory.mktemp("whole")
    run(config(tmp, "whole", write_jsonl(tmp / "src.jsonl", rows), incremental=False))
    return outcome(tmp / "runs" / "whole")


def test_half_then_whole_equals_whole(tmp_path, rows, whole):
    # every filter type removes something, or the comparison proves little; some rows repeat whole
    assert len({json.dumps(r) for r in rows[120:]} & {json.dumps(r) for r in rows[:120]}) > 1
    assert {f for _, f, _ in whole["rejected"]} == {"exact_dedup", "minhash_dedup", "novelty", "heuristics",
                                                    "decontamination"}
    source = write_jsonl(tmp_path / "src.jsonl", rows[:120])
    cfg = config(tmp_path, "inc", source)
    run(cfg)
    run_dir = tmp_path / "runs" / "inc"
    first = outcome(run_dir)
    write_jsonl(source, rows)
    pipe = run(cfg)
    assert outcome(run_dir) == whole
    assert set(first["kept"]) <= set(whole["kept"])
    for stage in ("01-ingest", "03-filter", "04-export"):
        assert versions(run_dir / stage) == [1, 2]
    # the second run read only the new rows
    assert pipe.outputs["ingest"].stats()["rows_out"] == 120  # every row of the second half is new,
    # including copies of first-half rows (one more copy than before is one new row)
    assert sorted(p.name for p in (run_dir / "03-filter" / "data").glob("part-v0002-*"))
    assert pipe.outputs["filter"].stats()["rows_in"] == pipe.outputs["ingest"].stats()["rows_out"]
    # the Hub folder grew by version-2 shards next to version 1's; the card counts both and names v2
    hub = run_dir / "04-export" / "hub"
    for version in ("v0001", "v0002"):
        assert list(hub.glob(f"data/sft/train-{version}-*.parquet"))
    assert pq.read_table(hub / "data" / "sft").num_rows == len(whole["kept"])
    facts = json.loads((run_dir / "04-export" / "card.json").read_text())
    assert facts["version"] == 2 and sum(facts["counts"]["sft"].values()) == len(whole["kept"])
    assert "Dataset version 2" in (hub / "README.md").read_text()

    with pytest.raises(NothingNew, match="nothing was done"):
        run(cfg)
    assert versions(run_dir / "04-export") == [1, 2]


def test_config_change_rebuilds_as_a_new_full_version(tmp_path, rows):
    source = write_jsonl(tmp_path / "src.jsonl", rows[:120])
    run(config(tmp_path, "inc", source))
    write_jsonl(source, rows)
    run(config(tmp_path, "inc", source, min_words=5))  # new rows and a stricter rule at once
    run(config(tmp_path, "full", source, incremental=False, min_words=5))
    run_dir = tmp_path / "runs" / "inc"
    assert outcome(run_dir) == outcome(tmp_path / "runs" / "full")
    manifest = json.loads((run_dir / "03-filter" / "manifest.json").read_text())
    assert [(v["version"], v["full"], v["full_because"]) for v in manifest["incremental"]["versions"]] == [
        (2, True, "its config section changed")]
    assert [p.name for p in (run_dir / "03-filter" / "data").glob("part-*")] == ["part-v0002-00000.parquet"]


def _cli(cfg_path: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_AT, None)
    if kill_at:
        env[KILL_AT] = kill_at  # instructforge.faults: SIGKILL itself on reaching that point
    return subprocess.run([sys.executable, "-m", "instructforge.cli", "run", str(cfg_path)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


# through one incremental run: ingest written but not renamed into place, renamed; filter mid-way
# (its first file written), complete but not renamed; export's shards written but not its card,
# complete but not renamed. Each killed run resumes the one before.
KILL_POINTS = ["ingest:closed", "ingest:done", "written", "filter:done", "export:card", "export:done"]


def test_killed_incremental_runs_resume_to_the_same_result(tmp_path, rows, whole):
    source = write_jsonl(tmp_path / "src.jsonl", rows[:120])
    cfg_path = tmp_path / "inc.yaml"
    cfg_path.write_text(yaml.safe_dump(config(tmp_path, "inc", source)))
    run_dir = tmp_path / "runs" / "inc"
    assert _cli(cfg_path).returncode == 0
    write_jsonl(source, rows)
    for point in KILL_POINTS:
        proc = _cli(cfg_path, point)
        assert proc.returncode == -signal.SIGKILL, f"{point} was not reached: {proc.stderr}"
        assert versions(run_dir / "04-export") == [1]  # the published export is untouched until the end
    proc = _cli(cfg_path)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert outcome(run_dir) == whole
    assert versions(run_dir / "04-export") == [1, 2]
    assert not list(run_dir.glob(".*.work"))
    proc = _cli(cfg_path)
    assert proc.returncode == ExitCode.NOTHING_NEW and "nothing was done" in proc.stderr, proc.stderr


def test_seen_rows_are_read_from_the_stage_itself(tmp_path, rows):
    """The seen set is the ingest shards: a removed source row is not new again when it comes back."""
    source = write_jsonl(tmp_path / "src.jsonl", rows[:60])
    cfg = config(tmp_path, "inc", source)
    run(cfg)
    write_jsonl(source, rows[30:90])  # 30 rows gone, 30 new
    pipe = run(cfg)
    assert pipe.outputs["ingest"].stats()["rows_out"] + pipe.outputs["ingest"].stats()["seen_skipped"] == 60
    write_jsonl(source, rows[:90])  # the 30 that went come back: seen before
    with pytest.raises(NothingNew):
        run(cfg)
    ids = pq.read_table(tmp_path / "runs" / "inc" / "01-ingest" / "data").column("id").to_pylist()
    assert Counter(ids) == Counter(example_id("t", r["instruction"], r["input"], r["output"]) for r in rows[:90])


def test_scheduled_config_twice_then_one_new_row(tmp_path):
    """configs/scheduled.yaml through the CLI: a second run exits 5; a row added to a source is all
    the next run processes."""
    repo = Path(__file__).resolve().parents[1]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes((repo / "ingest" / "data" / "seed_tasks.jsonl").read_bytes())
    sets = ["--set", f"run.root={tmp_path / 'runs'}", "--set", f"ingest.seeds=[{{path: {seeds}}}]"]
    config = repo / "configs" / "scheduled.yaml"
    run_dir = tmp_path / "runs" / "scheduled"

    def cli() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "instructforge.cli", "run", str(config), *sets],
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=600, check=False)

    first = cli()
    assert first.returncode == ExitCode.OK, first.stderr
    second = cli()
    assert second.returncode == ExitCode.NOTHING_NEW and "nothing was done" in second.stderr, second.stderr
    assert versions(run_dir / "04-export") == [1]
    last = json.loads((run_dir / "last-run.json").read_text())
    assert (last["exit_code"], last["export_version"]) == (ExitCode.NOTHING_NEW, 1)

    new = {"id": "seed_task_new", "name": "name_a_boat", "is_classification": False,
           "instruction": "Suggest three friendly names for a small wooden sailing boat owned by a family.",
           "instances": [{"input": "", "output": "Sea Biscuit, Little Wren and Morning Tide."}]}
    with seeds.open("a", encoding="utf-8") as f:
        f.write(json.dumps(new) + "\n")
    third = cli()
    assert third.returncode == ExitCode.OK, third.stderr
    for stage in ("01-ingest", "03-filter", "04-export"):
        assert versions(run_dir / stage) == [1, 2]
    added = read_table(run_dir / "01-ingest" / "data", versions=[2]).to_pylist()
    assert [r["instruction"] for r in added] == [new["instruction"]]
    assert json.loads((run_dir / "03-filter" / "stats.json").read_text())["rows_in"] == 1
    exported = read_table(run_dir / "04-export" / "data", versions=[2]).column("instruction").to_pylist()
    assert exported == [new["instruction"]]
    last = json.loads((run_dir / "last-run.json").read_text())
    assert (last["exit_code"], last["export_version"]) == (ExitCode.OK, 2)
    assert cli().returncode == ExitCode.NOTHING_NEW


def test_generate_continues_from_the_machine_tasks_of_earlier_versions(tmp_path):
    """Self-Instruct in an incremental run: version 2 (new seeds) prompts from and novelty-checks
    against version 1's machine tasks, so it adds only tasks new to them (the scripted engine of the
    generate tests answers the same request the same way: without the pool, v2 would repeat v1)."""
    from test_selfinstruct_stage import ScriptedEngine, seed_rows

    from instructforge.filters.novelty import rouge_l
    from instructforge.incremental import Incremental
    from instructforge.runs import RunDir
    from instructforge.selfinstruct import stage as generate

    cfg = parse_config({"run": {"seed": 7, "incremental": True}, "selfinstruct": {"target": 12, "prompts_per_round": 4}})
    inc, engine = Incremental(RunDir(tmp_path)), ScriptedEngine()

    def run_both(rows: list[dict]) -> None:
        ingest, _ = inc.run_stage(1, "ingest", config={"files": {"rows": len(rows)}}, code="t", inputs=[],
                                  fn=lambda ctx: ctx.write(rows))
        inc.run_stage(2, "generate", config={"section": cfg.selfinstruct.model_dump(mode="json")}, code="t",
                      inputs=[ingest], fn=generate.run, resumable=True, section=cfg.selfinstruct,
                      run=cfg.context(), engine_factory=lambda: engine)

    rows = seed_rows(12)
    run_both(rows[:12])  # 6 seed tasks
    run_both(rows)  # 6 more
    out = tmp_path / "02-generate"
    assert versions(out) == [1, 2]

    def tasks(version: int) -> list[str]:
        table = read_table(out / "data", versions=[version])
        return list(dict.fromkeys(table.column("instruction").to_pylist()))

    first, second = tasks(1), tasks(2)
    assert len(first) == len(second) == 12
    assert all(rouge_l(b, a) <= cfg.selfinstruct.novelty_threshold for b in second for a in first)


def _two_sources(tmp: Path, name: str, a: Path, b: Path, incremental: bool = True) -> dict:
    cfg = config(tmp, name, a, incremental=incremental)
    cfg["run"]["on_error"] = "record"
    cfg["ingest"]["files"].append({"path": str(b), "preset": "alpaca", "task": "t"})
    return cfg


def _ingested(run_dir: Path) -> dict:
    """Every ingest row (kept, and rejected with its location) over all versions, by id."""
    data = read_table(run_dir / "01-ingest" / "data").select(["id", "source", "meta"]).to_pylist()
    rejected = read_table(run_dir / "01-ingest" / "rejected").select(["id", "reason", "meta"]).to_pylist()
    return {"kept": sorted((r["id"], r["source"], dict(r["meta"])["row"]) for r in data),
            "rejected": sorted((r["id"], r["reason"], dict(r["meta"]).get("line", "")) for r in rejected)}


def _sources_read(pipe: Pipeline) -> tuple[list[str], dict[str, int]]:
    stats = pipe.outputs["ingest"].stats()
    return stats["files_unchanged"], stats["files_read_from"]


def test_unchanged_file_skipped_and_appended_tail_read_from_its_old_end(tmp_path, rows):
    """Source a unchanged, b grown by appended lines (a bad one, a copy of a row of a and of b's own
    head among them): a is not read, b from its old end; ingest rows, their line numbers, the bad
    line's location and the filter outcome equal one run over both files."""
    a = write_jsonl(tmp_path / "a.jsonl", rows[:80])
    b = write_jsonl(tmp_path / "b.jsonl", rows[80:140])
    cfg = _two_sources(tmp_path, "inc", a, b)
    assert _sources_read(run(cfg)) == ([], {})
    size = b.stat().st_size
    with b.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in [rows[5], rows[90], *rows[140:200]]) + "{not json\n\n")
        f.write("".join(json.dumps(r) + "\n" for r in rows[200:]))
    pipe = run(cfg)
    assert _sources_read(pipe) == ([str(a)], {str(b): size})
    assert json.loads((tmp_path / "runs" / "inc" / "01-ingest" / "manifest.json").read_text())[
        "incremental"]["versions"][-1]["sources"][str(b)]["read"] == f"from byte {size}"
    run(_two_sources(tmp_path, "full", a, b, incremental=False))
    inc, full = tmp_path / "runs" / "inc", tmp_path / "runs" / "full"
    assert _ingested(inc) == _ingested(full)
    assert any(line == str(60 + 2 + 60 + 1) for _, _, line in _ingested(inc)["rejected"])  # the bad line
    assert outcome(inc) == outcome(full)
    with pytest.raises(NothingNew):  # both unchanged now: neither is read
        run(cfg)


def test_file_edited_in_the_middle_is_read_whole(tmp_path, rows):
    """b grew, but a row in its middle changed too: b is read whole (a, unchanged, is not), and the
    rows written are every row of a and the edited b not seen before, counted, at their lines in b."""
    a = write_jsonl(tmp_path / "a.jsonl", rows[:80])
    b = write_jsonl(tmp_path / "b.jsonl", rows[80:140])
    cfg = _two_sources(tmp_path, "inc", a, b)
    run(cfg)
    edited = [*rows[80:100], {**rows[100], "output": "An edited answer with enough words in it."},
              *rows[101:240]]
    write_jsonl(b, edited)  # longer than before, but its old bytes are not a prefix of it
    pipe = run(cfg)
    assert _sources_read(pipe) == ([str(a)], {})
    manifest = json.loads((tmp_path / "runs" / "inc" / "01-ingest" / "manifest.json").read_text())
    assert manifest["incremental"]["versions"][-1]["sources"][str(b)]["read"] == "whole"

    def ids(rs: list[dict]) -> Counter:
        return Counter(example_id("t", r["instruction"], r["input"], r["output"]) for r in rs)

    new = read_table(tmp_path / "runs" / "inc" / "01-ingest" / "data", versions=[2]).to_pylist()
    assert Counter(r["id"] for r in new) == ids(rows[:80] + edited) - ids(rows[:140])
    edited_id = example_id("t", edited[20]["instruction"], edited[20]["input"], edited[20]["output"])
    assert [dict(r["meta"])["row"] for r in new if r["id"] == edited_id] == ["21"]


def test_jsonl_span_reads_only_its_bytes_with_lines_continuing(tmp_path, rows):
    """What incremental ingest reads of a grown file: from the old end up to the size it planned
    with (a row appended meanwhile is the next run's), numbered by its line in the whole file."""
    from instructforge.ingest.readers import BadInput, read_jsonl

    path = write_jsonl(tmp_path / "s.jsonl", rows[:3])
    old = path.stat().st_size
    with path.open("a", encoding="utf-8") as f:
        f.write("\n" + json.dumps(rows[3]) + "\n" + json.dumps(rows[4]) + "\n")
    planned = path.stat().st_size
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(rows[5]) + "\n")  # appended while the run reads
    got = [(r.line, r.data) for r in read_jsonl(path, BadInput(strict=True), (old, 3, planned))]
    assert got == [(5, rows[3]), (6, rows[4])]


def test_appended_csv_tail_equals_one_run_over_the_whole_file(tmp_path, rows):
    """A CSV source that grew (a quoted cell over two lines and a row with too many cells among the
    new lines) is read after its header from the old end: same ingest rows and lines as a whole read."""
    import csv

    def write(path: Path, rs: list[dict], mode: str) -> None:
        with path.open(mode, encoding="utf-8", newline="") as f:
            out = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
            if mode == "w":
                out.writeheader()
            out.writerows(rs)

    a, b = write_jsonl(tmp_path / "a.jsonl", rows[:10]), tmp_path / "b.csv"
    write(b, rows[10:100], "w")
    cfg = _two_sources(tmp_path, "inc", a, b)
    run(cfg)
    size = b.stat().st_size
    write(b, [rows[20], {**rows[100], "input": "first line\nsecond line of the passage"}], "a")
    with b.open("a", encoding="utf-8") as f:
        f.write("too,many,cells,here\n")
    write(b, rows[101:160], "a")
    pipe = run(cfg)
    assert _sources_read(pipe) == ([str(a)], {str(b): size})
    run(_two_sources(tmp_path, "full", a, b, incremental=False))
    inc, full = _ingested(tmp_path / "runs" / "inc"), _ingested(tmp_path / "runs" / "full")
    assert inc == full
    assert any(line == str(1 + 90 + 1 + 2 + 1) for _, _, line in inc["rejected"])  # the row with 4 cells
