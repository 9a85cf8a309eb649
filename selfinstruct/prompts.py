"""Every prompt the bootstrap sends, in the project's own words.

The instruction prompt is a numbered list the model continues (a completion prompt, as in the
published method); `chat` style wraps the same text in one user message for chat-only servers.
Structured mode asks for the same things as JSON under a schema, so the engine cannot answer in a
shape the parser does not read.
"""

from __future__ import annotations

import json
from typing import Any

from instructforge.selfinstruct.pool import Task

NO_INPUT = "<none>"

INSTRUCTION_HEADER = ("Below is a numbered list of varied tasks a person might ask an assistant to do. "
                      "Each line is one self-contained instruction. Continue the list with new tasks "
                      "that differ from the ones already there in topic, wording and kind of answer.\n")

CHAT_SUFFIX = "\nReply with the next items of the list only, numbered, one per line."


def instruction_prompt(instructions: list[str]) -> str:
    """The numbered list of in-context instructions, ending with the number the model fills in."""
    lines = [f"{i}. {' '.join(text.split())}" for i, text in enumerate(instructions, 1)]
    return INSTRUCTION_HEADER + "\n".join(lines) + f"\n{len(instructions) + 1}."


def stop_before_item(k: int) -> tuple[str, ...]:
    return (f"\n{k}.", f"\n{k} .")


CLASSIFICATION_HEADER = ("Decide whether each task is a classification task: its answer is one of a "
                         "small, fixed set of labels (yes/no, a category, a rating, an option).\n\n")


def classification_prompt(instruction: str, examples: list[Task]) -> str:
    """Few-shot: labelled tasks, then the new one; the answer is constrained to Yes or No."""
    shots = "".join(f"Task: {t.instruction}\nClassification: {'Yes' if t.is_classification else 'No'}\n\n"
                    for t in examples)
    return CLASSIFICATION_HEADER + shots + f"Task: {instruction}\nClassification:"


CLASSIFICATION_CHOICES = (" Yes", " No")

INPUT_FIRST_HEADER = ("Write examples for each task. An example is an input followed by the correct "
                      f"output. When the task needs no input, write the input as {NO_INPUT}.\n\n")

OUTPUT_FIRST_HEADER = ("Write examples for each classification task. For each one, first pick one of "
                       "the possible class labels, then write an input that has that label. Cover "
                       "different labels.\n\n")


def _input_first_block(task: Task) -> str:
    out = f"Task: {task.instruction}\n"
    for k, (inp, outp) in enumerate(task.instances, 1):
        out += f"Example {k}\nInput: {inp or NO_INPUT}\nOutput: {outp}\n"
    return out


def _output_first_block(task: Task) -> str:
    out = f"Task: {task.instruction}\n"
    for outp, inp in ((o, i) for i, o in task.instances):
        out += f"Class label: {outp}\nInput: {inp or NO_INPUT}\n"
    return out


def instance_prompt(instruction: str, is_classification: bool, examples: list[Task]) -> str:
    """Input-first for ordinary tasks, output-first (label, then input) for classification, so
    the model does not produce inputs that all fall in one class."""
    if is_classification:
        shots = "\n".join(_output_first_block(t) for t in examples)
        return OUTPUT_FIRST_HEADER + shots + f"\nTask: {instruction}\nClass label:"
    shots = "\n".join(_input_first_block(t) for t in examples)
    return INPUT_FIRST_HEADER + shots + f"\nTask: {instruction}\nExample 1\nInput:"


INSTANCE_STOP = ("\nTask:", "\n\nTask")

ALPACA_HEADER = ("You are writing a varied set of tasks for training an assistant. Write {n} new "
                 "tasks. Each task has an instruction, an optional input that the instruction refers "
                 f"to ({NO_INPUT} when there is none) and a good output. Use different verbs, topics and "
                 "answer lengths; an instruction is one or two sentences. Separate tasks with ###.\n\n")


def alpaca_prompt(examples: list[Task], n: int) -> str:
    """`examples` complete tasks shown first; the model continues with task len(examples)+1."""
    blocks = []
    for k, t in enumerate(examples, 1):
        inp, outp = t.instances[0] if t.instances else ("", "")
        blocks.append(f"{k}. Instruction: {t.instruction}\n{k}. Input: {inp or NO_INPUT}\n{k}. Output: {outp}")
    nxt = len(examples) + 1
    return ALPACA_HEADER.format(n=n) + "\n###\n".join(blocks) + f"\n###\n{nxt}. Instruction:"


# -- structured mode (selfinstruct.structured): the same prompts, answered as schema-constrained JSON

def instruction_prompt_json(instructions: list[str], new: int) -> str:
    """The same numbered list, then a request for up to `new` more tasks as a JSON object."""
    lines = [f"{i}. {' '.join(text.split())}" for i, text in enumerate(instructions, 1)]
    return (INSTRUCTION_HEADER + "\n".join(lines)
            + f'\n\nWrite up to {new} new tasks as JSON: {{"instructions": ["...", "..."]}}\n')


def instruction_schema(new: int) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["instructions"],
            "properties": {"instructions": {"type": "array", "minItems": 1, "maxItems": new,
                                            "items": {"type": "string", "minLength": 1}}}}


def _instances_json(task: Task, is_classification: bool) -> str:
    first, second = ("class_label", "input") if is_classification else ("input", "output")
    items = [{first: outp, second: inp or NO_INPUT} if is_classification else {first: inp or NO_INPUT, second: outp}
             for inp, outp in task.instances]
    return json.dumps({"instances": items}, ensure_ascii=False)


def instance_prompt_json(instruction: str, is_classification: bool, examples: list[Task]) -> str:
    """The same headers; examples and answer as {"instances": [...]} (label first for classification)."""
    header = OUTPUT_FIRST_HEADER if is_classification else INPUT_FIRST_HEADER
    shots = "".join(f"Task: {t.instruction}\nExamples: {_instances_json(t, is_classification)}\n\n"
                    for t in examples)
    return header + shots + f"Task: {instruction}\nExamples: "


def instance_schema(is_classification: bool, max_instances: int) -> dict[str, Any]:
    first, second = ("class_label", "input") if is_classification else ("input", "output")
    item = {"type": "object", "additionalProperties": False, "required": [first, second],
            "properties": {first: {"type": "string"}, second: {"type": "string"}}}
    return {"type": "object", "additionalProperties": False, "required": ["instances"],
            "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": max_instances,
                                         "items": item}}}
