"""Chat templates that render a conversation into the single `text` string of the `sft_text` export.

`tokenizer` uses the model folder's own Jinja template through its tokenizer, so the text matches
what the model saw in its own fine-tuning. The built-ins cover models whose folders have no
template: ChatML, Llama-3 headers, and an Alpaca-style sectioned prompt (our wording).

`training_text` is what the export stores: exactly the system turn the config gives (some templates,
SmolLM2's among them, add a default system prompt when a conversation has none; that turn is found
by rendering probes and removed), and no end token after the last answer, because the trainers
append one themselves (TRL's SFTTrainer adds `eos_token` to a text that lacks it, LLaMA-Factory's
pre-training stage always adds it): stored, it would be doubled.
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


PROBE_SYSTEM, PROBE_USER, PROBE_ANSWER = "\x02system-probe\x03", "\x02user-probe\x03", "\x02answer-probe\x03"


class ChatTemplate:
    """Renders a list of {role, content} messages to text, with or without a generation prompt."""

    _args: tuple[str, ...]  # what the subclass is built from, as it is pickled

    def __init__(self, name: str, source: str):
        self.name, self.source = name, source  # source: the Jinja text, recorded in the card
        self._probed: tuple[tuple[str, str] | None, str] | None = None

    def __reduce__(self):
        """Pickled as what it is built from (the export's Ray tasks): a worker process builds each
        template once (a tokenizer load, the probes), not once per task."""
        return _built, (type(self), *self._args)

    def render(self, messages: list[Message], *, add_generation_prompt: bool = False) -> str:
        raise NotImplementedError

    def training_text(self, messages: list[Message]) -> str:
        """The conversation as one training string: no injected system turn, no trailing end token."""
        default, answer_end = self._probe()
        text = self.render(messages)
        if default is not None and messages[0]["role"] != "system":
            doc, block = default
            if not block or not text.startswith(doc + block):
                raise InstructforgeError(f"chat template {self.name} adds a system turn to conversations without "
                                         "one and it cannot be removed: set export.prompt.system, or pick a built-in "
                                         "export.chat_template")
            text = doc + text[len(doc) + len(block):]
        return text[:-len(answer_end)] if answer_end and text.endswith(answer_end) else text

    @property
    def default_system(self) -> str | None:
        """The system turn the template adds to a conversation that has none (None: it adds nothing)."""
        default = self._probe()[0]
        return default[1] if default else None  # "" when it adds one that cannot be located

    @property
    def end_token(self) -> str:
        """What the template puts after an answer, stripped: the token a trainer must append."""
        return self._probe()[1].strip()

    def _probe(self) -> tuple[tuple[str, str] | None, str]:
        """((text before the system turn, injected system turn) or None, text after an answer)."""
        if self._probed is None:
            answered = self.render([{"role": "user", "content": PROBE_USER},
                                    {"role": "assistant", "content": PROBE_ANSWER}])
            self._probed = (self._injected_system(), answered.rpartition(PROBE_ANSWER)[2])
        return self._probed

    def _injected_system(self) -> tuple[str, str] | None:
        """(text before the system turn, the turn) the template adds when there is none; ("", "") when
        it adds one that cannot be located; None when it adds nothing."""
        with_system = self.render([{"role": "system", "content": PROBE_SYSTEM},
                                   {"role": "user", "content": PROBE_USER}])
        without = self.render([{"role": "user", "content": PROBE_USER}])
        head, _, tail = with_system.partition(PROBE_SYSTEM)
        between = tail.partition(PROBE_USER)[0]  # system turn's end + user turn's header
        # the system header is the end of `head` that, with "user" for "system", heads the user turn
        start = next((i for i in range(len(head)) if "system" in head[i:]
                      and between.endswith(head[i:].replace("system", "user"))), None)
        found = False
        if start is not None and without.startswith(head):
            doc, header = head[:start], head[start:]
            user_header = header.replace("system", "user")
            footer = between[:len(between) - len(user_header)]
            default, found, _ = without[len(head):].partition(footer + user_header + PROBE_USER)
        if found:
            return doc, header + default + footer
        if "system" in without.partition(PROBE_USER)[0]:  # a system turn of its own that cannot be cut out
            return "", ""
        return None


class JinjaTemplate(ChatTemplate):
    def __init__(self, name: str, source: str):
        super().__init__(name, source)
        self._args = (name, source)
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
        self._tokenizer, self._args = tokenizer, (model_dir,)

    def render(self, messages: list[Message], *, add_generation_prompt: bool = False) -> str:
        return self._tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)


@lru_cache(maxsize=8)
def _built(cls: type[ChatTemplate], *args: str) -> ChatTemplate:
    return cls(*args)


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
