"""Turning a reviewer's text into a ``Review``, one layer at a time, recording which layer worked.

Why layers: local models answer review prompts in every shape: valid JSON when LM Studio enforces
the schema, JSON inside prose and fences, near-JSON with trailing commas and comments, Markdown,
or a refusal. Each layer is tried in order and the first that yields a *valid* review wins, so a
report can say how much each reviewer's answer had to be coaxed. The re-ask layer needs I/O and
lives in the runner; it feeds the re-asked text back through :func:`parse_json_layers`.

Reasoning (``<think>`` blocks in the content) is split off first and kept apart, never parsed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import json_repair
from pydantic import ValidationError

from harness.review.models import Finding, ParseLayer, Review, Severity

_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON|json5)?[ \t]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ParseOutcome:
    """The result of parsing one answer: the review (or None), the layer and what went wrong."""

    review: Review | None
    layer: ParseLayer
    errors: tuple[str, ...] = ()
    content: str = ""
    reasoning: str = ""


@dataclass(slots=True)
class _Errors:
    items: list[str] = field(default_factory=list)

    def add(self, layer: str, message: str) -> None:
        entry = f"{layer}: {message}"
        if entry not in self.items:
            self.items.append(entry)


def split_reasoning(text: str) -> tuple[str, str]:
    """Return ``(content, reasoning)``: ``<think>`` blocks removed from the content, kept apart."""
    reasoning = "\n".join(m.strip() for m in _THINK.findall(text))
    content = _THINK.sub("", text).strip()
    return content, reasoning


def format_validation_errors(exc: ValidationError) -> list[str]:
    """One ``path: message`` line per error: what a re-ask quotes back to the model."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"{path}: {err['msg']}")
    return lines


def _validate(data: Any, layer: str, errors: _Errors) -> Review | None:
    if not isinstance(data, dict):
        errors.add(layer, f"expected a JSON object, got {type(data).__name__}")
        return None
    try:
        return Review.model_validate(data)
    except ValidationError as exc:
        for line in format_validation_errors(exc):
            errors.add(layer, line)
        return None


