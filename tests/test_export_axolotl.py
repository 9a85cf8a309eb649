"""The card's Axolotl stanzas applied to the exported rows the way Axolotl reads them.

Axolotl 0.19 cannot be installed here (it pins transformers==5.16.1, datasets==4.8.4, trl==1.9.0), so
this mirrors what its strategies read: `chat_template` (field_messages, message_property_mappings,
roles), `alpaca` (instruction/input/output), `completion` (field) and the DPO
`chat_template.default` transform (prompt messages, the last turn of chosen/rejected).
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from instructforge.export.card import AXOLOTL
from tests.test_export import length_judged_hub

DEFAULT_ROLES = {"user": ["user"], "assistant": ["assistant"], "system": ["system"], "tool": ["tool"]}


def turns(stanza: dict, messages: list[dict]) -> list[dict]:
    """Messages as Axolotl's chat_template strategies map them (role names through `roles`)."""
    props = stanza.get("message_property_mappings", {"role": "role", "content": "content"})
    role_map = {src: target for target, sources in stanza.get("roles", DEFAULT_ROLES).items() for src in sources}
    return [{"role": role_map[m[props["role"]]], "content": m[props["content"]]} for m in messages]


def dpo_transform(stanza: dict, row: dict) -> dict:
    """axolotl prompt_strategies/dpo/chat_template.py `default`, before the chat template is applied."""
    chosen, rejected = row[stanza["field_chosen"]], row[stanza["field_rejected"]]
    last = [c if isinstance(c, dict) else c[-1] for c in (chosen, rejected)]
    return {"messages": turns(stanza, row[stanza["field_messages"]]), "chosen": turns(stanza, last[:1])[0],
            "rejected": turns(stanza, last[1:])[0]}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return length_judged_hub(tmp_path_factory.mktemp("axolotl"),
                             {"train": 1.0, "validation": 0.0, "test": 0.0}, ["preference"])


def _rows(hub, config: str) -> list[dict]:
    return pq.read_table(hub / f"data/{config}/train-00000-of-00001.parquet").to_pylist()


def test_every_axolotl_stanza_reads_its_config(hub):
    card = (hub / "README.md").read_text()
    reference = {r["id"]: r["messages"] for r in _rows(hub, "sft")}
    for name, stanza in AXOLOTL.items():
        assert f"  name: {name}\n  split: train\n  type: {stanza['type']}\n" in card, name
        rows = _rows(hub, name)
        for row in rows:
            if stanza["type"] == "chat_template":
                got = turns(stanza, row[stanza["field_messages"]])
                assert [m["role"] for m in got] == ["system", "user", "assistant"], name
                assert got == reference[row["id"]], name  # the same conversation as `sft`
            elif stanza["type"] == "alpaca":
                assert {"instruction", "input", "output"} <= set(row)
            elif stanza["type"] == "completion":
                assert isinstance(row[stanza["field"]], str) and row[stanza["field"]]
            else:
                out = dpo_transform(stanza, row)
                assert [m["role"] for m in out["messages"]] == ["system", "user"]
                assert out["chosen"]["role"] == out["rejected"]["role"] == "assistant"
                assert out["chosen"]["content"].startswith("a longer good answer")


def test_the_mirror_rejects_a_stanza_that_does_not_fit():
    sharegpt_row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    with pytest.raises(KeyError):  # the `sft` stanza (role/content) on ShareGPT turns
        turns(AXOLOTL["sft"], sharegpt_row["conversations"])
    with pytest.raises(KeyError):  # ShareGPT keys without the role mapping
        turns({**AXOLOTL["sft_sharegpt"], "roles": DEFAULT_ROLES}, sharegpt_row["conversations"])
