"""One row per example (or pair) in each dataset format, each as the tool that reads it expects.

Every format has a fixed Arrow schema, so an empty split and a full one have the same columns
and `datasets.load_dataset` reads back exactly what was written.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from instructforge.export.chat_templates import ChatTemplate
from instructforge.export.config import PromptConfig
from instructforge.export.preference import ranked_responses
from instructforge.records import Example, PreferencePair

Message = dict[str, str]

# format name in the config -> config name in the Hub layout
SFT_CONFIGS = {"messages": "sft", "prompt_completion": "sft_prompt_completion", "alpaca": "sft_alpaca",
               "sharegpt": "sft_sharegpt", "text": "sft_text"}
PREFERENCE_CONFIGS = {"preference": "preference", "kto": "preference_kto", "ranking": "preference_ranking",
                      "ranked": "preference_ranked"}
# rows `preference_rows` gives per pair (an example is one row in every SFT format): shards are
# planned before any row is rendered
ROWS_PER_PAIR = {"preference": 1, "kto": 2, "ranking": 1, "ranked": 1}

_TURNS = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_SHAREGPT_TURNS = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
_RANKED = pa.list_(pa.struct([("content", pa.string()), ("score", pa.float64()), ("rank", pa.int64())]))
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def user_content(ex: Example, prompt: PromptConfig) -> str:
    """The user turn for an example, as configured (instruction and input joined by a template)."""
    if ex.input.strip():
        return prompt.user_template.replace("{instruction}", ex.instruction).replace("{input}", ex.input)
    return prompt.user_template_no_input.replace("{instruction}", ex.instruction)


def prompt_messages(ex: Example, prompt: PromptConfig) -> list[Message]:
    system = [{"role": "system", "content": prompt.system}] if prompt.system else []
    return [*system, {"role": "user", "content": user_content(ex, prompt)}]


def conversation(ex: Example, prompt: PromptConfig) -> list[Message]:
    return [*prompt_messages(ex, prompt), {"role": "assistant", "content": ex.output}]


def sft_schema(fmt: str, prompt: PromptConfig) -> pa.Schema:
    fields = {
        "messages": [("messages", _TURNS)],
        "prompt_completion": [("prompt", _TURNS), ("completion", _TURNS)],
        "alpaca": [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
                   ("prompt", pa.string()), *([("system", pa.string())] if prompt.system else [])],
        "sharegpt": [("conversations", _SHAREGPT_TURNS)],
        "text": [("text", pa.string())],
    }[fmt]
    return pa.schema([("id", pa.string()), *fields, ("task", pa.string())])


def sft_row(fmt: str, ex: Example, prompt: PromptConfig, template: ChatTemplate | None = None) -> dict:
    """One example in SFT format `fmt` (see SFT_CONFIGS); `text` needs the chat template."""
    if fmt == "messages":
        body = {"messages": conversation(ex, prompt)}
    elif fmt == "prompt_completion":
        body = {"prompt": prompt_messages(ex, prompt),
                "completion": [{"role": "assistant", "content": ex.output}]}
    elif fmt == "alpaca":  # `prompt`: the user turn as joined here, which LLaMA-Factory reads as is
        body = {"instruction": ex.instruction, "input": ex.input, "output": ex.output,
                "prompt": user_content(ex, prompt), **({"system": prompt.system} if prompt.system else {})}
    elif fmt == "sharegpt":
        body = {"conversations": [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]}
                                  for m in conversation(ex, prompt)]}
    elif fmt == "text":
        if template is None:
            raise ValueError("the text format needs a chat template")
        body = {"text": template.training_text(conversation(ex, prompt))}
    else:
        raise ValueError(f"unknown SFT format {fmt!r}")
    return {"id": ex.id, **body, "task": ex.task}


def preference_schema(fmt: str, prompt: PromptConfig) -> pa.Schema:
    fields = {
        "preference": [("prompt", _TURNS), ("chosen", _TURNS), ("rejected", _TURNS),
                       ("score_chosen", pa.float64()), ("score_rejected", pa.float64())],
        "kto": [("prompt", _TURNS), ("completion", _TURNS), ("label", pa.bool_()), ("score", pa.float64())],
        "ranking": [("instruction", pa.string()), ("input", pa.string()), ("prompt", pa.string()),
                    ("chosen", pa.string()), ("rejected", pa.string()),
                    *([("system", pa.string())] if prompt.system else [])],
        "ranked": [("prompt", _TURNS), ("responses", _RANKED)],
    }[fmt]
    return pa.schema([("id", pa.string()), *fields, ("judge", pa.string()), ("provenance", pa.string())])


def preference_rows(fmt: str, pair: PreferencePair, ex: Example, prompt: PromptConfig) -> list[dict]:
    """A pair in format `fmt`: TRL preference, TRL unpaired (KTO: two rows), LLaMA-Factory ranking,
    or the full ranking of the prompt's answers."""
    common = {"judge": pair.judge, "provenance": _provenance(pair)}
    if fmt == "preference":
        return [{"id": pair.id, "prompt": prompt_messages(ex, prompt), "chosen": answer(pair.chosen),
                 "rejected": answer(pair.rejected), "score_chosen": pair.scores["chosen"],
                 "score_rejected": pair.scores["rejected"], **common}]
    if fmt == "kto":
        return [{"id": pair.id, "prompt": prompt_messages(ex, prompt), "completion": answer(text),
                 "label": label, "score": pair.scores[side], **common}
                for text, label, side in ((pair.chosen, True, "chosen"), (pair.rejected, False, "rejected"))]
    if fmt == "ranking":
        return [{"id": pair.id, "instruction": ex.instruction, "input": ex.input,
                 "prompt": user_content(ex, prompt), "chosen": pair.chosen, "rejected": pair.rejected,
                 **({"system": prompt.system} if prompt.system else {}), **common}]
    if fmt == "ranked":  # every scored answer, best first: the k-way ranking behind the pair
        return [{"id": pair.id, "prompt": prompt_messages(ex, prompt), "responses": ranked_responses(pair),
                 **common}]
    raise ValueError(f"unknown preference format {fmt!r}")


