"""FLAN-style templates: (input, target) pairs of `str.format` strings over a task's raw fields.

`{options}` in an input template expands to the task's answer options as a block that starts with
a blank line (FLAN's `OPTIONS:\\n- a\\n- b`, or the lettered `(A) a` variant), or to nothing when the
example is rendered without options; a template without the placeholder gets the block appended.
Few-shot examples put k exemplars (the same template on other rows of the task) before the query.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

OPTIONS_PLACEHOLDER = "options"
OPTION_STYLES = ("flan", "letters")


class TemplateError(ValueError):
    """A template that cannot be parsed, or a row that lacks a field a template needs."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Template:
    input: str
    target: str
    fields: frozenset[str]  # raw fields the pair refers to (not `options`)
    has_options: bool

    @classmethod
    def parse(cls, input: str, target: str) -> Template:
        names: set[str] = set()
        for which, text in (("input", input), ("target", target)):
            try:
                parsed = list(string.Formatter().parse(text))
            except ValueError as e:
                raise TemplateError(f"bad {which} template: {e} (write literal braces as {{{{ }}}})",
                                    which) from None
            for _, name, spec, conv in parsed:
                if name is None:
                    continue
                if not name.isidentifier():
                    raise TemplateError(f"bad placeholder {{{name}}} in {which} template: use {{field_name}}",
                                        which)
                if spec or conv:
                    raise TemplateError(f"placeholder {{{name}}} in {which} template: format specs and "
                                        "conversions are not supported", which)
                names.add(name)
        return cls(input, target, frozenset(names - {OPTIONS_PLACEHOLDER}), "{options}" in input)


def options_block(options: list[str], style: str | None) -> str:
    if not style or not options:
        return ""
    if style == "letters":
        lines = [f"({_letter(i)}) {o}" for i, o in enumerate(options)]
    else:
        lines = [f"- {o}" for o in options]
    return "\n\nOPTIONS:\n" + "\n".join(lines)


def _letter(i: int) -> str:
    return string.ascii_uppercase[i] if i < 26 else f"{string.ascii_uppercase[i // 26 - 1]}{string.ascii_uppercase[i % 26]}"


def fill(template: Template, values: dict[str, Any], options: list[str], style: str | None) -> tuple[str, str]:
    """One rendered (input, target) pair. Raises TemplateError naming a missing field."""
    missing = [f for f in template.fields if values.get(f) is None]
    if missing:
        raise TemplateError(f"template needs field '{min(missing)}', which this row lacks",
                            min(missing))
    strs = {k: _text(v) for k, v in values.items() if k in template.fields}
    block = options_block(options, style)
    strs[OPTIONS_PLACEHOLDER] = block
    prompt = template.input.format_map(strs).rstrip()
    if block and not template.has_options:
        prompt += block
    return prompt, template.target.format_map(strs).strip()


def _text(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(_text(x) for x in v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def few_shot(exemplars: list[tuple[str, str]], query: str, example_separator: str, answer_separator: str) -> str:
    """k solved exemplars, then the query, FLAN style: input, answer separator, target; repeated.

    The query ends with the separator too (trailing whitespace dropped), so the answer it asks for
    sits exactly where the exemplars' answers do.
    """
    shots = [f"{i}{answer_separator}{t}" for i, t in exemplars]
    return example_separator.join([*shots, query + answer_separator.rstrip()])
