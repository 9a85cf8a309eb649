"""The Self-Instruct bootstrap loop, with the rounds overlapped in one engine feed.

A round: build the instruction prompts (in-context instructions sampled from the human seed pool
and the machine pool), generate them, parse and filter the instructions, keep the novel ones
(exact ROUGE-L rule, in order, so candidates of the same batch see each other), identify
classification tasks and generate instances for the kept ones, filter the instances, then write
kept rows and rejected rows and save the state.

Overlap without changing the result: round k+1's prompts only need the machine pool after round
k's novelty step, so they go into the engine right then, beside round k's classification and
instance requests. Rounds are still finished (written, counted, checkpointed) strictly in order,
and round k+1 is started early only when round k cannot reach the target anyway (accepted tasks
plus every novel instruction still in flight stay below it), so the rounds that run, and every
row they write, are those of the one-step-at-a-time schedule (`overlap_rounds: false`).

Resuming: the state file lists the shards that belong to finished rounds; shards of an
interrupted round are deleted, the machine pool and novelty index are rebuilt in the same order,
and each round's sampling comes from its own seed, so the result equals an uninterrupted run.
Every engine result is in the request cache as soon as it arrives, so the rerun of an interrupted
round only sends the requests that had not come back.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from instructforge import faults
from instructforge.engines.base import (
    Batch,
    Feed,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StructuredOutput,
    check_failures,
)
from instructforge.filters.novelty import NoveltyIndex
from instructforge.records import Example, content_id, meta_json
from instructforge.runs import StageContext, StageOutput, write_json_atomic
from instructforge.selfinstruct import parsing, prompts
from instructforge.selfinstruct.config import SelfInstructConfig
from instructforge.selfinstruct.pool import Task

STATE = "selfinstruct-state.json"
CLASSIFICATION_SHOTS = 4  # seed tasks of each label shown in the classification prompt
PHASES = ("instructions", "classification", "instances")


@dataclass
class Round:
    """One round's own state. Its rows are written, in the order they arose, when it is finished.

    Results are used as they arrive, in request order (a growing prefix): each parsed instruction
    response goes through novelty at once, each novel task's classification request is sent at
    once, and each label's instance request too, so the engine never waits for a whole step.
    """

    number: int
    rng: random.Random
    fingerprints: list[str] = field(default_factory=list)  # of the instruction prompts
    stats: Counter[str] = field(default_factory=Counter)
    # rows in the order the one-step-at-a-time loop produced them: parse and filter drops of every
    # response, then novelty drops, then each task's instance drops and writes
    parse_events: list[tuple[Any, ...]] = field(default_factory=list)
    novelty_events: list[tuple[Any, ...]] = field(default_factory=list)
    task_events: list[tuple[Any, ...]] = field(default_factory=list)
    novel: list[tuple[str, str, str, Any]] = field(default_factory=list)  # key, instruction, fp, decision
    labels: list[bool] = field(default_factory=list)
    machine_size: int = 0  # machine pool size after this round's novelty step
    results: list[GenerationResult] = field(default_factory=list)  # every result used (failure check)
    prompts: Batch | None = None  # the instruction prompts
    parsed: int = 0  # instruction responses used so far
    pool_done: bool = False  # every instruction response used: the machine pool is final
    classified: list[tuple[Batch, int]] = field(default_factory=list)  # per novel task, where its label comes
    instances: list[tuple[Batch, int]] = field(default_factory=list)  # per labelled task, its instance result
    finished_tasks: int = 0  # instance results used so far

    @property
    def done(self) -> bool:
        return self.pool_done and self.finished_tasks == len(self.novel)


def _drop(events: list[tuple[Any, ...]], *args: Any, **kwargs: Any) -> None:
    events.append(("drop", args, kwargs))


class Bootstrap:
    def __init__(self, ctx: StageContext, cfg: SelfInstructConfig, seeds: list[Task], seed: int):
        self.ctx, self.cfg, self.seeds, self.seed = ctx, cfg, seeds, seed
        engine = ctx.engine
        self.engine = engine
        self.model = engine.model_identity()
        self.source = f"selfinstruct:{self.model}"
        self.per_round = cfg.prompts_per_round or engine.batch_hint()
        self.blacklist = parsing.blacklist_pattern(cfg.blacklist)
        self.index = NoveltyIndex(cfg.novelty_threshold, exact_above=cfg.nearest_exact_above)
        self.texts: dict[str, str] = {}  # pool key -> instruction, for provenance and evidence
        for task in seeds:
            self._index(task.key, task.instruction)
        self.machine: list[tuple[str, str]] = []  # (key, instruction) of every novel instruction
        self.round = 0  # last finished round
        self.started = 0  # last round started
        self.accepted = 0  # tasks written (with instances)
        self.stats: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        labelled = [t for t in seeds if t.is_classification is not None]
        self.classification_shots = ([t for t in labelled if t.is_classification][:CLASSIFICATION_SHOTS]
                                     + [t for t in labelled if not t.is_classification][:CLASSIFICATION_SHOTS])
        self.sampling_json = cfg.sampling.model_dump_json()
        self._pending: list[dict[str, Any]] = []  # rejected rows of the round being finished
        self.active: list[Round] = []  # started, not yet finished, oldest first
        self.feed: Feed | None = None
        self.phases: dict[str, Counter[str]] = {p: Counter() for p in PHASES}  # this process's engine work
        self._alpaca_pairs: dict[str, tuple[str, str]] = {}  # alpaca: first (input, output) per instruction

    # -- state -------------------------------------------------------------------------------

    def _index(self, key: str, instruction: str) -> None:
        self.index.add(instruction, key)
        self.texts[key] = instruction

    def resume(self) -> None:
        """Load the last checkpoint (if any) and drop shards written after it."""
        path = self.ctx.work / STATE
        state = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        self.ctx.rollback(state.get("shards", {}))
        if not state:
            return
        self.round = self.started = state["round"]
        self.accepted = state["accepted"]
        self.stats, self.rejected = Counter(state["stats"]), Counter(state["rejected"])
        for key, instruction in state["machine"]:
            self._index(key, instruction)
            self.machine.append((key, instruction))

    def continue_from(self, previous: StageOutput) -> None:
        """Incremental runs: the tasks earlier versions of this stage wrote join the pool (sampled into
        prompts, novelty-checked against), so this version adds only tasks new to all of them."""
        if self.round:  # resumed from a checkpoint, which already holds them
            return
        rows = previous.table().select(["instruction", "source"]).to_pylist()
        for instruction in dict.fromkeys(r["instruction"] for r in rows if r["source"].startswith("selfinstruct:")):
            key = f"selfinstruct-{len(self.machine)}"
            self._index(key, instruction)
            self.machine.append((key, instruction))

    def _checkpoint(self, machine_size: int) -> None:
        if self._pending:
            self.ctx.reject(self._pending, "selfinstruct")
            self._pending = []
        shards = self.ctx.checkpoint()
        write_json_atomic(self.ctx.work / STATE, {
            "round": self.round, "accepted": self.accepted, "stats": dict(self.stats),
            "rejected": dict(self.rejected), "machine": self.machine[:machine_size],
            "shards": shards,
        })
        faults.point("generate:round")  # kill tests: between rounds

    # -- loop --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        columns = (TextColumn("generate"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("tasks, {task.fields[rate]} rejected"), TimeRemainingColumn())
        started = time.perf_counter()
        with self.engine.feed() as feed, Progress(*columns, disable=not sys.stderr.isatty(),
                                                  transient=True) as bar:
            self.feed = feed
            task = bar.add_task("generate", total=cfg.target, completed=self.accepted, rate="-")
            while True:
                moved = False
                for rnd in self.active:
                    moved = self._advance(rnd) or moved
                faults.point("generate:batch")  # kill tests: inside a round
                while self.active and self.active[0].done:
                    self._finish(self.active.pop(0))
                    seen = self.stats["candidates"]
                    bar.update(task, completed=self.accepted,
                               rate=f"{1 - self.stats['novel'] / seen:.0%}" if seen else "-")
                    moved = True
                moved = self._start_rounds() or moved
                if not self.active:
                    break
                if not moved:
                    feed.wait()
            wall = time.perf_counter() - started
            busy = feed.busy_seconds
        return self.summary(wall, busy)

    def _start_rounds(self) -> bool:
        """Start the next round when the one-step-at-a-time loop would certainly run it too."""
        started = False
        while self.started < self.cfg.max_rounds:
            if self.active and (not self.cfg.overlap_rounds or not self.active[-1].pool_done):
                break  # the newest round's novelty step is not done: the pool is not known yet
            in_flight = sum(len(r.novel) for r in self.active)  # at most this many tasks still to come
            if self.accepted + in_flight >= self.cfg.target:
                break
            self.started += 1
            rnd = Round(self.started, random.Random(f"{self.seed}:{self.started}"))
            self.active.append(rnd)
            requests, rnd.fingerprints = (self._alpaca_prompts(rnd) if self.cfg.mode == "alpaca"
                                          else self._instruction_prompts(rnd))
            rnd.prompts = self._submit("instructions", requests)
            started = True
        return started

    def _submit(self, phase: str, requests: list[GenerationRequest]) -> Batch:
        span = self.phases[phase]
        span["first_submit"] = span.get("first_submit") or time.perf_counter()
        return self.feed.submit(requests)

    def _take(self, phase: str, rnd: Round, batch: Batch, i: int) -> GenerationResult | None:
        """Result `i` of `batch` if it is in (counted once, when used), else None."""
        result = batch.result(i)
        if result is None:
            return None
        rnd.results.append(result)
        rnd.stats["requests"] += 1
        rnd.stats["failed_requests"] += not result.ok
        rnd.stats["prompt_tokens"] += result.prompt_tokens
        rnd.stats["completion_tokens"] += result.completion_tokens
        work = self.phases[phase]
        if result.cached:
            work["cached"] += 1
        else:
            work["requests"] += 1
            work["prompt_tokens"] += result.prompt_tokens
            work["completion_tokens"] += result.completion_tokens
            work["last_result"] = time.perf_counter()
        return result

    def _advance(self, rnd: Round) -> bool:
        """Use every result of `rnd` that arrived, in order, and send the requests they allow."""
        before = (rnd.parsed, len(rnd.labels), rnd.finished_tasks, len(rnd.classified), len(rnd.instances))
        alpaca = self.cfg.mode == "alpaca"
        while not rnd.pool_done:
            result = self._take("instructions", rnd, rnd.prompts, rnd.parsed)
            if result is None:
                break
            fp = rnd.fingerprints[rnd.parsed]
            candidates = self._alpaca_response(rnd, result, fp) if alpaca else self._instruction_response(rnd, result, fp)
            self._novel(rnd, candidates)
            rnd.parsed += 1
            if rnd.parsed == len(rnd.fingerprints):
                rnd.pool_done, rnd.machine_size = True, len(self.machine)
        if alpaca:
            rnd.finished_tasks = len(rnd.novel)
            return before[0] != rnd.parsed
        if self.cfg.identify_classification:
            todo = rnd.novel[len(rnd.classified):]
            if todo:
                batch = self._submit("classification", self._classification_requests(todo))
                rnd.classified += [(batch, i) for i in range(len(todo))]
            while len(rnd.labels) < len(rnd.classified):
                result = self._take("classification", rnd, *rnd.classified[len(rnd.labels)])
                if result is None:
                    break
                rnd.labels.append(self._label(rnd, result))
        else:
            rnd.labels += [False] * (len(rnd.novel) - len(rnd.labels))
        first = len(rnd.instances)
        if len(rnd.labels) > first:
            batch = self._submit("instances", self._instance_requests(rnd, first, len(rnd.labels)))
            rnd.instances += [(batch, i) for i in range(len(rnd.labels) - first)]
        while rnd.finished_tasks < len(rnd.instances):
            result = self._take("instances", rnd, *rnd.instances[rnd.finished_tasks])
            if result is None:
                break
            self._task(rnd, rnd.finished_tasks, result)
            rnd.finished_tasks += 1
        return before != (rnd.parsed, len(rnd.labels), rnd.finished_tasks, len(rnd.classified), len(rnd.instances))

    def _finish(self, rnd: Round) -> None:
        """Write a finished round's rows in their original order, then checkpoint it.

        With `engine.on_failure: fail`, a round with failed requests stops the stage before any of
        its rows are written: the rerun resumes at this round and only its failed requests are sent.
        """
        check_failures(self.engine, rnd.results, f"generate round {rnd.number}")
        self.round = rnd.number
        for kind, args, *kwargs in rnd.parse_events + rnd.novelty_events + rnd.task_events:
            if kind == "drop":
                self._drop(rnd.number, *args, **kwargs[0])
            else:
                self._write_task(rnd.number, *args)
        self.stats.update(rnd.stats)
        self._checkpoint(rnd.machine_size)

    def summary(self, wall: float = 0.0, busy: float = 0.0) -> dict[str, Any]:
        s = self.stats

        def ratio(a: float, b: float) -> float:
            return round(a / b, 3) if b else 0.0

        phases = {}
        for phase, work in self.phases.items():
            if not work:
                continue
            span = max(work.get("last_result", 0.0) - work["first_submit"], 0.0)
            phases[phase] = {"requests": work["requests"], "cached": work["cached"],
                             "prompt_tokens": work["prompt_tokens"], "completion_tokens": work["completion_tokens"],
                             "seconds": round(span, 3),
                             "completion_tokens_per_s": ratio(work["completion_tokens"], span)}
        return {"rounds": self.round, "target": self.cfg.target, "accepted_tasks": self.accepted,
                "prompts_per_round": self.per_round,
                "requests": s["requests"], "failed_requests": s["failed_requests"],
                "prompt_tokens": s["prompt_tokens"], "completion_tokens": s["completion_tokens"],
                "responses": s["responses"], "responses_parsed": s["responses_parsed"],
                "parse_yield": ratio(s["responses_parsed"], s["responses"]),
                "candidates": s["candidates"], "candidates_per_response": ratio(s["candidates"], s["responses"]),
                "novel_instructions": s["novel"], "novelty_rate": ratio(s["novel"], s["candidates"]),
                "instances_kept": s["instances"], "instances_per_task": ratio(s["instances"], self.accepted),
                "rejected_by_reason": dict(sorted(self.rejected.items())),
                "reached_target": self.accepted >= self.cfg.target, "model": self.model,
                "backend": getattr(self.engine, "backend", ""),
                # engine work of this process (cache hits excluded). A phase's seconds run from its
                # first request to its last result and overlap the other phases'. Busy fraction:
                # time the engine had work / wall time.
                "this_run": {"seconds": round(wall, 3), "engine_busy_fraction": ratio(busy, wall),
                             "completion_tokens_per_s": ratio(
                                 sum(w["completion_tokens"] for w in self.phases.values()), wall),
                             "phases": phases}}

    # -- instruction step --------------------------------------------------------------------

    def _instruction_prompts(self, rnd: Round) -> tuple[list[GenerationRequest], list[str]]:
        cfg, rng = self.cfg, rnd.rng
        shown_n = cfg.human_examples + cfg.machine_examples
        new = max(cfg.max_list_item - shown_n - 1, 1)
        requests, fingerprints = [], []
        for p in range(self.per_round):
            machine = rng.sample(self.machine, min(cfg.machine_examples, len(self.machine)))
            human = rng.sample(self.seeds, min(shown_n - len(machine), len(self.seeds)))
            shown = [t.instruction for t in human] + [text for _, text in machine]
            rng.shuffle(shown)
            structured = None
            if cfg.structured:
                prompt = prompts.instruction_prompt_json(shown, new)
                structured = StructuredOutput(json_schema=prompts.instruction_schema(new))
                stop: tuple[str, ...] = ()
            else:
                prompt = prompts.instruction_prompt(shown)
                stop = prompts.stop_before_item(cfg.max_list_item)
            sampling = SamplingParams(
                temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                presence_penalty=cfg.sampling.presence_penalty,
                frequency_penalty=cfg.sampling.frequency_penalty, max_tokens=cfg.sampling.max_tokens,
                stop=stop, seed=self._request_seed(rnd.number, p))
            requests.append(self._request(prompt, sampling, structured, chat_suffix=prompts.CHAT_SUFFIX))
            fingerprints.append(content_id(prompt))
        return requests, fingerprints

    def _instruction_response(self, rnd: Round, result: GenerationResult, fp: str) -> list[tuple[str, str]]:
        """The candidates (instruction, prompt fingerprint) of one response that pass the filters."""
        if not self._response_ok(rnd, result, fp):
            return []
        if result.finish_reasons[:1] == ["length"]:
            _drop(rnd.parse_events, result.text, "parse", "truncated", {"prompt_fingerprint": fp})
            return []
        shown_n = self.cfg.human_examples + self.cfg.machine_examples
        items = (parsing.parse_instruction_json(result.text) if self.cfg.structured
                 else parsing.parse_instruction_list(result.text, shown_n + 1))
        if not items:
            _drop(rnd.parse_events, result.text, "parse", "parse_failure", {"prompt_fingerprint": fp})
            return []
        rnd.stats["responses_parsed"] += 1
        candidates = []
        for item in items:
            rnd.stats["candidates"] += 1
            reason = self._instruction_rejection(item)
            if reason:
                _drop(rnd.parse_events, item, "instruction_filter", reason, {"prompt_fingerprint": fp})
            else:
                candidates.append((item, fp))
        return candidates

    def _alpaca_prompts(self, rnd: Round) -> tuple[list[GenerationRequest], list[str]]:
        cfg, rng = self.cfg, rnd.rng
        with_instances = [t for t in self.seeds if t.instances] or self.seeds
        shown_n = min(cfg.alpaca_seed_examples, len(with_instances))
        requests, fingerprints = [], []
        for p in range(self.per_round):
            prompt = prompts.alpaca_prompt(rng.sample(with_instances, shown_n), cfg.alpaca_tasks_per_prompt)
            stop = (f"{shown_n + cfg.alpaca_tasks_per_prompt + 1}. Instruction",)
            sampling = SamplingParams(temperature=cfg.alpaca_temperature, top_p=1.0,
                                      max_tokens=cfg.alpaca_max_tokens, stop=stop,
                                      seed=self._request_seed(rnd.number, p))
            requests.append(self._request(prompt, sampling))
            fingerprints.append(content_id(prompt))
        return requests, fingerprints

    def _alpaca_response(self, rnd: Round, result: GenerationResult, fp: str) -> list[tuple[str, str]]:
        """Whole tasks of one response: the novel ones are written with their (input, output)."""
        if not self._response_ok(rnd, result, fp):  # a truncated response loses only its last task
            return []
        with_instances = [t for t in self.seeds if t.instances] or self.seeds
        shown_n = min(self.cfg.alpaca_seed_examples, len(with_instances))
        tasks, dropped = parsing.parse_alpaca(result.text, shown_n + 1,
                                              truncated=result.finish_reasons[:1] == ["length"])
        for block, reason in dropped:
            _drop(rnd.parse_events, block, "parse", reason, {"prompt_fingerprint": fp})
        rnd.stats["responses_parsed"] += bool(tasks)
        candidates = []
        for instruction, inp, out in tasks:
            rnd.stats["candidates"] += 1
            reason = self._instruction_rejection(instruction) or parsing.instance_rejection(inp, out)
            if reason:
                _drop(rnd.parse_events, instruction, "instruction_filter", reason, {"prompt_fingerprint": fp},
                      inp=inp, out=out)
                continue
            candidates.append((instruction, fp))
            self._alpaca_pairs.setdefault(instruction, (inp, out))
        return candidates

    # -- steps -------------------------------------------------------------------------------

    def _request_seed(self, round_number: int, i: int) -> int:
        return int(content_id(str(self.seed), str(round_number), str(i))[:8], 16)

    def _request(self, prompt: str, sampling: SamplingParams, structured: StructuredOutput | None = None,
                 chat_suffix: str = "") -> GenerationRequest:
        if self.cfg.prompt_style == "chat":
            suffix = "" if structured is not None else chat_suffix
            return GenerationRequest(messages=({"role": "user", "content": prompt + suffix},),
                                     sampling=sampling, structured=structured)
        return GenerationRequest(prompt=prompt, sampling=sampling, structured=structured)

    def _response_ok(self, rnd: Round, result: GenerationResult, fp: str) -> bool:
        """Count an instruction-prompt answer; a failed request is recorded as an engine error."""
        if not result.ok:
            _drop(rnd.parse_events, "", "engine", "engine_error",
                  {"error": result.error or "", "prompt_fingerprint": fp})
            return False
        rnd.stats["responses"] += 1
        return True

    def _instruction_rejection(self, instruction: str) -> str | None:
        cfg = self.cfg
        return parsing.instruction_rejection(instruction, min_words=cfg.min_words, max_words=cfg.max_words,
                                             blacklist=self.blacklist, banned_prefixes=cfg.banned_prefixes)

    def _novel(self, rnd: Round, candidates: list[tuple[str, str]]) -> None:
        """Keep candidates in order whose ROUGE-L to the pool (and to each other) is <= threshold."""
        for instruction, fp in candidates:
            key = f"selfinstruct-{len(self.machine)}"
            decision = self.index.add_if_novel(instruction, key)
            if not decision.novel:
                _drop(rnd.novelty_events, instruction, "novelty", "rouge_l_above_threshold", {
                    "prompt_fingerprint": fp, "nearest_id": decision.nearest_key or "",
                    "nearest_instruction": self.texts.get(decision.nearest_key or "", ""),
                    "score": f"{decision.score:.4f}"})
                continue
            self.texts[key] = instruction
            self.machine.append((key, instruction))
            rnd.stats["novel"] += 1
            rnd.novel.append((key, instruction, fp, decision))
            if self.cfg.mode == "alpaca":
                rnd.task_events.append(("write", (key, instruction, fp, decision,
                                                  [self._alpaca_pairs[instruction]], "unknown")))

    def _classification_requests(self, tasks: list[tuple[str, str, str, Any]]) -> list[GenerationRequest]:
        sampling = SamplingParams(temperature=0.0, max_tokens=self.cfg.classification_max_tokens)
        structured = StructuredOutput(choice=prompts.CLASSIFICATION_CHOICES)
        return [self._request(prompts.classification_prompt(inst, self.classification_shots), sampling, structured)
                for _, inst, _, _ in tasks]

    def _label(self, rnd: Round, result: GenerationResult) -> bool:
        if not result.ok:
            rnd.stats["classification_errors"] += 1
        label = result.ok and result.text.strip().lower().startswith("yes")
        rnd.stats["classification_tasks"] += label
        return label

    def _instance_requests(self, rnd: Round, start: int, end: int) -> list[GenerationRequest]:
        """Instance requests of novel tasks start..end-1 (their examples drawn in task order)."""
        cfg = self.cfg
        by_kind = {kind: [t for t in self.seeds if t.instances and bool(t.is_classification) == kind]
                   or [t for t in self.seeds if t.instances] for kind in (True, False)}
        requests = []
        for i in range(start, end):
            instruction, is_cls = rnd.novel[i][1], rnd.labels[i]
            pool = by_kind[is_cls]
            examples = rnd.rng.sample(pool, min(cfg.instance_examples, len(pool)))
            seed = self._request_seed(rnd.number, 10_000_000 + i)
            if cfg.structured:
                sampling = SamplingParams(temperature=cfg.instance_temperature, max_tokens=cfg.instance_max_tokens,
                                          seed=seed)
                schema = prompts.instance_schema(is_cls, cfg.max_instances)
                requests.append(self._request(prompts.instance_prompt_json(instruction, is_cls, examples),
                                              sampling, StructuredOutput(json_schema=schema)))
            else:
                sampling = SamplingParams(temperature=cfg.instance_temperature, max_tokens=cfg.instance_max_tokens,
                                          stop=prompts.INSTANCE_STOP, seed=seed)
                requests.append(self._request(prompts.instance_prompt(instruction, is_cls, examples), sampling))
        return requests

    def _task(self, rnd: Round, i: int, result: GenerationResult) -> None:
        """Parse and filter task i's instances: its rows (kept or dropped) go to the round's events."""
        cfg, events = self.cfg, rnd.task_events
        (key, instruction, fp, decision), is_cls = rnd.novel[i], rnd.labels[i]
        evidence = {"prompt_fingerprint": fp}
        if not result.ok:
            _drop(events, instruction, "engine", "engine_error", {**evidence, "error": result.error or ""}, task=key)
            return
        truncated = result.finish_reasons[:1] == ["length"]
        if cfg.structured:
            pairs, bad = parsing.parse_instances_json(result.text, is_cls)
            for chunk in bad:
                _drop(events, instruction, "instances", "truncated" if truncated else "parse_failure", evidence,
                      task=key, out=chunk)
        else:
            pairs, bad = parsing.parse_instances(result.text, is_cls)
            for chunk in bad:
                _drop(events, instruction, "instances", "parse_failure", evidence, task=key, out=chunk)
            if truncated and pairs:
                inp, out = pairs.pop()
                _drop(events, instruction, "instances", "truncated", evidence, task=key, inp=inp, out=out)
        kept, dropped, conflicting = parsing.filter_instances(pairs, cfg.max_instances)
        for (inp, out), reason in dropped:
            _drop(events, instruction, "instances", reason, evidence, task=key, inp=inp, out=out)
        if conflicting:
            for inp, out in kept:
                _drop(events, instruction, "instances", "conflicting_outputs", evidence, task=key, inp=inp, out=out)
            return
        if not kept:
            _drop(events, instruction, "instances", "no_valid_instances", evidence, task=key)
            return
        events.append(("write", (key, instruction, fp, decision, kept, "true" if is_cls else "false")))

    # -- rows --------------------------------------------------------------------------------

    def _write_task(self, round_number: int, key: str, instruction: str, fp: str, decision: Any,
                    instances: list[tuple[str, str]], is_classification: str) -> None:
        if self.accepted >= self.cfg.target:  # the last round overshoots: keep the surplus as rejected
            for inp, out in instances:
                self._drop(round_number, instruction, "target", "beyond_target", {"prompt_fingerprint": fp},
                           task=key, inp=inp, out=out)
            return
        meta = meta_json({
            "is_classification": is_classification, "nearest_instruction": self.texts.get(decision.nearest_key or "", ""),
            "nearest_id": decision.nearest_key or "",
            "nearest_score": f"{decision.score:.4f}", "round": str(round_number), "model": self.model,
            "backend": getattr(self.engine, "backend", ""), "prompt_fingerprint": fp,
            "sampling": self.sampling_json, "mode": self.cfg.mode})
        self.ctx.write([Example(instruction=instruction, input=inp, output=out, task=key, source=self.source,
                                template="selfinstruct", meta=meta).model_dump() for inp, out in instances])
        self.accepted += 1
        self.stats["instances"] += len(instances)

    def _drop(self, round_number: int, instruction: str, filter: str, reason: str, evidence: dict[str, str], *,
              task: str = "", inp: str = "", out: str = "") -> None:
        self.rejected[reason] += 1
        row = Example(instruction=instruction, input=inp, output=out, task=task, source=self.source,
                      template="selfinstruct", meta={"round": str(round_number), "model": self.model})
        self._pending.append({**row.model_dump(), "filter": filter, "reason": reason, "evidence": evidence})
