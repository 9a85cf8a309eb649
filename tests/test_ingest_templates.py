"""FLAN-style rendering (zero/few-shot, options on/off, lettered) and mixing (caps, weights, totals)."""

from __future__ import annotations

import pytest

from instructforge.errors import InputError
from instructforge.ingest.collection import Collection, load_collection, render_task, variants
from instructforge.ingest.config import MixingConfig, RenderConfig
from instructforge.ingest.mixing import Pool, allocate, mix
from instructforge.ingest.readers import BadInput
from instructforge.ingest.templates import Template, TemplateError, few_shot, fill, options_block

COLLECTION = """\
name: tiny
tasks:
  - name: colour
    category: classification
    options: [red, green]
    templates:
      - ["Thing: {thing}\\nWhat colour is it?{options}", "{colour}"]
      - {input: "{thing} is which colour?", target: "{colour}"}
      - ["Colour of {thing}:{options}", "{colour}"]
    rows:
      - {thing: tomato, colour: red}
      - {thing: grass, colour: green}
      - {thing: cherry, colour: red}
      - {thing: lime, colour: green}
      - {thing: brick, colour: red}
  - name: double
    category: arithmetic
    templates:
      - ["Double {n}.", "{m}"]
      - ["What is two times {n}?", "{m}"]
    rows:
      - {n: 2, m: 4}
      - {n: 3.0, m: 6}
      - {n: 10, m: 20}
"""


@pytest.fixture
def tiny(tmp_path) -> Collection:
    path = tmp_path / "tiny.yaml"
    path.write_text(COLLECTION, encoding="utf-8")
    return load_collection(path, BadInput(strict=True))


def _render(collection: Collection, task: str = "colour", seed: int = 0, **render) -> list[dict]:
    t = next(t for t in collection.tasks if t.name == task)
    return list(render_task(t, collection, RenderConfig(**render), seed, BadInput(strict=True)))


def test_options_block_styles():
    assert options_block(["a", "b"], "flan") == "\n\nOPTIONS:\n- a\n- b"
    assert options_block(["a", "b"], "letters") == "\n\nOPTIONS:\n(A) a\n(B) b"
    assert options_block(["a", "b"], None) == options_block([], "flan") == ""


def test_fill_with_and_without_options():
    t = Template.parse("Q: {q}{options}", "{a}")
    assert fill(t, {"q": "sky?", "a": "blue"}, ["blue", "red"], "flan") == ("Q: sky?\n\nOPTIONS:\n- blue\n- red", "blue")
    assert fill(t, {"q": "sky?", "a": "blue"}, ["blue", "red"], None) == ("Q: sky?", "blue")
    # no {options} placeholder: the block is appended
    assert fill(Template.parse("Q: {q}", "{a}"), {"q": "x", "a": "y"}, ["y"], "flan")[0] == "Q: x\n\nOPTIONS:\n- y"
    # braces inside values are data, not placeholders
    assert fill(t, {"q": "{a}", "a": "1"}, [], None) == ("Q: {a}", "1")
    with pytest.raises(TemplateError, match="needs field 'q'") as e:
        fill(t, {"a": "x"}, [], None)
    assert e.value.field == "q"


def test_bad_template_text_is_rejected_at_parse():
    with pytest.raises(TemplateError, match="bad input template"):
        Template.parse("unclosed {brace", "x")
    with pytest.raises(TemplateError, match="format specs"):
        Template.parse("{n:>3}", "x")
    assert Template.parse("literal {{braces}} and {x}", "{y}").fields == {"x", "y"}


def test_zero_shot_with_options(tiny):
    rows = _render(tiny, shots=[0], options="on")
    assert len(rows) == 5 and {r["template"] for r in rows} == {"zero-shot+options"}
    tomato = rows[0]
    assert tomato["output"] == "red" and tomato["input"] == ""
    assert "OPTIONS:\n- red\n- green" in tomato["instruction"] and "tomato" in tomato["instruction"]
    assert tomato["meta"]["category"] == "classification" and tomato["meta"]["options"] == "flan"
    assert tomato["source"] == "collection:tiny.yaml" and tomato["task"] == "colour"


def test_options_off_and_letters(tiny):
    off = _render(tiny, options="off")
    assert all("OPTIONS" not in r["instruction"] and r["template"] == "zero-shot" for r in off)
    letters = _render(tiny, options_style="letters")
    assert all("(A) red\n(B) green" in r["instruction"] and r["template"] == "zero-shot+letters" for r in letters)


