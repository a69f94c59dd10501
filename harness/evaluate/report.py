"""The evaluation report: a pydantic model over the per-test outcomes, grouped by gap.

The report is data first (JSON is the canonical form); Markdown and HTML are Jinja views of the
same dump rendered through the shared ``harness.reporting`` environment. ``normalised`` replaces
what changes from run to run (times, ports, dates, versions) so a committed example can be
compared with a fresh run.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.evaluate.gaps import GAPS

Outcome = Literal["passed", "failed", "skipped", "error"]
Status = Literal["PASS", "FAIL", "SKIP"]
CellStatus = Literal["PASS", "FAIL", "SKIP", "N/A"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestEvidence(_Model):
    """One test: what it guards (docstring), how it ended, and what it measured."""

    __test__ = False  # not a pytest test class

    nodeid: str
    name: str
    gap: str | None
    outcome: Outcome
    duration_s: float = 0.0
    doc: str = ""
    evidence: str = ""
    message: str = ""
    subject: str | None = None  # the subject it judged; None: a test of no particular client


class CellEvidence(_Model):
    test: str  # the test's name without the subject's id
    outcome: Outcome
    detail: str = ""


class MatrixCell(_Model):
    """One gap for one subject: PASS / FAIL / SKIP, or N/A when no test applies to it (a gap
    proved only through the harness's own API, for another client)."""

    subject: str
    status: CellStatus
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    evidence: list[CellEvidence] = Field(default_factory=list)


class MatrixRow(_Model):
    marker: str
    title: str
    cells: list[MatrixCell]
    tests: list[str] = Field(default_factory=list)  # every test shown in the row, in order


class GapResult(_Model):
    marker: str
    title: str
    severity: str
    reference: str
    risk: str
    status: Status
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    duration_s: float = 0.0
    tests: list[TestEvidence] = Field(default_factory=list)


class ModelEntry(_Model):
    id: str | None
    type: str | None = None
    state: str | None = None


class TargetInfo(_Model):
    kind: str
    base_url: str
    server: str | None = None
    version: str | None = None
    models: list[ModelEntry] = Field(default_factory=list)
    used_models: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    calibration: str | None = None  # the time scale used, and the measurements behind it


class Totals(_Model):
    tests: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    duration_s: float = 0.0


class EvaluationReport(_Model):
    title: str = "LM Studio Harness evaluation"
    generated_at: str
    harness_version: str
    reference: str = "phase2-review-analysis.md"
    verdict: Literal["PASS", "FAIL"]
    target: TargetInfo | None
    totals: Totals
    gaps: list[GapResult]
    other_tests: list[TestEvidence] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    target_error: str | None = None  # the target could not be used: nothing was evaluated
    subjects: list[str] = Field(default_factory=lambda: ["harness"])
    matrix: list[MatrixRow] = Field(default_factory=list)

    @property
    def failed_gaps(self) -> list[GapResult]:
        return [g for g in self.gaps if g.status == "FAIL"]


def gap_status(tests: list[TestEvidence]) -> Status:
    """FAIL if any test failed, PASS if at least one passed, else SKIP (nothing proved)."""
    if any(t.outcome in ("failed", "error") for t in tests):
        return "FAIL"
    if any(t.outcome == "passed" for t in tests):
        return "PASS"
    return "SKIP"


def _counts(tests: list[TestEvidence]) -> dict[str, int]:
    """Passed, failed (an error counts as a failure) and skipped, for a gap or the whole run."""
    return {"passed": sum(t.outcome == "passed" for t in tests),
            "failed": sum(t.outcome in ("failed", "error") for t in tests),
            "skipped": sum(t.outcome == "skipped" for t in tests)}


def display_name(test: TestEvidence) -> str:
    """``test_x[openai-missing-done]`` -> ``test_x[missing-done]``: the subject is the column."""
    if test.subject is None:
        return test.name
    name = test.name.replace(f"[{test.subject}]", "")
    return name.replace(f"[{test.subject}-", "[").replace(f"-{test.subject}]", "]")


def cell_status(tests: list[TestEvidence]) -> CellStatus:
    return gap_status(tests) if tests else "N/A"


def applies(test: TestEvidence, subject: str) -> bool:
    return test.subject is None or test.subject == subject


def build_matrix(tests: list[TestEvidence], subjects: list[str]) -> list[MatrixRow]:
    """Gap x subject: each cell over the tests that judged that subject (or no client)."""
    rows = []
    for gap in GAPS:
        cells = []
        for subject in subjects:
            mine = [t for t in tests if t.gap == gap.marker and applies(t, subject)
                    and not (t.outcome == "skipped" and t.message.startswith("not applicable"))]
            cells.append(MatrixCell(
                subject=subject, status=cell_status(mine), **_counts(mine),
                evidence=[CellEvidence(test=display_name(t), outcome=t.outcome,
                                       detail=(t.evidence or t.message) if t.outcome == "passed"
                                       else (t.message or t.evidence))
                          for t in mine]))
        names = list(dict.fromkeys(e.test for c in cells for e in c.evidence))
        rows.append(MatrixRow(marker=gap.marker, title=gap.title, cells=cells, tests=names))
    return rows


def build_report(tests: list[TestEvidence], target: TargetInfo | None, *, duration_s: float,
                 problems: list[str] | None = None, now: datetime | None = None,
                 target_error: str | None = None, subjects: list[str] | None = None
                 ) -> EvaluationReport:
    from harness import __version__

    gaps = []
    for gap in GAPS:
        mine = [t for t in tests if t.gap == gap.marker]
        gaps.append(GapResult(
            marker=gap.marker, title=gap.title, severity=gap.severity, reference=gap.reference,
            risk=gap.risk, status=gap_status(mine), **_counts(mine),
            duration_s=round(sum(t.duration_s for t in mine), 3), tests=mine,
        ))
    totals = Totals(tests=len(tests), **_counts(tests), duration_s=round(duration_s, 3))
    problems = list(problems or [])
    subjects = list(subjects or ["harness"])
    failed = (any(g.status == "FAIL" for g in gaps) or totals.failed > 0 or bool(problems)
              or target_error is not None)
    return EvaluationReport(
        generated_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        harness_version=__version__, verdict="FAIL" if failed else "PASS", target=target,
        totals=totals, gaps=gaps, other_tests=[t for t in tests if t.gap is None],
        problems=problems, target_error=target_error, subjects=subjects,
        matrix=build_matrix(tests, subjects),
    )


_PORT = re.compile(r"(127\.0\.0\.1|localhost):\d+")
_MILLIS = re.compile(r"(?<![\d.])\d+(?=\s?ms\b)")
_FLOAT = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])")


