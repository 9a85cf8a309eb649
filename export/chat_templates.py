"""Chat templates that render a conversation into the single `text` string of the `sft_text` export.

`tokenizer` uses the model folder's own Jinja template through its tokenizer, so the text matches
what the model saw in its own fine-tuning. The built-ins cover models whose folders have no
template: ChatML, Llama-3 headers, and an Alpaca-style sectioned prompt (our wording).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment

from instructforge.errors import InstructforgeError

Message = dict[str, str]

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAMA3 = (
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{{ m.content | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# Sectioned plain-text prompt in the Alpaca tradition. A system turn replaces the preamble.
ALPACA_PREAMBLE = "What follows is a request describing a task. Write a reply that carries out the request."
ALPACA = (
    "{% set ns = namespace(preamble='" + ALPACA_PREAMBLE + "') %}"
    "{% for m in messages if m.role == 'system' %}{% set ns.preamble = m.content %}{% endfor %}"
    "{{ ns.preamble }}"
    "{% for m in messages if m.role != 'system' %}"
    "\n\n### {{ 'Instruction' if m.role == 'user' else 'Response' }}:\n{{ m.content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}\n\n### Response:\n{% endif %}"
)

BUILTIN = {"chatml": CHATML, "llama3": LLAMA3, "alpaca": ALPACA}


class ChatTemplate:
    """Renders a list of {role, content} messages to text, with or without a generation prompt."""

    def __init__(self, name: str, source: str):
        self.name, self.source = name, source  # source: the Jinja text, recorded in the card

    def render(self, messages: list[Message], *, add_generation_prompt: bool = False) -> str:
        raise NotImplementedError


class JinjaTemplate(ChatTemplate):
    def __init__(self, name: str, source: str):
        super().__init__(name, source)
        env = ImmutableSandboxedEnvironment(keep_trailing_newline=True)
        self._template = env.from_string(source)

    def render(self, messages: list[Message], *, add_generation_prompt: bool = False) -> str:
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt)


class TokenizerTemplate(ChatTemplate):
    """The model's own template, applied by its tokenizer exactly as at training/inference time."""

    def __init__(self, model_dir: str):
        tokenizer = _load_tokenizer(model_dir)
        if not tokenizer.chat_template:
            raise InstructforgeError(f"{model_dir}: the tokenizer has no chat template; "
                                     "set export.chat_template to chatml, llama3 or alpaca")
        super().__init__(f"tokenizer:{Path(model_dir).name}", tokenizer.chat_template)
        self._tokenizer = tokenizer

    def render(self, messages: list[Message], *, add_generation_prompt: bool = False) -> str:
        return self._tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)


@lru_cache(maxsize=4)
def _load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise InstructforgeError(f"{model_dir}: cannot load a tokenizer for its chat template: {e}") from None


def load_chat_template(name: str, model_dir: str | Path | None = None) -> ChatTemplate:
    """A built-in template by name, or `tokenizer` for the template of `model_dir`."""
    if name in BUILTIN:
        return JinjaTemplate(name, BUILTIN[name])
    if name == "tokenizer":
        if model_dir is None:
            raise InstructforgeError("chat_template 'tokenizer' needs a model folder")
        return TokenizerTemplate(str(model_dir))
    raise InstructforgeError(f"unknown chat template {name!r}; known: tokenizer, {', '.join(BUILTIN)}")