def _json_objects(text: str) -> list[Any]:
    """Every top-level JSON value that starts at a ``{`` in the text, in order."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        found.append(value)
        index = text.find("{", end)
    return found


def _repair_candidates(content: str) -> list[str]:
    candidates = [m.strip() for m in _FENCE.findall(content)]
    start, end = content.find("{"), content.rfind("}")
    if start != -1 and end > start:
        candidates.append(content[start : end + 1])
    elif start != -1:
        candidates.append(content[start:])  # truncated object: repair may close it
    return candidates


def parse_json_layers(
    content: str, *, used_schema: bool
) -> tuple[Review | None, ParseLayer, list[str]]:
    """Layers 1-3: schema JSON, JSON extraction, lenient repair.

    Returns the review and the layer that produced it, or ``(None, UNPARSED, errors)``.
    """
    errors = _Errors()
    stripped = content.strip()
    if used_schema:
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            errors.add("json_schema", f"not JSON ({exc.msg} at line {exc.lineno})")
        else:
            review = _validate(data, "json_schema", errors)
            if review is not None:
                return review, ParseLayer.JSON_SCHEMA, errors.items
    for block in _FENCE.findall(content):
        try:
            data = json.loads(block)
        except json.JSONDecodeError as exc:
            errors.add("json_extraction", f"fenced block not JSON ({exc.msg})")
            continue
        review = _validate(data, "json_extraction", errors)
        if review is not None:
            return review, ParseLayer.JSON_EXTRACTION, errors.items
    for data in _json_objects(content):
        review = _validate(data, "json_extraction", errors)
        if review is not None:
            return review, ParseLayer.JSON_EXTRACTION, errors.items
    for candidate in _repair_candidates(content):
        try:
            data = json_repair.loads(candidate)
        except Exception as exc:  # json_repair raises assorted errors on hopeless input
            errors.add("lenient_repair", f"{type(exc).__name__}: {exc}")
            continue
        if data in ("", None, [], {}):
            errors.add("lenient_repair", "nothing recoverable")
            continue
        review = _validate(data, "lenient_repair", errors)
        if review is not None:
            return review, ParseLayer.LENIENT_REPAIR, errors.items
    if not errors.items:
        errors.add("json_extraction", "no JSON object found in the answer")
    return None, ParseLayer.UNPARSED, errors.items


# --- Markdown sections ------------------------------------------------------------------------

_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_RATING = re.compile(r"(?i)\brating\b[^0-9\n]{0,12}(\d{1,2}(?:\.\d+)?)\s*(?:/\s*10)?")
_BARE_RATING = re.compile(r"^\s*\**(\d{1,2}(?:\.\d+)?)\s*/\s*10\**\s*$", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*)$")
_HOURS = re.compile(r"~?\s*(\d+(?:\.\d+)?)\s*(?:h\b|hours?\b|hrs?\b)", re.IGNORECASE)


def _sections(content: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    matches = list(_HEADING.finditer(content))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(content)
        name = match.group(1).strip().strip("*").strip().lower()
        sections.setdefault(name, content[match.end() : end].strip())
    return sections


def _bullets(body: str) -> list[str]:
    items: list[str] = []
    for line in body.splitlines():
        match = _BULLET.match(line)
        if match and match.group(1).strip():
            items.append(match.group(1).strip())
        elif items and line.startswith(("  ", "\t")) and line.strip():
            items[-1] += " " + line.strip()
    return items


def _finding_from_bullet(severity: Severity, bullet: str) -> Finding | None:
    title, rest = bullet, ""
    bold = re.match(r"\*\*(.+?)\*\*\s*(.*)$", bullet)
    if bold:
        title, rest = bold.group(1).strip(), bold.group(2)
    elif ":" in bullet:
        title, rest = (part.strip() for part in bullet.split(":", 1))
    location: str | None = None
    hours: float | None = None
    paren = re.match(r"\(([^)]*)\)\s*:?\s*(.*)$", rest, re.DOTALL)
    if paren:
        for part in (p.strip() for p in paren.group(1).split(",")):
            found = _HOURS.fullmatch(part) or _HOURS.match(part)
            if found and hours is None:
                hours = float(found.group(1))
            elif part and location is None:
                location = part
        rest = paren.group(2)
    rest = rest.lstrip(":—- ").strip()
    impact, recommendation = rest, ""
    split = re.split(r"(?i)\brecommendation:\s*", rest, maxsplit=1)
    if len(split) == 2:
        impact, recommendation = split[0].strip(), split[1].strip()
    title = title.strip().rstrip(":").strip()
    if not title:
        return None
    try:
        return Finding(
            severity=severity,
            title=title[:300],
            impact=impact[:4000],
            location=location[:300] if location else None,
            recommendation=recommendation[:4000],
            estimated_hours=hours,
        )
    except ValidationError:
        return None


def parse_markdown_sections(content: str) -> tuple[Review | None, list[str]]:
    """Layer 5: a review written as Markdown headings and bullet lists."""
    sections = _sections(content)
    rating_text = sections.get("rating") or sections.get("overall rating")
    rating_match = None
    if rating_text:
        rating_match = _BARE_RATING.search(rating_text) or re.search(r"(\d{1,2})", rating_text)
    rating_match = rating_match or _RATING.search(content)
    if rating_match is None:
        return None, ["markdown_sections: no rating found"]
    findings: list[Finding] = []
    for name, body in sections.items():
        for severity in Severity:
            if re.search(rf"\b{severity.value}\b", name):
                for bullet in _bullets(body):
                    finding = _finding_from_bullet(severity, bullet)
                    if finding is not None:
                        findings.append(finding)
    quote = sections.get("key quote", "")
    quote = " ".join(line.lstrip("> ").strip() for line in quote.splitlines()).strip()
    data = {
        "rating": rating_match.group(1),
        "focus": sections.get("focus", "").strip()[:300],
        "summary": sections.get("summary", "").strip()[:4000],
        "findings": findings,
        "strengths": [s[:1000] for s in _bullets(sections.get("strengths", ""))],
        "recommendations": [r[:1000] for r in _bullets(sections.get("recommendations", ""))],
        "key_quote": quote[:4000],
    }
    try:
        return Review.model_validate(data), []
    except ValidationError as exc:
        return None, [f"markdown_sections: {line}" for line in format_validation_errors(exc)]


def parse_review(text: str, *, used_schema: bool = False) -> ParseOutcome:
    """All layers that need no model call: 1-3, then Markdown sections, else unparsed."""
    content, reasoning = split_reasoning(text)
    review, layer, errors = parse_json_layers(content, used_schema=used_schema)
    if review is not None:
        return ParseOutcome(review, layer, tuple(errors), content, reasoning)
    md_review, md_errors = parse_markdown_sections(content)
    if md_review is not None:
        return ParseOutcome(
            md_review, ParseLayer.MARKDOWN_SECTIONS, tuple(errors), content, reasoning
        )
    return ParseOutcome(None, ParseLayer.UNPARSED, tuple(errors + md_errors), content, reasoning)
