"""The suites' detection power, tested: a subject with a known flaw (``flawed_subject``: accepts
streams without ``[DONE]`` or ``finish_reason``) must fail exactly the gaps it has, and a correct
client (``harness``) must pass the same tests."""

from __future__ import annotations

from harness.evaluate.report import EvaluationReport
from harness.evaluate.runner import EvaluationOptions, run_suites

FLAWED = "tests.evaluate.flawed_subject:create"


def outcomes(report: EvaluationReport, subject: str) -> dict[str, str]:
    [row] = [r for r in report.matrix if r.marker == "streaming"]
    [cell] = [c for c in row.cells if c.subject == subject]
    return {e.test: e.outcome for e in cell.evidence}


def test_flawed_subject_is_flagged_and_harness_is_not() -> None:
    report, _ = run_suites(EvaluationOptions(
        subjects=("harness", FLAWED), select="test_broken_stream_is_never_a_complete_answer"))
    assert not report.problems, report.problems
    flawed = outcomes(report, FLAWED)
    name = "test_broken_stream_is_never_a_complete_answer"
    assert flawed == {
        f"{name}[truncated-json]": "passed",  # its JSON parser raises: not accepted
        f"{name}[missing-done]": "failed",  # the flaw: no [DONE] taken as the end
        f"{name}[disconnect-after-3]": "passed",  # httpx raises on the torn body
        f"{name}[malformed-line]": "passed",
        f"{name}[done-without-finish]": "failed",  # the flaw: finish_reason never checked
    }, flawed
    assert set(outcomes(report, "harness").values()) == {"passed"}
    [row] = [r for r in report.matrix if r.marker == "streaming"]
    status = {c.subject: c.status for c in row.cells}
    assert status == {"harness": "PASS", FLAWED: "FAIL"}
    [evidence] = [e for c in row.cells if c.subject == FLAWED for e in c.evidence
                  if e.test == f"{name}[missing-done]"]
    assert "returned" in evidence.detail and "as an answer" in evidence.detail, evidence
