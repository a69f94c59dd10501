"""The bodies of ``harness review`` and ``harness review render``: errors to exit codes.

Exit codes: 0 report written and quorum met; 1 report written but the quorum was not met (the
report says why); 2 bad input (roster, subject, output name) or a preflight failure; 3 the server
could not be reached at all.
"""

from __future__ import annotations

from pathlib import Path

import typer

from harness.client.errors import LMStudioError
from harness.reporting.escaping import visible
from harness.review.errors import PreflightError, ReviewError
from harness.review.service import render, run_review, summary_lines


def run_command(
    *,
    subject: Path,
    roster: Path | None,
    out: Path,
    base_url: str,
    api_token: str | None,
    name: str,
    use_cache: bool,
    progress: bool,
) -> int:
    try:
        outcome = run_review(
            subject_path=subject,
            roster_path=roster,
            out_dir=out,
            base_url=base_url,
            api_token=api_token,
            name=name,
            use_cache=use_cache,
            progress=progress,
        )
    except PreflightError as exc:
        typer.echo(visible(f"preflight failed: {exc}"), err=True)
        return 2
    except ReviewError as exc:
        typer.echo(visible(f"error: {exc}"), err=True)
        return 2
    except LMStudioError as exc:
        typer.echo(visible(f"server error: {exc}"), err=True)
        return 3
    for line in summary_lines(outcome):
        typer.echo(visible(line))
    return 0 if outcome.report.readiness.quorum_met else 1


def render_command(*, source: Path, out: Path, name: str) -> int:
    try:
        outcome = render(source, out, name)
    except ReviewError as exc:
        typer.echo(visible(f"error: {exc}"), err=True)
        return 2
    for line in summary_lines(outcome):
        typer.echo(visible(line))
    return 0
