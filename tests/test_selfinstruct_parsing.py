"""Self-Instruct parsers and filters on fixed model outputs (well-formed, malformed, cut, empty)."""

from __future__ import annotations

import pytest

from instructforge.selfinstruct import parsing, prompts
from instructforge.selfinstruct.config import DEFAULT_BLACKLIST
from instructforge.selfinstruct.pool import Task

BLACKLIST = parsing.blacklist_pattern(DEFAULT_BLACKLIST)


def reject(text: str) -> str | None:
    return parsing.instruction_rejection(text, min_words=4, max_words=150, blacklist=BLACKLIST,
                                         banned_prefixes=["Write a program"])


def test_completion_list_starts_inside_the_prompted_item():
    text = " Name three rivers in Africa.\n10. Rewrite   the sentence\n  in the passive voice.\n11.Give me a haiku"
    assert parsing.parse_instruction_list(text, 9) == [
        "Name three rivers in Africa.", "Rewrite the sentence in the passive voice.", "Give me a haiku"]


def test_chat_reply_keeps_its_own_numbers_and_mid_line_numbers_stay():
    text = "9. Sort the list 3. 1. 2. in order.\n10 . Explain the rule of thirds.\n"
    assert parsing.parse_instruction_list(text, 9) == ["Sort the list 3. 1. 2. in order.",
                                                       "Explain the rule of thirds."]


@pytest.mark.parametrize("text", ["", "   \n\n", "\n10.\n11.  "])
def test_empty_or_number_only_lists_parse_to_nothing(text):
    assert parsing.parse_instruction_list(text, 9) == []


@pytest.mark.parametrize(("text", "reason"), [
    ("Say hello", "too_short"),
    ("Summarize it now", "too_short"),
    (" ".join(["word"] * 151), "too_long"),
    ("Describe the image in two sentences.", "blacklisted_word"),
    ("Please GO TO the store and list what you buy.", "blacklisted_word"),
    ("Open the attached Files and count the lines.", "blacklisted_word"),
    ("Write a program that sorts numbers quickly.", "banned_prefix"),
    ("write a program to add two numbers.", "banned_prefix"),
    ("- List three kinds of cheese here.", "starts_with_punctuation"),
    ("\"Quote\" a famous line about courage.", "starts_with_punctuation"),
    ("Élaborez une liste de trois fruits rouges.", "non_ascii_start"),
])
def test_instruction_filters(text, reason):
    assert reject(text) == reason


@pytest.mark.parametrize("text", [
    "Explain how maple syrup is made.",  # 'map' only as a whole word
    "Give four examples of graphic design jobs.",
    "Suggest names for a profile page about cooking.",
    " ".join(["word"] * 150),
    "Name four short words",
])
def test_instruction_filters_keep_good_ones(text):
    assert reject(text) is None


def test_input_first_instances():
    text = (" 2 + 2\nOutput: 4\nExample 2\nInput: <none>\nOutput: There is no input here.\n"
            "Example 3\nInput: 7 - 3\nOutput: 4\nmore lines of output")
    pairs, bad = parsing.parse_instances(text, is_classification=False)
    assert pairs == [("2 + 2", "4"), ("", "There is no input here."), ("7 - 3", "4\nmore lines of output")]
    assert bad == []


def test_input_first_malformed_chunk_is_reported():
    pairs, bad = parsing.parse_instances(" only an input and no output", is_classification=False)
    assert pairs == []
    assert bad == ["Input: only an input and no output"]


def test_output_first_instances():
    text = " Positive\nInput: I loved the film.\nClass label: Negative\nInput: Dull and long.\nClass label: Neutral"
    pairs, bad = parsing.parse_instances(text, is_classification=True)
    assert pairs == [("I loved the film.", "Positive"), ("Dull and long.", "Negative")]
    assert bad == ["Neutral"]


def test_empty_completion_gives_nothing():
    assert parsing.parse_instances("", False) == ([], ["Input:"])
    assert parsing.parse_instances("", True) == ([], [])