def format_schema(fmt: str, prompt: PromptConfig) -> pa.Schema:
    return sft_schema(fmt, prompt) if fmt in SFT_CONFIGS else preference_schema(fmt, prompt)


def format_rows(fmt: str, units: list[Any], prompt: PromptConfig, template: ChatTemplate | None) -> list[dict]:
    """The rows of `units` in format `fmt`: examples for an SFT format, (pair, example) for a preference one."""
    if fmt in SFT_CONFIGS:
        return [sft_row(fmt, ex, prompt, template) for ex in units]
    return [r for pair, ex in units for r in preference_rows(fmt, pair, ex, prompt)]


def answer(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def _provenance(pair: PreferencePair) -> str:
    """Models, sampling, every candidate's scores: one JSON string (Hub viewers show it as text)."""
    meta = {k: json.loads(v) if v[:1] in "[{" else v for k, v in pair.meta.items()}
    return json.dumps({"scores": pair.scores, **meta}, sort_keys=True)


# LLaMA-Factory `dataset_info.json` stanza per config it reads. Alpaca-style configs give it the
# `prompt` column (the user turn joined as in every other config: its own join of instruction and
# input is "\n"); `sft` goes through its sharegpt reader with OpenAI tags; `sft_text` is for its
# pre-training stage (`stage: pt`).
_LF_ROLE_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}


def llamafactory_stanzas(prompt: PromptConfig) -> dict[str, dict]:
    system = {"system": "system"} if prompt.system else {}
    return {
        "sft_alpaca": {"formatting": "alpaca", "columns": {"prompt": "prompt", "response": "output", **system}},
        "sft": {"formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": _LF_ROLE_TAGS},
        "sft_sharegpt": {"formatting": "sharegpt", "columns": {"messages": "conversations"},
                         "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                                  "assistant_tag": "gpt", "system_tag": "system"}},
        "sft_text": {"formatting": "alpaca", "columns": {"prompt": "text"}},
        "preference_ranking": {"formatting": "alpaca", "ranking": True,
                               "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected",
                                           **system}},
    }


def llamafactory_name(config: str, split: str, shard: int | None = None) -> str:
    """Entry name: `instructforge_<config>` for train, `..._validation`/`..._test`, `..._<shard>` when split."""
    return (f"instructforge_{config}" + ("" if split == "train" else f"_{split}")
            + ("" if shard is None else f"_{shard:05d}"))


def llamafactory_info(files: dict[str, dict[str, list[str]]], prompt: PromptConfig) -> dict[str, dict]:
    """`dataset_info.json`: one entry per split of every config LLaMA-Factory reads.

    `files` maps config -> split -> shards, relative to the folder. LLaMA-Factory reads one file per
    entry, so a split of several shards gets one entry per shard.
    """
    info: dict[str, dict] = {}
    for config, stanza in llamafactory_stanzas(prompt).items():
        for split, shards in files.get(config, {}).items():
            for i, path in enumerate(shards):
                info[llamafactory_name(config, split, i if len(shards) > 1 else None)] = {"file_name": path,
                                                                                           **stanza}
    return info
