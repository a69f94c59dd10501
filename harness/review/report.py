"""From a run record (what each reviewer said) to the aggregated report model, computed in code.

Why one model: Markdown, HTML and JSON are three views of this one object, rendered by the shared
Jinja environment, so the formats cannot disagree. Every number in it (mean rating, support k/N,
alpha, hour totals, the verdict) is computed here from structured reviews; the optional LLM
synthesis is carried along, clearly marked, and never feeds a number.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

from pydantic import BaseModel, Field

from harness.reporting.env import WrittenReport, write_report
from harness.review.aggregate import (
    DEFAULT_POLICY,
    MergedFinding,
    MergedStrength,
    MergePolicy,
    merge_findings,
    merge_strengths,
)
from harness.review.agreement import effective_reviewers, jaccard, krippendorff_alpha
from harness.review.models import (
    Manifest,
    Priority,
    ReviewerRun,
    RunRecord,
    RunStatus,
    Severity,
    SubjectSummary,
    Truncation,
)

HOURS_PER_WEEK = 40.0


class RatingStats(BaseModel):
    count: int
    mean: float | None = None
    minimum: int | None = None
    maximum: int | None = None
    spread: int | None = None
    stdev: float | None = None


class ReviewerRow(BaseModel):
    name: str
    model: str
    focus: str
    rating: int | None
    key_strength: str | None
    status: RunStatus
    parse_layer: str | None
    latency_s: float | None
    completion_tokens: int | None
    tokens_per_s: float | None
    retries: int
    error: str | None
    finish_reason: str | None
    parse_errors: list[str] = Field(default_factory=list)
    truncations: list[Truncation] = Field(default_factory=list)
    consistency_warnings: list[str] = Field(default_factory=list)
    raw_text: str = ""
    reasoning: str = ""


class CriticalGroup(BaseModel):
    """Critical findings grouped by who reported them, as the reference lays them out."""

    reported_by: list[str]
    findings: list[MergedFinding]


class Recommendation(BaseModel):
    number: int
    finding_id: str
    title: str
    action: str
    priority: Priority
    estimated_hours: float | None
    reported_by: list[str]
    support: int


class PathTotal(BaseModel):
    name: str
    hours: float
    weeks: float
    items: list[Recommendation]
    unestimated: int


class PairAgreement(BaseModel):
    a: str
    b: str
    findings_jaccard: float | None
    shared: int
    severity_agreement: float | None


class Agreement(BaseModel):
    alpha_severity_ordinal: float | None
    alpha_presence_nominal: float | None
    alpha_rating_interval: float | None
    alpha_rating_note: str
    pairwise: list[PairAgreement]
    effective_reviewers: float | None
    correlated_warning: str | None = None
    contested: list[str] = Field(default_factory=list)


class Readiness(BaseModel):
    verdict: str  # ready | ready_with_fixes | not_ready | inconclusive
    headline: str
    score: float | None
    quorum: int
    reviewers_ok: int
    quorum_met: bool
    what_works: list[str]
    missing: list[str]


class KeyQuote(BaseModel):
    reviewer: str
    quote: str


class ReviewReport(BaseModel):
    title: str
    date: str | None
    subject: SubjectSummary
    reviewers: list[ReviewerRow]
    ratings: RatingStats
    consensus_line: str
    critical_groups: list[CriticalGroup]
    major: list[MergedFinding]
    minor: list[MergedFinding]
    strengths: list[MergedStrength]
    recommendations: dict[str, list[Recommendation]]
    minimal_path: PathTotal
    recommended_path: PathTotal
    readiness: Readiness
    consensus: list[str]
    agreement: Agreement
    key_quotes: list[KeyQuote]
    next_steps: dict[str, list[str]]
    conclusion: str
    panel_warnings: list[str]
    synthesis: str | None
    synthesis_status: str
    manifest: Manifest


def _rating_stats(ratings: Sequence[int]) -> RatingStats:
    if not ratings:
        return RatingStats(count=0)
    return RatingStats(
        count=len(ratings),
        mean=round(statistics.fmean(ratings), 2),
        minimum=min(ratings),
        maximum=max(ratings),
        spread=max(ratings) - min(ratings),
        stdev=round(statistics.pstdev(ratings), 2),
    )


def consistency_warnings(run: ReviewerRun) -> list[str]:
    """Flag reviews whose rating contradicts their own findings."""
    review = run.review
    if review is None:
        return []
    warnings = []
    criticals = sum(f.severity is Severity.CRITICAL for f in review.findings)
    if criticals and review.rating >= 8:
        warnings.append(f"rates {review.rating}/10 yet reports {criticals} critical issue(s)")
    if review.rating <= 4 and not any(
        f.severity in (Severity.CRITICAL, Severity.MAJOR) for f in review.findings
    ):
        warnings.append(f"rates {review.rating}/10 without any critical or major finding")
    return warnings


def _panel_warnings(runs: Sequence[ReviewerRun]) -> list[str]:
    """Reviewers sharing a base model or family add less independent judgement."""
    warnings = []
    keys = [r.model.split("@", 1)[0] for r in runs]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        names = [r.name for r in runs if r.model.split("@", 1)[0] == key]
        warnings.append(f"{', '.join(names)} use the same model {key}")
    families: dict[str, list[str]] = {}
    for run in runs:
        publisher = run.model.split("/", 1)[0] if "/" in run.model else run.model
        families.setdefault(publisher, []).append(run.name)
    for family, names in sorted(families.items()):
        if len(names) > 1 and len(set(names)) > 1:
            warnings.append(f"{', '.join(names)} come from one model family ({family})")
    return warnings


def _agreement(ok_runs: Sequence[ReviewerRun], findings: Sequence[MergedFinding]) -> Agreement:
    names = [r.name for r in ok_runs]
    severity_units: list[list[int | None]] = []
    presence_units: list[list[int | None]] = []
    by_reviewer: dict[str, dict[str, Severity]] = {n: {} for n in names}
    for item in findings:
        per = {s.reviewer: s.severity for s in item.sources}
        for name, severity in per.items():
            if name in by_reviewer:
                by_reviewer[name][item.id] = severity
        severity_units.append([per[n].rank if n in per else None for n in names])
        presence_units.append([1 if n in per else 0 for n in names])
    pairwise = []
    for a, b in combinations(names, 2):
        shared = set(by_reviewer[a]) & set(by_reviewer[b])
        same = sum(by_reviewer[a][f] == by_reviewer[b][f] for f in shared)
        pairwise.append(
            PairAgreement(
                a=a,
                b=b,
                findings_jaccard=_round(jaccard(set(by_reviewer[a]), set(by_reviewer[b]))),
                shared=len(shared),
                severity_agreement=_round(same / len(shared)) if shared else None,
            )
        )
    vectors = [[unit[i] or 0 for unit in presence_units] for i in range(len(names))]
    n_eff = effective_reviewers(vectors) if findings else None
    warning = None
    if n_eff is not None and len(names) >= 3 and n_eff < 0.6 * len(names):
        warning = (
            f"reviewers' findings are correlated: {n_eff:.1f} effective reviewers of {len(names)}"
        )
    return Agreement(
        alpha_severity_ordinal=_round(krippendorff_alpha(severity_units, "ordinal")),
        alpha_presence_nominal=_round(krippendorff_alpha(presence_units, "nominal")),
        alpha_rating_interval=None,
        alpha_rating_note=(
            "not defined for one subject: each reviewer gives one rating, so ratings form a "
            "single unit; see the spread instead"
        ),
        pairwise=pairwise,
        effective_reviewers=_round(n_eff),
        correlated_warning=warning,
        contested=[f"{f.id} {f.title}" for f in findings if f.contested],
    )


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _recommendations(findings: Sequence[MergedFinding]) -> dict[str, list[Recommendation]]:
    tiers: dict[str, list[Recommendation]] = {p.value: [] for p in Priority}
    ordered = sorted(findings, key=lambda f: -f.priority.rank)  # stable: keeps finding order
    for number, item in enumerate(ordered, start=1):
        tiers[item.priority.value].append(
            Recommendation(
                number=number,
                finding_id=item.id,
                title=item.title,
                action=item.recommendation or item.title,
                priority=item.priority,
                estimated_hours=item.estimated_hours,
                reported_by=item.reported_by,
                support=item.support,
            )
        )
    return tiers


def _path(name: str, items: list[Recommendation]) -> PathTotal:
    hours = sum(r.estimated_hours or 0.0 for r in items)
    return PathTotal(
        name=name,
        hours=round(hours, 2),
        weeks=round(hours / HOURS_PER_WEEK, 2),
        items=items,
        unestimated=sum(r.estimated_hours is None for r in items),
    )


def build_report(record: RunRecord, *, policy: MergePolicy = DEFAULT_POLICY) -> ReviewReport:
    """Aggregate a run record into the report model (pure: no I/O, no model calls)."""
    runs = record.runs
    ok_runs = [r for r in runs if r.review is not None]
    panel = len(ok_runs)
    findings = merge_findings(
        [(r.name, r.review.findings) for r in ok_runs if r.review], panel_size=panel, policy=policy
    )
    strengths = merge_strengths(
        [(r.name, r.review.strengths) for r in ok_runs if r.review], panel_size=panel, policy=policy
    )
    ratings = _rating_stats([r.review.rating for r in ok_runs if r.review])
    critical = [f for f in findings if f.severity is Severity.CRITICAL]
    groups: dict[tuple[str, ...], list[MergedFinding]] = {}
    for item in critical:
        groups.setdefault(tuple(item.reported_by), []).append(item)
    tiers = _recommendations(findings)
    minimal = _path("Minimal path (critical fixes only)", tiers["critical"])
    recommended = _path(
        "Recommended path (critical + high priority)", tiers["critical"] + tiers["high"]
    )
    quorum_met = panel >= record.quorum
    readiness = _readiness(record, ratings, findings, strengths, minimal, panel, quorum_met)
    agreement = _agreement(ok_runs, findings)
    rows = [_row(r) for r in runs]
    return ReviewReport(
        title=record.subject.title,
        date=record.subject.date,
        subject=record.subject,
        reviewers=rows,
        ratings=ratings,
        consensus_line=readiness.headline,
        critical_groups=[CriticalGroup(reported_by=list(k), findings=v) for k, v in groups.items()],
        major=[f for f in findings if f.severity is Severity.MAJOR],
        minor=[f for f in findings if f.severity is Severity.MINOR],
        strengths=strengths,
        recommendations=tiers,
        minimal_path=minimal,
        recommended_path=recommended,
        readiness=readiness,
        consensus=_consensus(ratings, findings, strengths, panel, quorum_met, agreement),
        agreement=agreement,
        key_quotes=[
            KeyQuote(reviewer=r.name, quote=r.review.key_quote)
            for r in ok_runs
            if r.review and r.review.key_quote
        ],
        next_steps={
            "Immediate": [r.title for r in tiers["critical"]],
            "Short term": [r.title for r in tiers["high"]],
            "Medium term": [r.title for r in tiers["nice_to_have"]],
        },
        conclusion=_conclusion(readiness, strengths, findings, minimal),
        panel_warnings=_panel_warnings(runs),
        synthesis=record.synthesis,
        synthesis_status=record.synthesis_status,
        manifest=record.manifest,
    )


def _row(run: ReviewerRun) -> ReviewerRow:
    review = run.review
    return ReviewerRow(
        name=run.name,
        model=run.model,
        focus=run.focus or (review.focus if review else ""),
        rating=review.rating if review else None,
        key_strength=review.strengths[0] if review and review.strengths else None,
        status=run.status,
        parse_layer=run.parse_layer.value if run.parse_layer else None,
        latency_s=run.latency_s,
        completion_tokens=run.completion_tokens,
        tokens_per_s=run.tokens_per_s,
        retries=run.retries,
        error=run.error,
        finish_reason=run.finish_reason,
        parse_errors=run.parse_errors,
        truncations=run.truncations,
        consistency_warnings=run.consistency_warnings or consistency_warnings(run),
        raw_text=run.raw_text,
        reasoning=run.reasoning,
    )


def _readiness(
    record: RunRecord,
    ratings: RatingStats,
    findings: Sequence[MergedFinding],
    strengths: Sequence[MergedStrength],
    minimal: PathTotal,
    panel: int,
    quorum_met: bool,
) -> Readiness:
    critical = [f for f in findings if f.priority is Priority.CRITICAL]
    high = [f for f in findings if f.priority is Priority.HIGH]
    if not quorum_met:
        verdict = "inconclusive"
        headline = (
            f"Inconclusive: only {panel} of {len(record.runs)} reviewer(s) returned a usable "
            f"review; the quorum is {record.quorum}."
        )
    elif critical:
        verdict = "not_ready"
        headline = (
            f"Not production-ready yet: {len(critical)} critical issue(s) to fix first "
            f"(about {minimal.hours:g} h on the minimal path)."
        )
    elif high:
        verdict = "ready_with_fixes"
        headline = f"Production-ready after {len(high)} high-priority fix(es)."
    else:
        verdict = "ready"
        headline = "Production-ready: no critical or high-priority issue was reported."
    return Readiness(
        verdict=verdict,
        headline=headline,
        score=ratings.mean,
        quorum=record.quorum,
        reviewers_ok=panel,
        quorum_met=quorum_met,
        what_works=[s.text for s in strengths if s.support * 2 > s.panel_size],
        missing=[f"{f.title} ({f.severity.value})" for f in findings if f.priority.rank >= 2],
    )


def _consensus(
    ratings: RatingStats,
    findings: Sequence[MergedFinding],
    strengths: Sequence[MergedStrength],
    panel: int,
    quorum_met: bool,
    agreement: Agreement,
) -> list[str]:
    if not quorum_met:
        return [f"No consensus computed: {panel} usable review(s) is below the quorum."]
    lines = []
    if ratings.mean is not None:
        lines.append(
            f"Ratings: mean {ratings.mean:.1f}/10 (range {ratings.minimum}-{ratings.maximum}, "
            f"spread {ratings.spread})."
        )
    unanimous = [s for s in strengths if s.support == panel]
    if unanimous:
        lines.append(
            f"All {panel} reviewers noted: " + "; ".join(s.text.split(":")[0] for s in unanimous)
        )
    shared = [f for f in findings if f.support >= 2]
    for item in shared:
        lines.append(
            f"{item.support}/{panel} reviewers report {item.title} ({item.severity.value})."
        )
    if agreement.contested:
        lines.append("Severity contested for: " + "; ".join(agreement.contested))
    if not shared:
        lines.append("No finding was reported by more than one reviewer.")
    return lines


def _conclusion(
    readiness: Readiness,
    strengths: Sequence[MergedStrength],
    findings: Sequence[MergedFinding],
    minimal: PathTotal,
) -> str:
    top = ", ".join(s.text.split(":")[0] for s in strengths[:3]) or "none recorded"
    gaps = ", ".join(f.title for f in findings if f.priority.rank >= 2) or "none"
    return (
        f"{readiness.headline} Strengths: {top}. Gaps: {gaps}. "
        f"Address the {len(minimal.items)} critical item(s) (about {minimal.hours:g} h) "
        "before production deployment."
        if minimal.items
        else f"{readiness.headline} Strengths: {top}. Remaining gaps: {gaps}."
    )


def render_report(
    report: ReviewReport, out_dir: Path | str, basename: str = "review"
) -> WrittenReport:
    """Write ``review.md``, ``review.html`` and ``review.json`` through the shared environment."""
    return write_report(report, basename, out_dir, template="review")