def _scrub(text: str) -> str:
    """Ports, milliseconds and decimals (measured values) become placeholders; integers that
    are not milliseconds (counts, caps, attempts) stay, as they are part of the claim."""
    text = _PORT.sub(r"\1:PORT", text)
    text = _MILLIS.sub("N", text)
    return _FLOAT.sub("N", text)


def normalised(report: EvaluationReport) -> EvaluationReport:
    """The report with run-to-run noise replaced: timestamps, durations, ports, measured
    numbers inside evidence strings, and the harness version."""
    data = report.model_copy(deep=True)
    data.generated_at = "GENERATED_AT"
    data.harness_version = "VERSION"
    data.totals.duration_s = 0.0
    if data.target is not None:
        data.target.base_url = _scrub(data.target.base_url)
        data.target.version = "VERSION" if data.target.version else None
    for gap in data.gaps:
        gap.duration_s = 0.0
    for test in [*(t for g in data.gaps for t in g.tests), *data.other_tests]:
        test.duration_s = 0.0
        test.evidence = _scrub(test.evidence)
        test.message = _scrub(test.message)
    for cell in (c for row in data.matrix for c in row.cells):
        for item in cell.evidence:
            item.detail = _scrub(item.detail)
    data.problems = [_scrub(p) for p in data.problems]
    if data.target is not None and data.target.calibration:
        data.target.calibration = _scrub(data.target.calibration)
    return data


def write_evaluation(report: EvaluationReport, out_dir: Path | str, name: str = "evaluation"
                     ) -> dict[str, Path]:
    """``<name>.md``, ``<name>.html`` and ``<name>.json`` in ``out_dir`` (the evaluation
    templates whatever the name)."""
    from harness.reporting.env import write_report

    written = write_report(report, name, out_dir, template="evaluation")
    return dict(written.paths)