def test_instance_filters():
    pairs = [("a", "a"), ("x", ""), ("Fill in:", "b"), ("q", "ends:"), ("q1", "1"), ("q1", "1"),
             ("q2", "2"), ("q3", "3"), ("q4", "4"), ("q5", "5"), ("q6", "6")]
    kept, dropped, conflicting = parsing.filter_instances(pairs, max_instances=5)
    assert not conflicting
    assert kept == [("q1", "1"), ("q2", "2"), ("q3", "3"), ("q4", "4"), ("q5", "5")]
    assert [r for _, r in dropped] == ["input_equals_output", "empty_output", "ends_with_colon",
                                       "ends_with_colon", "duplicate_instance", "over_max_instances"]


def test_conflicting_outputs_flag_the_task():
    kept, dropped, conflicting = parsing.filter_instances([("2+2", "4"), ("2+2", "5")], 5)
    assert conflicting and kept == [("2+2", "4"), ("2+2", "5")] and dropped == []


def test_alpaca_blocks_and_truncation():
    text = (" Give a synonym for happy.\n4. Input: <none>\n4. Output: Glad.\n###\n"
            "5. Instruction: Translate to French.\n5. Input: Good morning\n5. Output: Bonjour\n###\n"
            "6. Instruction: garbage without fields\n###\n"
            "7. Instruction: Count the vowels.\n7. Input: banana\n7. Out")
    tasks, dropped = parsing.parse_alpaca(text, 4, truncated=True)
    assert tasks == [("Give a synonym for happy.", "", "Glad."), ("Translate to French.", "Good morning", "Bonjour")]
    assert [r for _, r in dropped] == ["truncated", "parse_failure"]


def test_prompts_show_examples_and_end_where_the_model_continues():
    shown = ["Name a color.", "Add two   numbers."]
    prompt = prompts.instruction_prompt(shown)
    assert prompt.endswith("1. Name a color.\n2. Add two numbers.\n3.")
    assert prompts.stop_before_item(16) == ("\n16.", "\n16 .")
    cls = Task("s1", "Is it a fruit?", [("apple", "Yes"), ("stone", "No")], True)
    other = Task("s2", "Add the numbers.", [("2 3", "5")], False)
    assert prompts.classification_prompt("New task?", [cls, other]).endswith(
        "Task: Is it a fruit?\nClassification: Yes\n\nTask: Add the numbers.\nClassification: No\n\n"
        "Task: New task?\nClassification:")
    assert "Class label: Yes\nInput: apple" in prompts.instance_prompt("T", True, [cls])
    assert prompts.instance_prompt("T", False, [other]).endswith("Output: 5\n\nTask: T\nExample 1\nInput:")
    assert prompts.alpaca_prompt([other], 20).endswith("1. Output: 5\n###\n2. Instruction:")


def test_structured_instruction_lists():
    assert parsing.parse_instruction_json('{"instructions": ["Name a  river.", "  ", 3, "Sort\\nthe list."]}') == [
        "Name a river.", "Sort the list."]
    for text in ('{"instructions": ["cut', '["a"]', '{"other": []}', ""):
        assert parsing.parse_instruction_json(text) is None


def test_structured_instances_label_first_for_classification():
    text = '{"instances": [{"input": "<none>", "output": "42"}, {"input": "x"}]}'
    pairs, bad = parsing.parse_instances_json(text, False)
    assert pairs == [("", "42")] and bad == ['{"input": "x"}']
    pairs, bad = parsing.parse_instances_json('{"instances": [{"class_label": "Yes", "input": "Is it?"}]}', True)
    assert pairs == [("Is it?", "Yes")] and not bad
    assert parsing.parse_instances_json('{"instances": [', False) == ([], ['{"instances": ['])


def test_structured_prompts_show_examples_in_the_answer_format():
    seed = Task("s1", "Is this review positive?", [("Great film.", "Yes")], True)
    prompt = prompts.instance_prompt_json("Is the sky blue?", True, [seed])
    assert '{"instances": [{"class_label": "Yes", "input": "Great film."}]}' in prompt
    assert prompt.endswith("Task: Is the sky blue?\nExamples: ")
    schema = prompts.instance_schema(True, 3)["properties"]["instances"]
    assert list(schema["items"]["properties"]) == ["class_label", "input"] and schema["maxItems"] == 3
    listing = prompts.instruction_prompt_json(["Name a river.", "Sort a list."], 5)
    assert "1. Name a river.\n2. Sort a list." in listing and "up to 5 new tasks as JSON" in listing
