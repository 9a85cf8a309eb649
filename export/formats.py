"""One row per example (or pair) in each dataset format, each as the tool that reads it expects.

Every format has a fixed Arrow schema, so an empty split and a full one have the same columns
and `datasets.load_dataset` reads back exactly what was written.
"""

from __future__ import annotations

import json

import pyarrow as pa

from instructforge.export.chat_templates import ChatTemplate
from instructforge.export.config import PromptConfig
from instructforge.records import Example, PreferencePair

Message = dict[str, str]

# format name in the config -> config name in the Hub layout
SFT_CONFIGS = {"messages": "sft", "prompt_completion": "sft_prompt_completion", "alpaca": "sft_alpaca",
               "sharegpt": "sft_sharegpt", "text": "sft_text"}
PREFERENCE_CONFIGS = {"preference": "preference", "kto": "preference_kto", "ranking": "preference_ranking"}

_TURNS = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_SHAREGPT_TURNS = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
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
                   *([("system", pa.string())] if prompt.system else [])],
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
    elif fmt == "alpaca":  # LLaMA-Factory joins instruction and input itself
        body = {"instruction": ex.instruction, "input": ex.input, "output": ex.output,
                **({"system": prompt.system} if prompt.system else {})}
    elif fmt == "sharegpt":
        body = {"conversations": [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]}
                                  for m in conversation(ex, prompt)]}
    elif fmt == "text":
        if template is None:
            raise ValueError("the text format needs a chat template")
        body = {"text": template.render(conversation(ex, prompt))}
    else:
        raise ValueError(f"unknown SFT format {fmt!r}")
    return {"id": ex.id, **body, "task": ex.task}


def preference_schema(fmt: str, prompt: PromptConfig) -> pa.Schema:
    fields = {
        "preference": [("prompt", _TURNS), ("chosen", _TURNS), ("rejected", _TURNS),
                       ("score_chosen", pa.float64()), ("score_rejected", pa.float64())],
        "kto": [("prompt", _TURNS), ("completion", _TURNS), ("label", pa.bool_()), ("score", pa.float64())],
        "ranking": [("instruction", pa.string()), ("input", pa.string()), ("chosen", pa.string()),
                    ("rejected", pa.string()), *([("system", pa.string())] if prompt.system else [])],
    }[fmt]
    return pa.schema([("id", pa.string()), *fields, ("judge", pa.string()), ("provenance", pa.string())])


def preference_rows(fmt: str, pair: PreferencePair, ex: Example, prompt: PromptConfig) -> list[dict]:
    """A pair in format `fmt`: TRL preference, TRL unpaired (KTO: two rows), LLaMA-Factory ranking."""
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
        return [{"id": pair.id, "instruction": ex.instruction, "input": ex.input, "chosen": pair.chosen,
                 "rejected": pair.rejected, **({"system": prompt.system} if prompt.system else {}), **common}]
    raise ValueError(f"unknown preference format {fmt!r}")


def answer(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def _provenance(pair: PreferencePair) -> str:
    """Models, sampling, every candidate's scores: one JSON string (Hub viewers show it as text)."""
    meta = {k: json.loads(v) if v[:1] in "[{" else v for k, v in pair.meta.items()}
    return json.dumps({"scores": pair.scores, **meta}, sort_keys=True)


def llamafactory_info(train_files: dict[str, list[str]], prompt: PromptConfig) -> dict[str, dict]:
    """`dataset_info.json` stanzas so LLaMA-Factory trains on the exported train split directly.

    `train_files` maps config name -> its train shards, relative to the folder. LLaMA-Factory reads
    one file per stanza, so a split of several shards gets one stanza per shard (`..._00001`, ...).
    """
    system = {"system": "system"} if prompt.system else {}
    kinds = {
        "sft_alpaca": {"formatting": "alpaca",
                       "columns": {"prompt": "instruction", "query": "input", "response": "output", **system}},
        "sft_sharegpt": {"formatting": "sharegpt", "columns": {"messages": "conversations"},
                         "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                                  "assistant_tag": "gpt", "system_tag": "system"}},
        "preference_ranking": {"formatting": "alpaca", "ranking": True,
                               "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                           "rejected": "rejected", **system}},
    }
    info: dict[str, dict] = {}
    for config, stanza in kinds.items():
        files = train_files.get(config, [])
        for i, path in enumerate(files):
            name = f"instructforge_{config}" + (f"_{i:05d}" if len(files) > 1 else "")
            info[name] = {"file_name": path, **stanza}
    return info
