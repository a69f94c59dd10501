"""The ``harness evaluate`` command: options in, progress and a summary table out, exit code."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.evaluate.report import EvaluationReport
from harness.evaluate.runner import EvaluationError, EvaluationOptions, evaluate
from harness.reporting.terminal import console as safe_console
from harness.reporting.terminal import term

TARGET_ERROR = 3  # exit code: the target could not be used; distinct from 1 (a gap failed)
_STYLE = {"PASS": "bold green", "FAIL": "bold red", "SKIP": "yellow", "N/A": "dim"}


def summary_table(report: EvaluationReport) -> Table:
    table = Table(title=f"Gaps of {term(report.reference)}")
    for column in ("Gap", "Severity", "Status", "Pass/Fail/Skip", "Time (s)"):
        table.add_column(column)
    for gap in report.gaps:
        table.add_row(term(gap.title), term(gap.severity), f"[{_STYLE[gap.status]}]{gap.status}",
                      f"{gap.passed}/{gap.failed}/{gap.skipped}", f"{gap.duration_s:.2f}")
    return table


def matrix_table(report: EvaluationReport) -> Table:
    """Gap x subject, for a comparison of several clients."""
    table = Table(title="Gaps by subject (the client judged)")
    table.add_column("Gap")
    for subject in report.subjects:
        table.add_column(term(subject))
    for row in report.matrix:
        table.add_row(term(row.title), *(f"[{_STYLE[c.status]}]{c.status}" for c in row.cells))
    return table


def run_evaluate(*, base_url: str | None, out: Path, models: str | None, via_proxy: bool,
                 replay: bool, suites: Path | None, select: str | None,
                 api_token: str | None, subjects: tuple[str, ...] = (),
                 console: Console | None = None) -> int:
    """0 when no gap failed; 1 when one did; 2 when the evaluation could not run; 3 when the
    target could not be used (unreachable, token refused, no LLM server, unknown model)."""
    console = console or safe_console(stderr=True)
    options = EvaluationOptions(
        base_url=base_url, api_token=api_token, via_proxy=via_proxy, replay=replay,
        models=tuple(m.strip() for m in (models or "").split(",") if m.strip()),
        suites=suites, out=out, select=select, subjects=subjects)
    try:
        report, paths = evaluate(options, console)
    except EvaluationError as exc:
        console.print(f"[bold red]evaluation could not run:[/] {term(exc)}")
        return 2
    if report.target_error is not None:  # a set-up mistake, not a regression: no gap table
        console.print(f"[bold red]target error:[/] {term(report.target_error)}")
        return TARGET_ERROR
    console.print(summary_table(report) if len(report.subjects) == 1 else matrix_table(report))
    for problem in report.problems:
        console.print(f"[bold red]problem:[/] {term(problem)}")
    for gap in report.failed_gaps:
        for test in gap.tests:
            if test.outcome in ("failed", "error"):
                console.print(f"[red]FAIL[/] {term(gap.title)}: {term(test.name)}: "
                              f"{term(test.message)}")
    target = report.target
    where = f"{term(target.kind)} at {term(target.base_url)}" if target else "no target"
    console.print(f"[{_STYLE[report.verdict]}]{report.verdict}[/] against {where}; "
                  f"{report.totals.passed} passed, {report.totals.failed} failed, "
                  f"{report.totals.skipped} skipped in {report.totals.duration_s:.1f} s")
    for fmt, path in paths.items():
        console.print(f"  {fmt:<4} {term(path)}")
    return 0 if report.verdict == "PASS" else 1
