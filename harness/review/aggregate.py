"""Merging what several reviewers said into one list of findings and strengths, in code.

Why in code and not by a "chairman" model: the merge must be reproducible, auditable (every merged
item lists the reviewer items it came from) and must never invent or drop an issue. Measured
failures of fingerprint-only merging (titles written independently rarely match exactly) are why
two findings match on *text similarity* (rapidfuzz token-set ratio), with a lower bar when their
locations overlap and a higher one when they point at different files. A reviewer is never merged
with itself, so two distinct defects one reviewer reported on one line stay apart.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field
from rapidfuzz import fuzz

from harness.review.models import Finding, Priority, Severity


@dataclass(frozen=True, slots=True)
class MergePolicy:
    """Similarity thresholds (0-100, rapidfuzz token-set ratio on normalised titles)."""

    same_location: float = 50.0
    unknown_location: float = 72.0
    different_location: float = 90.0
    line_window: int = 3
    strength_threshold: float = 70.0


DEFAULT_POLICY = MergePolicy()


class FindingSource(BaseModel):
    """One reviewer's original item inside a merged finding: the audit trail."""

    reviewer: str
    title: str
    severity: Severity
    location: str | None = None
    estimated_hours: float | None = None
    similarity: float | None = Field(
        default=None, description="Score against the merged item when it joined (None: first)."
    )


class MergedFinding(BaseModel):
    id: str
    severity: Severity
    priority: Priority
    title: str
    impact: str = ""
    evidence: list[str] = Field(default_factory=list)
    location: str | None = None
    recommendation: str = ""
    estimated_hours: float | None = None
    reported_by: list[str]
    support: int
    panel_size: int
    contested: bool = False
    sources: list[FindingSource]


class MergedStrength(BaseModel):
    text: str
    noted_by: list[str]
    support: int
    panel_size: int
    variants: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Location:
    path: str
    start: int | None
    end: int | None


_LOC = re.compile(r"^\s*`?([^\s:`,]+)`?(?:\s*(?:[:#]|line)\s*~?(\d+)(?:\s*[-\u2013]\s*(\d+))?)?")
_LINE_WORD = re.compile(r"line\s*~?(\d+)", re.IGNORECASE)


def parse_location(text: str | None) -> _Location | None:
    """``"llm/client.py:320"``, ``"`a.py` line ~180"``, ``"a.py:10-20"`` -> path and line range."""
    if not text:
        return None
    match = _LOC.match(text)
    if not match:
        return None
    path = match.group(1).strip().lstrip("./").lower()
    start = int(match.group(2)) if match.group(2) else None
    end = int(match.group(3)) if match.group(3) else start
    if start is None:
        word = _LINE_WORD.search(text)
        if word:
            start = end = int(word.group(1))
    return _Location(path, start, end)


def _locations_relation(a: str | None, b: str | None, window: int) -> str:
    la, lb = parse_location(a), parse_location(b)
    if la is None or lb is None:
        return "unknown"
    if la.path != lb.path:
        return "different"
    if la.start is None or lb.start is None or la.end is None or lb.end is None:
        return "same"
    if la.start - window <= lb.end and lb.start - window <= la.end:
        return "same"
    return "different"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", " ", text.lower()).strip()


def similarity(a: Finding, b: Finding) -> float:
    return float(fuzz.token_set_ratio(_norm(a.title), _norm(b.title)))


@dataclass(slots=True)
class _Cluster:
    members: list[tuple[str, Finding, float | None]]

    @property
    def reviewers(self) -> set[str]:
        return {name for name, _, _ in self.members}


def merge_findings(
    reviews: Sequence[tuple[str, Sequence[Finding]]],
    *,
    panel_size: int,
    policy: MergePolicy = DEFAULT_POLICY,
) -> list[MergedFinding]:
    """Cluster findings across reviewers; returns merged findings sorted by importance."""
    clusters: list[_Cluster] = []
    for reviewer, findings in reviews:
        for finding in findings:
            best: tuple[float, _Cluster] | None = None
            for cluster in clusters:
                if reviewer in cluster.reviewers:
                    continue
                score = max(_match_score(finding, other, policy) for _, other, _ in cluster.members)
                if score > 0 and (best is None or score > best[0]):
                    best = (score, cluster)
            if best is None:
                clusters.append(_Cluster([(reviewer, finding, None)]))
            else:
                best[1].members.append((reviewer, finding, round(best[0], 1)))
    merged = [_merge(cluster, panel_size) for cluster in clusters]
    # list.sort is stable: ties keep the order in which reviewers reported them.
    merged.sort(key=lambda m: (-m.severity.rank, -m.priority.rank, -m.support))
    for index, item in enumerate(merged, start=1):
        item.id = f"F{index}"
    return merged


