"""The Self-Instruct bootstrap loop, one round per engine call, checkpointed after every round.

A round: build `prompts_per_round` instruction prompts (in-context instructions sampled from the
human seed pool and the machine pool), generate them in one batch, parse and filter the
instructions, keep the novel ones (exact ROUGE-L rule, in order, so candidates of the same batch
see each other), identify classification tasks and generate instances for the kept ones (one
batch each), filter the instances, then write kept rows and rejected rows and save the state.

Resuming: the state file lists the shards that belong to finished rounds; shards of an
interrupted round are deleted, the machine pool and novelty index are rebuilt in the same order,
and each round's sampling comes from its own seed, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from instructforge.engines.base import GenerationRequest, GenerationResult, SamplingParams, StructuredOutput
from instructforge.filters.novelty import NoveltyIndex
from instructforge.records import Example, content_id, meta_json
from instructforge.runs import StageContext, write_json_atomic
from instructforge.selfinstruct import parsing, prompts
from instructforge.selfinstruct.config import SelfInstructConfig
from instructforge.selfinstruct.pool import Task

STATE = "selfinstruct-state.json"
CLASSIFICATION_SHOTS = 4  # seed tasks of each label shown in the classification prompt


class Bootstrap:
    def __init__(self, ctx: StageContext, cfg: SelfInstructConfig, seeds: list[Task], seed: int):
        self.ctx, self.cfg, self.seeds, self.seed = ctx, cfg, seeds, seed
        engine = ctx.engine
        self.engine = engine
        self.model = engine.model_identity()
        self.source = f"selfinstruct:{self.model}"
        self.blacklist = parsing.blacklist_pattern(cfg.blacklist)
        self.index = NoveltyIndex(cfg.novelty_threshold, exact_above=cfg.nearest_exact_above)
        self.texts: dict[str, str] = {}  # pool key -> instruction, for provenance and evidence
        for task in seeds:
            self._index(task.key, task.instruction)
        self.machine: list[tuple[str, str]] = []  # (key, instruction) of every novel instruction
        self.round = 0
        self.accepted = 0  # tasks written (with instances)
        self.stats: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        labelled = [t for t in seeds if t.is_classification is not None]
        self.classification_shots = ([t for t in labelled if t.is_classification][:CLASSIFICATION_SHOTS]
                                     + [t for t in labelled if not t.is_classification][:CLASSIFICATION_SHOTS])
        self.sampling_json = cfg.sampling.model_dump_json()
        self._pending: list[dict[str, Any]] = []  # rejected rows of the current round

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
        self.round, self.accepted = state["round"], state["accepted"]
        self.stats, self.rejected = Counter(state["stats"]), Counter(state["rejected"])
        for key, instruction in state["machine"]:
            self._index(key, instruction)
            self.machine.append((key, instruction))

    def _checkpoint(self) -> None:
        if self._pending:
            self.ctx.reject(self._pending, "selfinstruct")
            self._pending = []
        shards = self.ctx.checkpoint()
        write_json_atomic(self.ctx.work / STATE, {
            "round": self.round, "accepted": self.accepted, "stats": dict(self.stats),
            "rejected": dict(self.rejected), "machine": self.machine,
            "shards": shards,
        })

    # -- loop --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        columns = (TextColumn("generate"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("tasks, {task.fields[rate]} rejected"), TimeRemainingColumn())
        with Progress(*columns, disable=not sys.stderr.isatty(), transient=True) as bar:
            task = bar.add_task("generate", total=cfg.target, completed=self.accepted, rate="-")
            while self.accepted < cfg.target and self.round < cfg.max_rounds:
                self.round += 1
                if cfg.mode == "alpaca":
                    self._alpaca_round()
                else:
                    self._selfinstruct_round()
                self._checkpoint()
                seen = self.stats["candidates"]
                bar.update(task, completed=self.accepted,
                           rate=f"{1 - self.stats['novel'] / seen:.0%}" if seen else "-")
        return self.summary()

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {"rounds": self.round, "target": self.cfg.target, "accepted_tasks": self.accepted,
                "requests": s["requests"], "prompt_tokens": s["prompt_tokens"],
                "completion_tokens": s["completion_tokens"], "responses": s["responses"],
                "candidates": s["candidates"], "novel_instructions": s["novel"],
                "parse_yield": round(s["candidates"] / s["responses"], 3) if s["responses"] else 0.0,
                "instances_kept": s["instances"], "rejected_by_reason": dict(sorted(self.rejected.items())),
                "reached_target": self.accepted >= self.cfg.target, "model": self.model,
                "backend": getattr(self.engine, "backend", "")}

    # -- rounds ------------------------------------------------------------------------------

    def _selfinstruct_round(self) -> None:
        cfg = self.cfg
        rng = random.Random(f"{self.seed}:{self.round}")
        shown_n = cfg.human_examples + cfg.machine_examples
        requests, fingerprints = [], []
        for p in range(cfg.prompts_per_round):
            machine = rng.sample(self.machine, min(cfg.machine_examples, len(self.machine)))
            human = rng.sample(self.seeds, min(shown_n - len(machine), len(self.seeds)))
            shown = [t.instruction for t in human] + [text for _, text in machine]
            rng.shuffle(shown)
            prompt = prompts.instruction_prompt(shown)
            sampling = SamplingParams(
                temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                presence_penalty=cfg.sampling.presence_penalty,
                frequency_penalty=cfg.sampling.frequency_penalty, max_tokens=cfg.sampling.max_tokens,
                stop=prompts.stop_before_item(cfg.max_list_item), seed=self._request_seed(p))
            requests.append(self._request(prompt, sampling, chat_suffix=prompts.CHAT_SUFFIX))
            fingerprints.append(content_id(prompt))
        results = self._generate(requests)
        candidates: list[tuple[str, str]] = []  # (instruction, prompt fingerprint)
        for result, fp in zip(results, fingerprints, strict=True):
            if not self._response_ok(result, fp):
                continue
            if result.finish_reasons[:1] == ["length"]:
                self._drop(result.text, "parse", "truncated", {"prompt_fingerprint": fp})
                continue
            items = parsing.parse_instruction_list(result.text, shown_n + 1)
            if not items:
                self._drop(result.text, "parse", "parse_failure", {"prompt_fingerprint": fp})
            for item in items:
                self.stats["candidates"] += 1
                reason = self._instruction_rejection(item)
                if reason:
                    self._drop(item, "instruction_filter", reason, {"prompt_fingerprint": fp})
                else:
                    candidates.append((item, fp))
        novel = self._novel(candidates)
        labels = self._classify([inst for _, inst, _, _ in novel])
        self._instances(novel, labels, rng)

    def _alpaca_round(self) -> None:
        cfg = self.cfg
        rng = random.Random(f"{self.seed}:{self.round}")
        with_instances = [t for t in self.seeds if t.instances] or self.seeds
        shown_n = min(cfg.alpaca_seed_examples, len(with_instances))
        requests, fingerprints = [], []
        for p in range(cfg.prompts_per_round):
            prompt = prompts.alpaca_prompt(rng.sample(with_instances, shown_n), cfg.alpaca_tasks_per_prompt)
            stop = (f"{shown_n + cfg.alpaca_tasks_per_prompt + 1}. Instruction",)
            sampling = SamplingParams(temperature=cfg.alpaca_temperature, top_p=1.0,
                                      max_tokens=cfg.alpaca_max_tokens, stop=stop, seed=self._request_seed(p))
            requests.append(self._request(prompt, sampling))
            fingerprints.append(content_id(prompt))
        results = self._generate(requests)
        candidates: list[tuple[str, str]] = []
        pairs: dict[str, tuple[str, str]] = {}
        for result, fp in zip(results, fingerprints, strict=True):
            if not self._response_ok(result, fp):  # a truncated response loses only its last task
                continue
            tasks, dropped = parsing.parse_alpaca(result.text, shown_n + 1,
                                                  truncated=result.finish_reasons[:1] == ["length"])
            for block, reason in dropped:
                self._drop(block, "parse", reason, {"prompt_fingerprint": fp})
            for instruction, inp, out in tasks:
                self.stats["candidates"] += 1
                reason = self._instruction_rejection(instruction) or parsing.instance_rejection(inp, out)
                if reason:
                    self._drop(instruction, "instruction_filter", reason, {"prompt_fingerprint": fp},
                               inp=inp, out=out)
                    continue
                candidates.append((instruction, fp))
                pairs.setdefault(instruction, (inp, out))
        for key, instruction, fp, decision in self._novel(candidates):
            self._write_task(key, instruction, fp, decision, [pairs[instruction]], "unknown")

    # -- steps -------------------------------------------------------------------------------

    def _request_seed(self, i: int) -> int:
        return int(content_id(str(self.seed), str(self.round), str(i))[:8], 16)

    def _request(self, prompt: str, sampling: SamplingParams, structured: StructuredOutput | None = None,
                 chat_suffix: str = "") -> GenerationRequest:
        if self.cfg.prompt_style == "chat":
            return GenerationRequest(messages=({"role": "user", "content": prompt + chat_suffix},),
                                     sampling=sampling, structured=structured)
        return GenerationRequest(prompt=prompt, sampling=sampling, structured=structured)

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results = self.engine.generate(requests)
        self.stats["requests"] += len(requests)
        for r in results:
            self.stats["prompt_tokens"] += r.prompt_tokens
            self.stats["completion_tokens"] += r.completion_tokens
        return results

    def _response_ok(self, result: GenerationResult, fp: str) -> bool:
        """Count an instruction-prompt response; a failed one is recorded as an engine error."""
        self.stats["responses"] += 1
        if not result.ok:
            self._drop("", "engine", "engine_error", {"error": result.error or "", "prompt_fingerprint": fp})
            return False
        return True

    def _instruction_rejection(self, instruction: str) -> str | None:
        cfg = self.cfg
        return parsing.instruction_rejection(instruction, min_words=cfg.min_words, max_words=cfg.max_words,
                                             blacklist=self.blacklist, banned_prefixes=cfg.banned_prefixes)

    def _novel(self, candidates: list[tuple[str, str]]) -> list[tuple[str, str, str, Any]]:
        """Keep candidates in order whose ROUGE-L to the pool (and to each other) is <= threshold."""
        kept = []
        for instruction, fp in candidates:
            key = f"selfinstruct-{len(self.machine)}"
            decision = self.index.add_if_novel(instruction, key)
            if not decision.novel:
                self._drop(instruction, "novelty", "rouge_l_above_threshold", {
                    "prompt_fingerprint": fp, "nearest_id": decision.nearest_key or "",
                    "nearest_instruction": self.texts.get(decision.nearest_key or "", ""),
                    "score": f"{decision.score:.4f}"})
                continue
            self.texts[key] = instruction
            self.machine.append((key, instruction))
            self.stats["novel"] += 1
            kept.append((key, instruction, fp, decision))
        return kept

    def _classify(self, instructions: list[str]) -> list[bool]:
        if not instructions or not self.cfg.identify_classification:
            return [False] * len(instructions)
        sampling = SamplingParams(temperature=0.0, max_tokens=self.cfg.classification_max_tokens)
        structured = StructuredOutput(choice=prompts.CLASSIFICATION_CHOICES)
        results = self._generate([
            self._request(prompts.classification_prompt(inst, self.classification_shots), sampling, structured)
            for inst in instructions])
        labels = []
        for r in results:
            if not r.ok:
                self.stats["classification_errors"] += 1
            labels.append(r.ok and r.text.strip().lower().startswith("yes"))
        self.stats["classification_tasks"] += sum(labels)
        return labels

    def _instances(self, novel: list[tuple[str, str, str, Any]], labels: list[bool], rng: random.Random) -> None:
        cfg = self.cfg
        if not novel:
            return
        by_kind = {kind: [t for t in self.seeds if t.instances and bool(t.is_classification) == kind]
                   or [t for t in self.seeds if t.instances] for kind in (True, False)}
        requests = []
        for i, ((_, instruction, _, _), is_cls) in enumerate(zip(novel, labels, strict=True)):
            pool = by_kind[is_cls]
            examples = rng.sample(pool, min(cfg.instance_examples, len(pool)))
            sampling = SamplingParams(temperature=cfg.instance_temperature, max_tokens=cfg.instance_max_tokens,
                                      stop=prompts.INSTANCE_STOP, seed=self._request_seed(10_000_000 + i))
            requests.append(self._request(prompts.instance_prompt(instruction, is_cls, examples), sampling))
        for (key, instruction, fp, decision), is_cls, result in zip(
                novel, labels, self._generate(requests), strict=True):
            evidence = {"prompt_fingerprint": fp}
            if not result.ok:
                self._drop(instruction, "engine", "engine_error", {**evidence, "error": result.error or ""}, task=key)
                continue
            pairs, bad = parsing.parse_instances(result.text, is_cls)
            for chunk in bad:
                self._drop(instruction, "instances", "parse_failure", evidence, task=key, out=chunk)
            if result.finish_reasons[:1] == ["length"] and pairs:
                inp, out = pairs.pop()
                self._drop(instruction, "instances", "truncated", evidence, task=key, inp=inp, out=out)
            kept, dropped, conflicting = parsing.filter_instances(pairs, cfg.max_instances)
            for (inp, out), reason in dropped:
                self._drop(instruction, "instances", reason, evidence, task=key, inp=inp, out=out)
            if conflicting:
                for inp, out in kept:
                    self._drop(instruction, "instances", "conflicting_outputs", evidence, task=key, inp=inp, out=out)
                continue
            if not kept:
                self._drop(instruction, "instances", "no_valid_instances", evidence, task=key)
                continue
            self._write_task(key, instruction, fp, decision, kept, "true" if is_cls else "false")

    def _write_task(self, key: str, instruction: str, fp: str, decision: Any,
                    instances: list[tuple[str, str]], is_classification: str) -> None:
        if self.accepted >= self.cfg.target:  # the last round overshoots: keep the surplus as rejected
            for inp, out in instances:
                self._drop(instruction, "target", "beyond_target", {"prompt_fingerprint": fp},
                           task=key, inp=inp, out=out)
            return
        meta = meta_json({
            "is_classification": is_classification, "nearest_instruction": self.texts.get(decision.nearest_key or "", ""),
            "nearest_id": decision.nearest_key or "",
            "nearest_score": f"{decision.score:.4f}", "round": str(self.round), "model": self.model,
            "backend": getattr(self.engine, "backend", ""), "prompt_fingerprint": fp,
            "sampling": self.sampling_json, "mode": self.cfg.mode})
        self.ctx.write([Example(instruction=instruction, input=inp, output=out, task=key, source=self.source,
                                template="selfinstruct", meta=meta).model_dump() for inp, out in instances])
        self.accepted += 1
        self.stats["instances"] += len(instances)

    def _drop(self, instruction: str, filter: str, reason: str, evidence: dict[str, str], *,
              task: str = "", inp: str = "", out: str = "") -> None:
        self.rejected[reason] += 1
        row = Example(instruction=instruction, input=inp, output=out, task=task, source=self.source,
                      template="selfinstruct", meta={"round": str(self.round), "model": self.model})
        self._pending.append({**row.model_dump(), "filter": filter, "reason": reason, "evidence": evidence})
