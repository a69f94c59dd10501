"""What the ``harness review`` commands do, as plain functions (the CLI only parses options).

A run writes into one output directory::

    OUT/run.json        every reviewer's raw answer, parse layer, status and the manifest
    OUT/cache/          raw answers by request hash (a re-run with the cache calls no model)
    OUT/<name>.md|.html|.json   the aggregated report

``render`` rebuilds the report from ``run.json`` or from a panel of canned reviews, offline.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from harness.reporting.env import ReportPathError, WrittenReport, safe_output_path
from harness.review.errors import ReviewOutputError
from harness.review.models import RunRecord
from harness.review.report import ReviewReport, build_report, render_report
from harness.review.roster import load_roster
from harness.review.sources import RUN_FILE, load_source
from harness.review.subject import load_subject


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    record: RunRecord
    report: ReviewReport
    written: WrittenReport
    run_file: Path


def _check_name(out_dir: Path, name: str) -> None:
    try:
        for suffix in ("md", "html", "json"):
            safe_output_path(out_dir, f"{name}.{suffix}")
    except ReportPathError as exc:
        raise ReviewOutputError(str(exc)) from exc


def _synthesis_summary(report: ReviewReport) -> str:
    lines = [f"Review of: {report.title}", f"Verdict: {report.readiness.headline}"]
    for tier, items in report.recommendations.items():
        for rec in items:
            lines.append(f"[{tier}] {rec.title} (reported by {', '.join(rec.reported_by)})")
    lines += [f"Strength: {s.text} ({s.support}/{s.panel_size})" for s in report.strengths[:5]]
    return "\n".join(lines)


async def run_review_async(
    *,
    subject_path: Path,
    roster_path: Path | None,
    out_dir: Path,
    base_url: str,
    api_token: str | None = None,
    name: str = "review",
    use_cache: bool = True,
    progress: bool = True,
) -> ReviewOutcome:
    from harness.client import AsyncClient
    from harness.review.runner import ResponseCache, ReviewRunner, synthesize

    _check_name(out_dir, name)
    roster, roster_file = load_roster(roster_path)
    subject = load_subject(subject_path)
    cache = ResponseCache(out_dir / "cache") if use_cache else None
    async with AsyncClient(base_url, api_token=api_token) as client:
        runner = ReviewRunner(
            client=client,
            roster=roster,
            roster_dir=roster_file.parent if roster_file else None,
            cache=cache,
        )
        if progress:
            from harness.review.progress import ReviewProgress

            with ReviewProgress([r.name for r in roster.reviewers]) as bar:
                runner.on_progress = bar.update
                record = await runner.run(subject)
        else:
            record = await runner.run(subject)
        record.manifest.roster_path = str(roster_file) if roster_file else "(packaged default)"
        if roster.synthesis is not None:
            text, status = await synthesize(
                client, roster, _synthesis_summary(build_report(record))
            )
            record.synthesis, record.synthesis_status = text, status
    return _write(record, out_dir, name)


def _write(record: RunRecord, out_dir: Path, name: str) -> ReviewOutcome:
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = safe_output_path(out_dir, RUN_FILE)
    run_file.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
    report = build_report(record)
    written = render_report(report, out_dir, name)
    return ReviewOutcome(record=record, report=report, written=written, run_file=run_file)


def run_review(**kwargs: object) -> ReviewOutcome:
    return asyncio.run(run_review_async(**kwargs))  # type: ignore[arg-type]


def render(source: Path, out_dir: Path, name: str = "review") -> ReviewOutcome:
    """Re-render a saved run or a panel of canned reviews without calling any model."""
    _check_name(out_dir, name)
    record = load_source(source)
    report = build_report(record)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = render_report(report, out_dir, name)
    return ReviewOutcome(record=record, report=report, written=written, run_file=source)


def summary_lines(outcome: ReviewOutcome) -> list[str]:
    """What the CLI prints after a run: status per reviewer, the verdict, the files."""
    lines = []
    for row in outcome.report.reviewers:
        detail = f" ({row.error})" if row.error else ""
        lines.append(
            f"{row.name:<20} {row.status.value:<9} layer={row.parse_layer or '-':<18} "
            f"rating={row.rating if row.rating is not None else '-'}{detail}"
        )
    lines.append(outcome.report.readiness.headline)
    lines += [f"wrote {path}" for path in outcome.written.paths.values()]
    lines.append(
        json.dumps(
            {
                "minimal_path_hours": outcome.report.minimal_path.hours,
                "recommended_path_hours": outcome.report.recommended_path.hours,
            }
        )
    )
    return lines