def _match_score(a: Finding, b: Finding, policy: MergePolicy) -> float:
    """The similarity if it clears the bar for the two locations, else 0."""
    score = similarity(a, b)
    relation = _locations_relation(a.location, b.location, policy.line_window)
    bar = {
        "same": policy.same_location,
        "unknown": policy.unknown_location,
        "different": policy.different_location,
    }[relation]
    return score if score >= bar else 0.0


def _merge(cluster: _Cluster, panel_size: int) -> MergedFinding:
    findings = [f for _, f, _ in cluster.members]
    lead = max(findings, key=lambda f: (f.severity.rank, len(f.impact) + len(f.recommendation)))
    hours = [f.estimated_hours for f in findings if f.estimated_hours is not None]
    located = [f.location for f in findings if f.location]
    location = max(located, key=_specificity) if located else None
    evidence: list[str] = []
    for f in findings:
        evidence.extend(e for e in f.evidence if e not in evidence)
    reported_by = list(dict.fromkeys(name for name, _, _ in cluster.members))
    return MergedFinding(
        id="",
        severity=max((f.severity for f in findings), key=lambda s: s.rank),
        priority=max((f.fix_priority for f in findings), key=lambda p: p.rank),
        title=lead.title,
        impact=lead.impact or next((f.impact for f in findings if f.impact), ""),
        evidence=evidence,
        location=location,
        recommendation=max((f.recommendation for f in findings), key=len),
        estimated_hours=statistics.median(hours) if hours else None,
        reported_by=reported_by,
        support=len(reported_by),
        panel_size=panel_size,
        contested=len({f.severity for f in findings}) > 1,
        sources=[
            FindingSource(
                reviewer=name,
                title=f.title,
                severity=f.severity,
                location=f.location,
                estimated_hours=f.estimated_hours,
                similarity=score,
            )
            for name, f, score in cluster.members
        ],
    )


def _specificity(location: str) -> tuple[bool, int]:
    """Prefer locations with a line number, then longer ones: the most specific wins."""
    parsed = parse_location(location)
    return (parsed is not None and parsed.start is not None, len(location))


def _strength_key(text: str) -> str:
    """Compare strengths on their headline ("Clean architecture: ..." -> "clean architecture")."""
    head = text.split(":", 1)[0] if ":" in text[:80] else text
    return _norm(head)


def merge_strengths(
    reviews: Sequence[tuple[str, Sequence[str]]],
    *,
    panel_size: int,
    policy: MergePolicy = DEFAULT_POLICY,
) -> list[MergedStrength]:
    """Count positive observations the way findings are counted ("noted by 3/3")."""
    groups: list[tuple[list[str], list[str]]] = []  # (reviewers, texts)
    for reviewer, strengths in reviews:
        for text in strengths:
            best: tuple[float, int] | None = None
            for index, (names, texts) in enumerate(groups):
                if reviewer in names:
                    continue
                score = max(
                    fuzz.token_set_ratio(_strength_key(text), _strength_key(t)) for t in texts
                )
                if score >= policy.strength_threshold and (best is None or score > best[0]):
                    best = (score, index)
            if best is None:
                groups.append(([reviewer], [text]))
            else:
                groups[best[1]][0].append(reviewer)
                groups[best[1]][1].append(text)
    merged = [
        MergedStrength(
            text=max(texts, key=len),
            noted_by=names,
            support=len(names),
            panel_size=panel_size,
            variants=list(dict.fromkeys(texts)),
        )
        for names, texts in groups
    ]
    merged.sort(key=lambda m: -m.support)  # stable: ties keep first-reported order
    return merged