def test_few_shot_uses_other_rows_of_the_same_task(tiny):
    rows = _render(tiny, shots=[2], options="off")
    for i, r in enumerate(rows):
        assert r["template"] == "2-shot" and r["meta"]["shots"] == "2"
        blocks = r["instruction"].split("\n\n")
        assert len(blocks) == 3 and blocks[-1].endswith("\nAnswer:")
        things = ["tomato", "grass", "cherry", "lime", "brick"]
        assert things[i] in blocks[-1]
        shots = [next(t for t in things if t in b) for b in blocks[:2]]
        assert things[i] not in shots and len(set(shots)) == 2
        for b, t in zip(blocks[:2], shots, strict=True):  # each exemplar carries its own answer
            assert b.endswith("\nAnswer: " + ("red" if t in ("tomato", "cherry", "brick") else "green"))


def test_few_shot_separators_are_configurable(tiny):
    rows = _render(tiny, shots=[1], options="off", example_separator="\n###\n", answer_separator=" => ")
    assert all(r["instruction"].count("\n###\n") == 1 and r["instruction"].endswith("=>") for r in rows)


def test_few_shot_k_is_capped_by_the_task_size(tiny):
    rows = _render(tiny, "double", shots=[5])
    assert {r["meta"]["shots"] for r in rows} == {"2"}


def test_template_choice_is_deterministic_by_seed(tiny):
    a = _render(tiny, seed=1, shots=[0, 1], options="both", options_style="both")
    assert a == _render(tiny, seed=1, shots=[0, 1], options="both", options_style="both")
    others = [_render(tiny, seed=s, shots=[0, 1], options="both", options_style="both") for s in range(2, 6)]
    assert any([r["id"] for r in o] != [r["id"] for r in a] for o in others)


def test_several_templates_per_row_and_all_variants(tiny):
    rows = _render(tiny, templates_per_row=2, options="off")
    assert len(rows) == 10
    for i in range(5):
        ids = {r["meta"]["template_id"] for r in rows if r["meta"]["row"] == str(i)}
        assert len(ids) == 2
    every = _render(tiny, templates_per_row=3, shots=[0, 1], options="both", variants="all")
    # 5 rows x 3 templates x 2 shot counts x (options, no options)
    assert len(every) == 60 and len({r["id"] for r in every}) == 60
    assert {r["template"] for r in every} == {"zero-shot", "zero-shot+options", "1-shot", "1-shot+options"}


def test_variants_collapse_options_for_tasks_without_options():
    render = RenderConfig(shots=[0, 2], options="both", options_style="both")
    assert variants(render, has_options=False) == [(0, None), (2, None)]
    assert variants(render, has_options=True) == [(0, "flan"), (0, "letters"), (0, None),
                                                 (2, "flan"), (2, "letters"), (2, None)]


def test_numbers_render_as_text(tiny):
    rows = _render(tiny, "double")
    assert [r["output"] for r in rows] == ["4", "6", "20"]
    assert "3" in rows[1]["instruction"] and "3.0" not in rows[1]["instruction"]


def test_ids_are_content_hashes_stable_across_runs(tiny):
    from instructforge.records import Example

    rows = _render(tiny)
    for r in rows:
        assert r["id"] == Example(**r).id
    assert [r["id"] for r in rows] == [r["id"] for r in _render(tiny)]


def test_missing_field_in_template_names_file_line_and_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tasks:\n  - name: t\n    templates: [['{a} {b}', '{c}']]\n    rows:\n"
                    "      - {a: 1, b: 2, c: 3}\n      - {a: 1, c: 3}\n", encoding="utf-8")
    strict = load_collection(path, BadInput(strict=True))
    with pytest.raises(InputError) as e:
        list(render_task(strict.tasks[0], strict, RenderConfig(), 0, BadInput(strict=True)))
    assert str(e.value).startswith(f"{path}:6: field 'tasks[0].rows[1].b'") and "template 0" in str(e.value)
    lenient = BadInput(strict=False)
    rows = list(render_task(strict.tasks[0], strict, RenderConfig(), 0, lenient))
    assert len(rows) == 1 and len(lenient.rows) == 1
    assert lenient.rows[0]["evidence"] == {"file": str(path), "line": "6", "field": "tasks[0].rows[1].b"}


