"""The export's `dataset_info.json` read the way LLaMA-Factory reads it.

`llamafactory` cannot be installed here: 0.9.5 pins datasets<=4.0, transformers<=5.6, trl<=0.24 and
peft<=0.18.1, below this project's versions. So this test applies its documented stanza schema and
mirrors the code that turns a row into turns (llamafactory 0.9.5, `data/parser.py` DatasetAttr.join
and `data/converter.py` Alpaca/Sharegpt converters): unknown keys, missing columns, role tags out
of turn and a prompt text different from the other configs' all fail.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.test_export import length_judged_hub

STANZA_KEYS = {"file_name", "formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags"}
COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
           "chosen", "rejected", "kto_tag"}
TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}
ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
SHAREGPT_DEFAULTS = {"messages": "conversations", "role_tag": "from", "content_tag": "value", "user_tag": "human",
                     "assistant_tag": "gpt", "observation_tag": "observation", "function_tag": "function_call",
                     "system_tag": "system"}


def dataset_attr(stanza: dict) -> dict:
    """DatasetAttr.join: with `columns`, every column not named is None; defaults otherwise."""
    assert set(stanza) <= STANZA_KEYS, set(stanza) - STANZA_KEYS
    assert stanza.get("formatting", "alpaca") in ("alpaca", "sharegpt", "openai")
    attr = {**ALPACA_DEFAULTS, **SHAREGPT_DEFAULTS, "system": None, "chosen": None, "rejected": None,
            "kto_tag": None, "ranking": stanza.get("ranking", False), "formatting": stanza.get("formatting", "alpaca")}
    if "columns" in stanza:
        assert set(stanza["columns"]) <= COLUMNS
        attr.update({c: stanza["columns"].get(c) for c in COLUMNS})
    if "tags" in stanza:
        assert set(stanza["tags"]) <= TAGS
        attr.update({t: stanza["tags"].get(t) for t in TAGS})
    return attr


def convert(attr: dict, row: dict) -> dict:
    """(system, prompt turns, response turns) as LLaMA-Factory's converters build them."""
    for key in ("prompt", "query", "response", "messages", "system", "chosen", "rejected"):
        if attr[key] is not None and (attr["formatting"] == "alpaca" or key in ("messages", "system")):
            assert attr[key] in row, f"column {attr[key]} missing"
    if attr["formatting"] == "alpaca":
        query = [row[attr[k]] for k in ("prompt", "query") if attr[k] and row[attr[k]]]
        prompt = [{"role": "user", "content": "\n".join(query)}]
        if attr["ranking"]:
            response = [{"role": "assistant", "content": row[attr["chosen"]]},
                        {"role": "assistant", "content": row[attr["rejected"]]}]
        elif attr["response"]:
            response = [{"role": "assistant", "content": row[attr["response"]]}]
        else:
            response = []
        return {"system": row[attr["system"]] if attr["system"] else "", "prompt": prompt, "response": response}
    messages = row[attr["messages"]]
    system = ""
    if attr["system_tag"] and messages and messages[0][attr["role_tag"]] == attr["system_tag"]:
        system, messages = messages[0][attr["content_tag"]], messages[1:]
    accept = ((attr["user_tag"], attr["observation_tag"]), (attr["assistant_tag"], attr["function_tag"]))
    roles = {attr["user_tag"]: "user", attr["assistant_tag"]: "assistant"}
    turns = []
    for i, m in enumerate(messages):
        assert m[attr["role_tag"]] in accept[i % 2], f"invalid role tag in {messages}"
        turns.append({"role": roles[m[attr["role_tag"]]], "content": m[attr["content_tag"]]})
    assert len(turns) % 2 == 0, f"invalid message count in {messages}"
    return {"system": system, "prompt": turns[:-1], "response": turns[-1:]}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return length_judged_hub(tmp_path_factory.mktemp("lf"),
                             {"train": 0.5, "validation": 0.25, "test": 0.25}, ["ranking"])


def test_every_entry_converts_to_the_same_turns_as_the_messages_config(hub):
    info = json.loads((hub / "dataset_info.json").read_text())
    messages = {}
    for split in ("train", "validation", "test"):
        for r in pq.read_table(hub / f"data/sft/{split}-00000-of-00001.parquet").to_pylist():
            messages[r["id"]] = r["messages"]
    seen = set()
    for name, stanza in info.items():
        config = stanza["file_name"].split("/")[1]
        seen.add(config)
        attr = dataset_attr(stanza)
        for row in pq.read_table(hub / stanza["file_name"]).to_pylist():
            turns = convert(attr, row)
            if config == "sft_text":  # pre-training: the rendered text is the whole prompt
                assert turns["prompt"][0]["content"] == row["text"] and not turns["response"]
                assert turns["prompt"][0]["content"].startswith("<|im_start|>system\nBe brief.")
                continue
            if config == "preference_ranking":
                assert [t["content"] for t in turns["response"]] == [row["chosen"], row["rejected"]]
            expected = messages[row["id"]] if config != "preference_ranking" else None
            user = turns["prompt"][-1]["content"]
            assert turns["system"] == "Be brief.", name
            if expected is not None:  # the same prompt text as every other config, not LF's own "\n" join
                assert user == expected[1]["content"] and turns["response"][0]["content"] == expected[2]["content"]
            else:
                assert user == row["prompt"] and row["prompt"] in {m[1]["content"] for m in messages.values()}
    assert seen == {"sft", "sft_alpaca", "sft_sharegpt", "sft_text", "preference_ranking"}
    # LLaMA-Factory's own join of instruction and input differs from ours: that is why `prompt` is given
    with_input = next(r for r in pq.read_table(hub / info["instructforge_sft_alpaca"]["file_name"]).to_pylist()
                      if r["input"])
    assert with_input["prompt"] != f"{with_input['instruction']}\n{with_input['input']}"


def test_the_checker_rejects_what_llamafactory_would_not_read():
    with pytest.raises(AssertionError):
        dataset_attr({"file_name": "x.parquet", "formating": "alpaca"})  # a misspelt key
    attr = dataset_attr({"file_name": "x", "formatting": "sharegpt", "columns": {"messages": "messages"}})
    with pytest.raises(AssertionError, match="role tag"):  # OpenAI-style turns without the tags
        convert(attr, {"messages": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "yo"}]})
    with pytest.raises(AssertionError, match="missing"):
        convert(dataset_attr({"file_name": "x", "columns": {"prompt": "prompt", "response": "output"}}),
                {"instruction": "a", "output": "b"})
