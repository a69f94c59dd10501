"""The evaluation report: gap verdicts, normalisation, escaping, the golden example."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.evaluate.example import COMPARISON_NAME, example_dir, load_example, regenerate
from harness.evaluate.gaps import GAPS, gap_of
from harness.evaluate.report import (
    TargetInfo,
    TestEvidence,
    build_report,
    gap_status,
    normalised,
    write_evaluation,
)

OUTCOMES = st.sampled_from(["passed", "failed", "skipped", "error"])


def evidence(gap: str | None, outcome: Any, **kw: Any) -> TestEvidence:
    kw.setdefault("name", "t")
    return TestEvidence(nodeid=f"suites/x.py::t_{gap}_{outcome}_{kw['name']}", gap=gap,
                        outcome=outcome, **kw)


@given(st.lists(OUTCOMES, max_size=8))
def test_gap_status_rule(outcomes: list[str]) -> None:
    status = gap_status([evidence("streaming", o) for o in outcomes])
    if "failed" in outcomes or "error" in outcomes:
        assert status == "FAIL"
    elif "passed" in outcomes:
        assert status == "PASS"
    else:
        assert status == "SKIP"


def test_every_gap_is_reported_and_one_failure_fails_the_verdict() -> None:
    tests = [evidence("streaming", "passed"), evidence("backoff", "failed", message="boom"),
             evidence("cache", "skipped", message="no truth"), evidence(None, "passed")]
    report = build_report(tests, None, duration_s=1.5)
    by_marker = {g.marker: g for g in report.gaps}
    assert [g.marker for g in report.gaps] == [g.marker for g in GAPS]
    assert by_marker["streaming"].status == "PASS"
    assert by_marker["backoff"].status == "FAIL"
    assert by_marker["cache"].status == "SKIP" and by_marker["errors"].status == "SKIP"
    assert report.verdict == "FAIL" and [g.marker for g in report.failed_gaps] == ["backoff"]
    assert len(report.other_tests) == 1
    passing = build_report([evidence("streaming", "passed")], None, duration_s=1.0)
    assert passing.verdict == "PASS"
    assert build_report([], None, duration_s=0, problems=["no suite test ran"]).verdict == "FAIL"


def test_matrix_cells_judge_each_subject_on_its_own_tests() -> None:
    """A subject's cell counts the tests that judged it and the tests of no particular client;
    a gap with none of those is N/A for it (never PASS), and the test names lose the subject."""
    tests = [
        evidence("streaming", "passed", subject="harness", name="test_s[harness-cut]"),
        evidence("streaming", "failed", subject="openai", name="test_s[openai-cut]",
                 message="returned 3 chars"),
        evidence("cache", "passed", subject="harness", name="test_cache"),
        evidence("errors", "passed", subject=None, name="test_server_side"),
        evidence("backoff", "skipped", subject="openai", name="test_b[openai]",
                 message="subject openai does not offer: async"),
        evidence("agent", "skipped", subject="harness", name="test_a",
                 message="not applicable: tests the harness's own API"),
    ]
    report = build_report(tests, None, duration_s=1, subjects=["harness", "openai"])
    cells = {row.marker: {c.subject: c for c in row.cells} for row in report.matrix}
    assert cells["streaming"]["harness"].status == "PASS"
    assert cells["streaming"]["openai"].status == "FAIL"
    assert [e.test for e in cells["streaming"]["openai"].evidence] == ["test_s[cut]"]
    assert cells["streaming"]["openai"].evidence[0].detail == "returned 3 chars"
    assert cells["cache"]["openai"].status == "N/A" and cells["cache"]["harness"].status == "PASS"
    assert cells["errors"]["openai"].status == cells["errors"]["harness"].status == "PASS"
    assert cells["backoff"]["openai"].status == "SKIP"  # applies, but could not run
    assert cells["agent"]["harness"].status == "N/A"  # a not-applicable skip proves nothing
    assert report.matrix[0].tests == ["test_s[cut]"]


def test_gap_of_uses_review_order() -> None:
    assert gap_of({"needs_truth", "backoff", "streaming"}).marker == "streaming"  # type: ignore
    assert gap_of({"slow"}) is None


def test_normalised_removes_volatile_fields() -> None:
    target = TargetInfo(kind="emulator", base_url="http://127.0.0.1:45678", version="0.1.0")
    tests = [evidence("errors", "passed", duration_s=0.123,
                      evidence="POST http://127.0.0.1:45678/v1/x (attempt 2/2, 0.01s) in 12 ms")]
    report = build_report(tests, target, duration_s=9.9,
                          now=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    norm = normalised(report)
    dumped = norm.model_dump_json()
    for volatile in ("45678", "2030-01-02", "0.123", "0.01s", "12 ms", "9.9"):
        assert volatile not in dumped, volatile
    assert "attempt 2/2" in dumped and "127.0.0.1:PORT" in dumped
    assert report.gaps[2].tests[0].duration_s == 0.123  # the original is untouched


def test_html_is_escaped_and_self_contained(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script> | pipe'
    report = build_report([evidence("streaming", "failed", message=hostile, doc=hostile)],
                          TargetInfo(kind="live", base_url="http://h:1", server=hostile),
                          duration_s=1)
    paths = write_evaluation(report, tmp_path)
    html = paths["html"].read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "http://" not in html.replace("http://h:1", "")  # no external assets
    md = paths["md"].read_text()
    assert "\\| pipe" in md  # table cells stay intact
    assert json.loads(paths["json"].read_text())["verdict"] == "FAIL"


def test_golden_example_report(tmp_path: Path) -> None:
    """The committed example is exactly what the templates make of its JSON. With
    HARNESS_UPDATE_GOLDEN=1 it is first regenerated from a real run of the suites."""
    if os.environ.get("HARNESS_UPDATE_GOLDEN") == "1":
        regenerate()
    committed = example_dir()
    if not (committed / "evaluation.json").exists():
        pytest.fail(f"no example report in {committed}; run with HARNESS_UPDATE_GOLDEN=1")
    example = load_example(committed)
    assert example == normalised(example), "the committed example is not normalised"
    assert example.verdict == "PASS" and all(g.status == "PASS" for g in example.gaps)
    paths = write_evaluation(example, tmp_path)
    for fmt, path in paths.items():
        expected = (committed / f"evaluation.{fmt}").read_text(encoding="utf-8")
        assert path.read_text(encoding="utf-8") == expected, f"evaluation.{fmt} differs"


def test_golden_comparison_report(tmp_path: Path) -> None:
    """The committed comparison (harness vs the openai SDK) renders exactly as committed, and
    says what the suites found: the SDK fails the truncated-stream and wrong-model gaps, the
    harness passes every gap it claims, and gaps proved only through the harness's API are
    N/A for the SDK. Regenerated with HARNESS_UPDATE_GOLDEN=1 (see the test above)."""
    committed = example_dir()
    if not (committed / f"{COMPARISON_NAME}.json").exists():
        pytest.fail(f"no comparison report in {committed}; run with HARNESS_UPDATE_GOLDEN=1")
    example = load_example(committed, COMPARISON_NAME)
    assert example == normalised(example), "the committed comparison is not normalised"
    assert example.subjects == ["harness", "openai"]
    cells = {row.marker: {c.subject: c for c in row.cells} for row in example.matrix}
    assert all(c["harness"].status == "PASS" for c in cells.values())
    assert cells["streaming"]["openai"].status == "FAIL"
    assert cells["switching"]["openai"].status == "FAIL"
    failed = {e.test for e in cells["streaming"]["openai"].evidence if e.outcome == "failed"}
    assert "test_broken_stream_is_never_a_complete_answer[missing-done]" in failed
    assert cells["cache"]["openai"].status == cells["agent"]["openai"].status == "N/A"
    paths = write_evaluation(example, tmp_path, name=COMPARISON_NAME)
    for fmt, path in paths.items():
        expected = (committed / f"{COMPARISON_NAME}.{fmt}").read_text(encoding="utf-8")
        assert path.read_text(encoding="utf-8") == expected, f"{COMPARISON_NAME}.{fmt} differs"