@pytest.mark.parametrize("text, message", [
    ("tasks: []\n", "non-empty `tasks` list"),
    ("tasks:\n  - {name: t, rows: [{a: 1}]}\n", "non-empty list of templates"),
    ("tasks:\n  - {name: t, templates: [['{a}', '{a}']]}\n", "either inline `rows` or a `source`"),
    ("tasks:\n  - {name: t, templates: [['{a}']], rows: [{a: 1}]}\n", r"a template is \[input, target\]"),
    ("tasks:\n  - {name: t, templtes: [], rows: []}\n", "unknown key"),
    ("tasks:\n  - {name: t, templates: [['{a', '{a}']], rows: [{a: 1}]}\n", "bad input template"),
    ("tasks:\n" + "  - {name: t, templates: [['{a}', '{a}']], rows: [{a: 1}]}\n" * 2, "duplicate task name"),
    ("tasks:\n  - {name: t, options: red, templates: [['{a}', '{a}']], rows: [{a: 1}]}\n", "list of strings"),
    ("tasks:\n  - {name: t\n", "invalid YAML"),
])
def test_malformed_collections_name_the_file(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as e:
        load_collection(path, BadInput(strict=False))
    assert str(e.value).startswith(str(path))


def test_json_collection_and_task_source_file(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"w": "cat"}\n{"w": "dog"}\n', encoding="utf-8")
    path = tmp_path / "c.json"
    path.write_text('{"tasks": [{"name": "upper", "source": "rows.jsonl", '
                    '"templates": [["Shout {w}", "{w}!"]]}]}', encoding="utf-8")
    c = load_collection(path, BadInput(strict=True))
    rows = list(render_task(c.tasks[0], c, RenderConfig(), 0, BadInput(strict=True)))
    assert [(r["instruction"], r["output"]) for r in rows] == [("Shout cat", "cat!"), ("Shout dog", "dog!")]
    assert rows[1]["meta"]["line"] == "2"


def test_few_shot_helper():
    assert few_shot([("1+1", "2")], "2+2", "\n\n", "\n= ") == "1+1\n= 2\n\n2+2\n="


def test_allocate_is_proportional_capped_and_exact():
    assert allocate(10, [1, 1], [100, 100]) == [5, 5]
    assert allocate(10, [3, 1], [100, 100]) == [8, 2]  # 7.5 / 2.5: ties go to the earlier source
    assert allocate(10, [1, 1], [2, 100]) == [2, 8]  # a small source's unused share moves on
    assert allocate(7, [1, 1, 1], [10, 10, 10]) == [3, 2, 2]
    assert allocate(9, [1, 2], [10, 4]) == [5, 4]
    assert allocate(50, [1, 2], [3, 4]) == [3, 4]  # asks for more than there is: everything
    assert allocate(5, [0, 1], [10, 10]) == [0, 5]


def _rows(task: str, n: int) -> list[dict]:
    return [{"id": f"{task}-{i}", "task": task, "instruction": str(i)} for i in range(n)]


def test_task_cap_is_examples_proportional_with_a_cap():
    pool = Pool("p", 1.0, _rows("big", 100) + _rows("small", 5))
    kept, rejected, stats = mix([pool], MixingConfig(max_per_task=10), seed=0)
    assert sum(r["task"] == "big" for r in kept) == 10 and sum(r["task"] == "small" for r in kept) == 5
    cap = next(g for g in rejected if g.filter == "task_cap")
    assert len(cap.rows) == 90 and "max_per_task=10" in cap.rows[0]["reason"]
    assert stats["funnel"] == [{"filter": "task_cap", "rows_in": 105, "rows_out": 15}]
    # deterministic and independent of input order
    again, _, _ = mix([Pool("p", 1.0, list(reversed(pool.rows)))], MixingConfig(max_per_task=10), seed=0)
    assert {r["id"] for r in again} == {r["id"] for r in kept}
    other, _, _ = mix([pool], MixingConfig(max_per_task=10), seed=1)
    assert {r["id"] for r in other} != {r["id"] for r in kept}


def test_mixture_weights_across_sources_and_total():
    a = Pool("a", 3.0, _rows("a1", 50) + _rows("a2", 50))
    b = Pool("b", 1.0, _rows("b1", 100))
    kept, rejected, stats = mix([a, b], MixingConfig(total=40), seed=0)
    assert len(kept) == 40
    assert sum(r["task"].startswith("a") for r in kept) == 30 and sum(r["task"] == "b1" for r in kept) == 10
    assert sum(r["task"] == "a1" for r in kept) == 15  # tasks within a source: by their size
    mixed = next(g for g in rejected if g.filter == "mixture")
    assert len(mixed.rows) == 160 and "weight 3" in mixed.rows[0]["reason"]
    assert stats["sources"]["a"]["kept"] == 30
    # cap first, then the total: tasks' shares follow their capped sizes
    kept, _, _ = mix([Pool("p", 1.0, _rows("big", 1000) + _rows("small", 10))],
                     MixingConfig(max_per_task=30, total=20), seed=0)
    assert sum(r["task"] == "big" for r in kept) == 15 and sum(r["task"] == "small" for r in kept) == 5
