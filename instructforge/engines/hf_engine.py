"""transformers backend: the local CPU/GPU fallback; runs any causal LM folder, the bundled one first.

Rows (request x sample) are batched with left padding through `model.generate`. Sampling is done
by our own logits processor with one torch Generator per row, so a seeded request gives the same
text whatever batch it lands in; `generate` then runs greedy and just takes the one token the
processor left. The same processor applies presence/frequency penalties (OpenAI semantics) and
structured output: xgrammar token masks compiled from the JSON schema, regex or choice, so the
text matches by construction (unless max_tokens cuts it: finish reason "length").
Per-row max_tokens, EOS and stop strings are one stopping criterion.
Requests are taken `4 x batch_size` at a time (sorted by length inside), so results reach the
request cache batch by batch rather than at the end of a long call.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from instructforge.engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StructuredOutput,
    end_token_ids,
    error_result,
    prompt_token_ids,
)
from instructforge.engines.cache import RequestCache
from instructforge.engines.config import EngineConfig
from instructforge.engines.model import model_identity


@dataclass
class _Row:
    """One output sequence being generated: sample `sample` of request `request`."""

    request: int
    sample: int
    prompt_ids: list[int]
    sampling: SamplingParams
    max_tokens: int
    generator: Any  # torch.Generator
    matcher: Any = None  # xgrammar.GrammarMatcher when the request is structured
    done: bool = False
    finish: str = "length"
    length: int = 0  # generated tokens, EOS included
    tokens: list[int] = field(default_factory=list)


class TransformersEngine(Engine):
    backend = "transformers"

    def __init__(self, cfg: EngineConfig, model: str, *, cache: RequestCache | None = None):
        super().__init__(cache)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.model_path = model
        self.collect_size = 4 * cfg.batch_size
        self.device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            torch.set_num_threads(cfg.cpu_threads)
        dtype: Any = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                      "auto": torch.float32 if self.device == "cpu" else "auto"}[cfg.dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        self.eos_ids = end_token_ids(self.model.generation_config.eos_token_id, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.max_len = cfg.max_model_len or getattr(self.model.config, "max_position_embeddings", None) or 2048
        self._seeds = random.Random(cfg.seed)
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}

    def model_identity(self) -> str:
        return model_identity(self.model_path)

    def _generate(self, requests: list[GenerationRequest], progress: bool) -> list[GenerationResult]:
        import torch

        results: list[GenerationResult | None] = [None] * len(requests)
        rows: list[_Row] = []
        for i, req in enumerate(requests):
            try:
                rows += self._rows(i, req)
            except Exception as e:  # noqa: BLE001 - a bad request (too long, bad grammar) fails alone
                results[i] = error_result(f"{type(e).__name__}: {e}")
        rows.sort(key=lambda r: len(r.prompt_ids))
        chunks = [rows[s:s + self.cfg.batch_size] for s in range(0, len(rows), self.cfg.batch_size)]
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="generate (transformers)", unit="batch")
        with torch.inference_mode():
            for chunk in chunks:
                self._run(chunk)
        by_request: dict[int, list[_Row]] = {}
        for row in rows:
            by_request.setdefault(row.request, []).append(row)
        for i, own in by_request.items():
            own.sort(key=lambda r: r.sample)
            results[i] = GenerationResult(
                texts=[self._text(r) for r in own], finish_reasons=[r.finish for r in own],  # type: ignore[misc]
                prompt_tokens=len(own[0].prompt_ids), completion_tokens=sum(r.length for r in own))
        return [r if r is not None else error_result("no result") for r in results]

    def _rows(self, index: int, req: GenerationRequest) -> list[_Row]:
        import torch

        ids = prompt_token_ids(self.tokenizer, req, self.max_len)
        grammar = self._grammar(req.structured) if req.structured is not None else None
        sp = req.sampling
        base = sp.seed if sp.seed is not None else self._seeds.getrandbits(62)
        rows = []
        for j in range(sp.n):
            gen = torch.Generator(device=self.device)
            gen.manual_seed((base * 1_000_003 + j) % (1 << 63))
            matcher = None
            if grammar is not None:
                import xgrammar as xgr

                matcher = xgr.GrammarMatcher(grammar)
            rows.append(_Row(index, j, ids, sp, min(sp.max_tokens, self.max_len - len(ids)), gen, matcher))
        return rows

    def _grammar(self, spec: StructuredOutput) -> Any:
        """Compile (once per spec) the xgrammar grammar for a JSON schema, regex or choice."""
        import xgrammar as xgr

        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size,
                                                      stop_token_ids=sorted(self.eos_ids))
            self._compiler = xgr.GrammarCompiler(info)
        key = spec.model_dump_json()
        if key not in self._grammars:
            if spec.json_schema is not None:
                compiled = self._compiler.compile_json_schema(json.dumps(spec.json_schema), any_whitespace=False)
            elif spec.regex is not None:
                compiled = self._compiler.compile_regex(spec.regex)
            else:
                alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in spec.choice or ())
                compiled = self._compiler.compile_grammar(xgr.Grammar.from_ebnf(f"root ::= {alternatives}"))
            self._grammars[key] = compiled
        return self._grammars[key]

    def _run(self, rows: list[_Row]) -> None:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        config = GenerationConfig(do_sample=False, max_new_tokens=max(r.max_tokens for r in rows),
                                  eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_id)
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config,
            logits_processor=LogitsProcessorList([_Sampler(rows, width, self.model.config.vocab_size)]),
            stopping_criteria=StoppingCriteriaList([_Stopper(rows, width, self.eos_ids, self.tokenizer)]))
        for i, r in enumerate(rows):
            if not r.done:  # generate stopped at the longest max_tokens
                r.length = min(out.shape[1] - width, r.max_tokens)
            r.tokens = out[i, width:width + r.length].tolist()

    def _text(self, row: _Row) -> str:
        tokens = [t for t in row.tokens if t not in self.eos_ids]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return _cut_at_stop(text, row.sampling.stop)


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[:min(cuts)] if cuts else text


class _Sampler:
    """Logits processor that picks each row's next token itself and masks every other token."""

    def __init__(self, rows: list[_Row], prompt_width: int, vocab_size: int):
        self.rows, self.width = rows, prompt_width
        self.bitmask = None
        if any(r.matcher is not None for r in rows):
            import xgrammar as xgr

            self.bitmask = xgr.allocate_token_bitmask(len(rows), vocab_size)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.width
        scores = scores.float()
        if self.bitmask is not None:
            import xgrammar as xgr

            xgr.reset_token_bitmask(self.bitmask)
            for i, r in enumerate(self.rows):
                if r.matcher is not None and not r.done:
                    if step > 0:
                        r.matcher.accept_token(int(input_ids[i, -1]))
                    r.matcher.fill_next_token_bitmask(self.bitmask, i)
            device = scores.device
            scores = scores.cpu()
            xgr.apply_token_bitmask_inplace(scores, self.bitmask)
            scores = scores.to(device)
        picked = torch.full_like(scores, float("-inf"))
        for i, r in enumerate(self.rows):
            picked[i, self._pick(r, scores[i], input_ids[i, self.width:]) if not r.done else 0] = 0.0
        return picked

    @staticmethod
    def _pick(row: _Row, logits: Any, generated: Any) -> int:
        import torch

        sp = row.sampling
        if (sp.presence_penalty or sp.frequency_penalty) and generated.numel():
            counts = torch.bincount(generated, minlength=logits.shape[0])[:logits.shape[0]].to(logits.dtype)
            logits = logits - sp.frequency_penalty * counts - sp.presence_penalty * (counts > 0).to(logits.dtype)
        if sp.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / sp.temperature, dim=-1)
        if sp.top_p < 1:
            sorted_probs, order = torch.sort(probs, descending=True)
            drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > sp.top_p
            sorted_probs[drop] = 0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=row.generator))


class _Stopper:
    """Stopping criterion per row: EOS, one of its stop strings, or its own max_tokens."""

    def __init__(self, rows: list[_Row], prompt_width: int, eos_ids: set[int], tokenizer: Any):
        self.rows, self.width, self.eos_ids, self.tokenizer = rows, prompt_width, eos_ids, tokenizer

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.width
        for i, r in enumerate(self.rows):
            if r.done:
                continue
            if int(input_ids[i, -1]) in self.eos_ids:
                r.done, r.finish = True, "stop"
            elif r.sampling.stop:
                text = self.tokenizer.decode(input_ids[i, self.width:], skip_special_tokens=True)
                if any(s in text for s in r.sampling.stop):
                    r.done, r.finish = True, "stop"
            if not r.done and step >= r.max_tokens:
                r.done, r.finish = True, "length"
            if r.done:
                r.length = step
        return torch.tensor([r.done for r in self.rows], dtype=torch.bool, device=input_ids.device)
