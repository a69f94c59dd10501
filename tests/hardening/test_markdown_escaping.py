"""The Markdown rule: model text can never create a link, image, heading, HTML or a table cell,
and what a reader sees is exactly the text (with invisible characters shown)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from harness.cli import app
from harness.reporting.env import md_cell, md_table, report_environment
from harness.reporting.escaping import md_code, md_text, visible
from tests.hardening.corpus import HOSTILE, markup_made, shown_text, structure

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_text_creates_no_markup_and_reads_back_exactly(text: str) -> None:
    escaped = md_text(text)
    assert markup_made(escaped) == []
    assert shown_text(escaped) == visible(text).strip()


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_text_in_running_prose_after_a_line_creates_nothing(text: str) -> None:
    # A value at the start of a line right under a paragraph: setext underlines, list markers.
    document = f"Intro paragraph\n{md_text(text)}\n\nafter"
    assert markup_made(document) == []


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_table_cell_stays_one_cell(text: str) -> None:
    table = md_table([{"a": text, "b": "right"}], [("A", "a"), ("B", "b")])
    shape = [t for t, _ in structure(table)]
    assert shape.count("td_open") == 2 and shape.count("tr_open") == 2
    assert not {"link_open", "image", "html_block", "html_inline"} & set(shape)
    assert md_cell(text) in table


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_code_span_is_one_literal_span(text: str) -> None:
    span = md_code(text)
    assert markup_made(span) == []
    if text.strip():
        assert shown_text(span).strip() == visible(text).replace("\n", "\\n").strip()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=80))
def test_any_text_creates_no_markup(text: str) -> None:
    escaped = md_text(text)
    assert markup_made(escaped) == []
    assert markup_made(f"para\n{escaped}") == []


def _hostile_panel(tmp_path: Path, replace: bool) -> Path:
    """The Phase 2 panel with every free-text field a reviewer writes set to hostile text."""
    panel = tmp_path / ("hostile" if replace else "benign")
    shutil.copytree(ROOT / "fixtures" / "review" / "phase2", panel)
    counter = iter(range(10_000))

    def pick() -> str:
        n = next(counter)
        hostile = HOSTILE[n % len(HOSTILE)][:2000]
        # One benign text per hostile one (aggregation drops blanks and merges duplicates).
        return hostile if replace or not hostile.strip() else f"plain words {n % len(HOSTILE)}"

    for path in (panel / "reviews").glob("*.json"):
        review = json.loads(path.read_text())
        review["summary"] = pick()
        review["key_quote"] = pick() or "q"
        for finding in review["findings"]:
            finding["impact"] = pick()
            finding["recommendation"] = pick()
            finding["evidence"] = [pick(), pick()]
        path.write_text(json.dumps(review))
    return panel


def test_review_report_keeps_its_shape_under_hostile_reviews(tmp_path: Path) -> None:
    """Same panel, benign vs hostile free text: identical Markdown structure, no link or HTML
    beyond the template's own, and no raw control characters in any output file."""
    rendered = {}
    for replace in (False, True):
        out = tmp_path / f"out-{replace}"
        panel = _hostile_panel(tmp_path, replace)
        result = CliRunner().invoke(app, ["review", "render", str(panel), "--out", str(out)])
        assert result.exit_code == 0, result.output
        rendered[replace] = out
    benign = (rendered[False] / "review.md").read_text("utf-8")
    hostile = (rendered[True] / "review.md").read_text("utf-8")
    assert structure(hostile) == structure(benign)
    for suffix in ("md", "html", "json"):  # JSON is data: it keeps bidi characters, escapes C0
        body = (rendered[True] / f"review.{suffix}").read_text("utf-8")
        raw = "\x00\x1b\x07" if suffix == "json" else "\x00\x1b\x07\u202e\u2066"
        assert not any(ch in body for ch in raw), suffix
    html = (rendered[True] / "review.html").read_text("utf-8")
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "lone surrogate \ufffd and \ufffd" in hostile  # replaced where it was read


def test_prompt_templates_are_not_escaped() -> None:
    """String templates (prompts sent to a model) are plain text: no Markdown escaping there."""
    template = report_environment().from_string("{{ x }}")
    assert template.render(x="a_b [c] <d>") == "a_b [c] <d>"


def _evaluation_md(tmp_path: Path, text: str) -> str:
    from harness.evaluate.report import TargetInfo, TestEvidence, build_report, write_evaluation

    tests = [TestEvidence(nodeid=f"suites/x.py::t{i}", name=f"t{i}", gap=gap, outcome=outcome,
                          duration_s=0.1, message=text, doc=text, evidence=text)
             for i, (gap, outcome) in enumerate([("streaming", "failed"), ("cache", "passed"),
                                                 (None, "failed")])]
    target = TargetInfo(kind="live", base_url="http://h:1", server=text, version=text,
                        used_models=[text])
    report = build_report(tests, target, duration_s=1)
    report.problems = [text]
    return write_evaluation(report, tmp_path)["md"].read_text("utf-8")


def test_evaluation_report_keeps_its_shape_under_hostile_text(tmp_path: Path) -> None:
    benign = structure(_evaluation_md(tmp_path / "b", "plain words"))
    for i, text in enumerate(t for t in HOSTILE if t.strip()):
        md = _evaluation_md(tmp_path / str(i), text)
        assert structure(md) == benign, text


def test_load_report_keeps_its_shape_under_hostile_text(tmp_path: Path) -> None:
    from harness.load.finalize import RunFacts, finalize
    from harness.load.metrics import RequestRecord
    from harness.load.scenario import load_scenario

    def render(text: str, out: Path) -> str:
        out.mkdir(parents=True)
        scenario = load_scenario(ROOT / "fixtures" / "load" / "smoke.toml")
        scenario = scenario.model_copy(update={"name": "smoke", "description": text})
        record = RequestRecord(endpoint="/v1/chat/completions", model=MODEL, stream=True,
                               t_intended=1.0, t_send=1.0, ok=False, error_kind="http",
                               error=text, status=500)
        (out / "requests.jsonl").write_text(json.dumps(record.to_json()) + "\n")
        facts = RunFacts(t0=1.0, base_url="http://127.0.0.1:1", workers=1, cpu_max=None,
                         cpu_warning=False, run_errors=[text], interrupted=text)
        finalize(out, scenario, facts)
        return (out / "report.md").read_text("utf-8")

    MODEL = "qwen/qwen3-4b"
    benign = structure(render("plain words", tmp_path / "benign"))
    for i, text in enumerate(t for t in HOSTILE[::3] if t.strip()):  # one finalize each: slow
        md = render(text, tmp_path / str(i))
        assert structure(md) == benign, text
        assert not any(ch in md for ch in "\x00\x1b\u202e")
