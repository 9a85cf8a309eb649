"""Turn model text into instructions and instances, and the rule-based filters on them.

Every function returns what it dropped with a reason, so the stage can record it in rejected/.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from instructforge.selfinstruct.prompts import NO_INPUT

_ITEM = re.compile(r"(?:^|\n)[ \t]*\d+[ \t]*\.[ \t]*")
_NUMBERED_START = re.compile(r"\s*\d+\s*\.")


def collapse(text: str) -> str:
    return " ".join(text.split())


def parse_instruction_list(text: str, first: int) -> list[str]:
    """Items of a numbered list. A completion starts inside item `first` (its number was in the
    prompt); a chat reply repeats the numbers. Lines without a number continue the item above."""
    if not _NUMBERED_START.match(text):
        text = f"{first}. {text}"
    return [item for item in (collapse(p) for p in _ITEM.split(text)) if item]


def blacklist_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive match of any listed word or phrase."""
    alts = [r"\s+".join(re.escape(w) for w in word.split()) for word in words if word.strip()]
    return re.compile(r"\b(?:" + "|".join(alts) + r")\b", re.IGNORECASE) if alts else None


def instruction_rejection(instruction: str, *, min_words: int, max_words: int,
                          blacklist: re.Pattern[str] | None, banned_prefixes: Iterable[str]) -> str | None:
    """Why a generated instruction is dropped (None: it passes). Checks in the paper's order."""
    words = len(instruction.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if blacklist is not None and blacklist.search(instruction):
        return "blacklisted_word"
    lowered = instruction.lower()
    if any(lowered.startswith(p.lower()) for p in banned_prefixes):
        return "banned_prefix"
    first = instruction[0]
    if not first.isascii():
        return "non_ascii_start"
    if not first.isalnum():
        return "starts_with_punctuation"
    return None


_EXAMPLE = re.compile(r"(?:^|\n)[ \t]*Example[ \t]*\d+[ \t]*:?[ \t]*(?=\n|$)", re.IGNORECASE)
_INPUT_OUTPUT = re.compile(r"^\s*Input:(.*?)\n\s*Output:(.*)$", re.DOTALL | re.IGNORECASE)
_CLASS_LABEL = re.compile(r"(?:^|\n)[ \t]*Class label:", re.IGNORECASE)
_LABEL_INPUT = re.compile(r"^(.*?)\n\s*Input:(.*)$", re.DOTALL | re.IGNORECASE)


def _clean_input(text: str) -> str:
    text = text.strip()
    return "" if text in (NO_INPUT, "<noinput>", "") else text


def parse_instances(text: str, is_classification: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """(input, output) pairs from an instance completion, and the chunks that did not parse.

    The completion continues the prompt's last line ("Input:" or "Class label:"), put back here.
    """
    pairs: list[tuple[str, str]] = []
    bad: list[str] = []
    if is_classification:
        for chunk in _CLASS_LABEL.split("Class label:" + text)[1:]:
            m = _LABEL_INPUT.match(chunk)
            if m:
                pairs.append((_clean_input(m.group(2)), m.group(1).strip()))
            elif chunk.strip():
                bad.append(chunk.strip())
        return pairs, bad
    for chunk in _EXAMPLE.split("Example 1\nInput:" + text):
        if not chunk.strip():
            continue
        m = _INPUT_OUTPUT.match(chunk)
        if m:
            pairs.append((_clean_input(m.group(1)), m.group(2).strip()))
        else:
            bad.append(chunk.strip())
    return pairs, bad


def instance_rejection(inp: str, out: str) -> str | None:
    if not out:
        return "empty_output"
    if inp == out:
        return "input_equals_output"
    if inp.endswith(":") or out.endswith(":"):
        return "ends_with_colon"
    return None


def filter_instances(pairs: list[tuple[str, str]], max_instances: int
                     ) -> tuple[list[tuple[str, str]], list[tuple[tuple[str, str], str]], bool]:
    """Apply the instance filters. Returns (kept, [(dropped pair, reason)], conflicting) where
    `conflicting` means two instances give different outputs for the same input: the caller drops
    the whole task."""
    kept: list[tuple[str, str]] = []
    dropped: list[tuple[tuple[str, str], str]] = []
    for pair in pairs:
        reason = instance_rejection(*pair)
        if reason:
            dropped.append((pair, reason))
        elif pair in kept:
            dropped.append((pair, "duplicate_instance"))
        else:
            kept.append(pair)
    outputs_per_input = Counter(inp for inp, _ in kept)
    conflicting = any(n > 1 for n in outputs_per_input.values())
    if not conflicting and len(kept) > max_instances:
        dropped += [(p, "over_max_instances") for p in kept[max_instances:]]
        kept = kept[:max_instances]
    return kept, dropped, conflicting


_ALPACA_TASK = re.compile(r"^\s*\d+\s*\.\s*Instruction:(.*?)\n\s*\d+\s*\.\s*Input:(.*?)\n\s*\d+\s*\.\s*Output:(.*)$",
                          re.DOTALL | re.IGNORECASE)


def parse_alpaca(text: str, first: int, truncated: bool
                 ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Whole tasks (instruction, input, output) from an alpaca-style completion, and the blocks
    dropped with a reason. A response cut by length loses only its last, unfinished block."""
    blocks = [b.strip() for b in f"{first}. Instruction:{text}".split("###")]
    blocks = [b for b in blocks if b]
    dropped: list[tuple[str, str]] = []
    if truncated and blocks:
        dropped.append((blocks.pop(), "truncated"))
    tasks: list[tuple[str, str, str]] = []
    for block in blocks:
        m = _ALPACA_TASK.match(block)
        if m:
            tasks.append((collapse(m.group(1)), _clean_input(m.group(2)), m.group(3).strip()))
        else:
            dropped.append((block, "parse_failure"))
    return tasks, dropped


def parse_json_list(text: str, field: str) -> list[Any] | None:
    """The list under `field` of a JSON object answer (structured mode), or None if it has none."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    items = value.get(field) if isinstance(value, dict) else None
    return items if isinstance(items, list) else None


def parse_instruction_json(text: str) -> list[str] | None:
    items = parse_json_list(text, "instructions")
    if items is None:
        return None
    return [item for item in (collapse(i) for i in items if isinstance(i, str)) if item]


def parse_instances_json(text: str, is_classification: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """(input, output) pairs from {"instances": [...]}, and the items that did not parse."""
    items = parse_json_list(text, "instances")
    if items is None:
        return [], [text.strip()] if text.strip() else []
    label, answer = ("class_label", "input") if is_classification else ("output", "input")
    pairs, bad = [], []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(label), str) and isinstance(item.get(answer), str):
            pairs.append((_clean_input(item[answer]), item[label].strip()))
        else:
            bad.append(json.dumps(item, ensure_ascii=False))
    return pairs, bad
