"""The HTML report is built from the run directory alone."""

from __future__ import annotations

from instructforge.records import Example
from instructforge.report import write_report
from instructforge.runs import RunDir


def test_report_has_funnel_lengths_verbs_examples_and_rejections(tmp_path):
    run = RunDir(tmp_path / "demo")
    rows = [Example(instruction=f"Classify review number {i} as positive or negative.", input=f"r{i}",
                    output="positive", task=f"t{i % 3}").model_dump() for i in range(30)]

    def ingest(ctx):
        ctx.write(rows)

    def filter_(ctx):
        kept = ctx.inputs[0].table().to_pylist()
        ctx.write(kept[:25])
        ctx.reject(kept[25:], filter="minhash", reason="near-duplicate of abc (0.91)")
        return {"funnel": [{"filter": "minhash", "rows_in": 30, "rows_out": 25}]}

    first, _ = run.run_stage(1, "ingest", config={}, inputs=[], code="v", fn=ingest)
    run.run_stage(3, "filter", config={}, inputs=[first], code="v", fn=filter_)
    html = write_report(run.root).read_text()
    for needle in ("Filter funnel", "03-filter / minhash", "Length distributions", "Top leading verbs",
                   "<td>classify</td><td class=n>25</td>", "Example rows", "near-duplicate of abc (N)"):
        assert needle in html, needle


def test_similarity_histogram_says_when_scores_are_lower_bounds(tmp_path):
    run = RunDir(tmp_path / "demo")
    rows = [Example(instruction=f"Write a haiku about topic {i}.", task=f"selfinstruct-{i}",
                    meta={"nearest_score": str(0.05 + 0.1 * i)}).model_dump() for i in range(6)]

    def generate(ctx):
        ctx.write(rows)

    for exact_above, caption in ((0.5, "scores below 0.5 are lower bounds"), (0.0, "6 generated tasks</")):
        run.run_stage(2, "generate", config={"section": {"nearest_exact_above": exact_above}}, inputs=[],
                      code="v", fn=generate)
        html = write_report(run.root).read_text()
        assert "Similarity to nearest instruction" in html and caption in html
