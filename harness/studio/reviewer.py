"""Reviewer answers of the emulator: deterministic reviews so the review runner can run offline.

Why this lives beside the emulator but is owned by the review runner: the runner's parser has six
layers (schema JSON, JSON extraction, lenient repair, re-ask, Markdown sections, unparsed) and an
offline end-to-end run must exercise each of them. So each catalog model answers review prompts in
its own *style*, the way real local models misbehave:

=================================  ==============================================================
model                              answer style
=================================  ==============================================================
``mistralai/magistral-small-2509``  plain JSON valid for the schema (what ``json_schema`` gives)
``qwen/qwen3-coder-30b``           prose around a fenced ```json block (schema ignored)
``qwen/qwen3-4b-thinking-2507``    a ``<think>`` block, then JSON with trailing commas / comments
``google/gemma-3-12b``             Markdown sections (## Rating, ## Findings ...), no JSON
``openai/gpt-oss-20b``             JSON failing validation; valid JSON once re-asked with errors
``qwen/qwen3-4b``                  a refusal in prose that no layer can parse
anything else                      plain JSON
=================================  ==============================================================

Everything is derived from the model key, the seed and the fenced subject (file names from the diff,
the first added line as evidence), so the same request always gets the same text, different models
overlap on some findings with different wording (exercising fuzzy merging), and hostile text in a
subject flows into the answer (exercising HTML escaping end to end).

The emulator calls :func:`is_review_request` then :func:`answer_review`; the review runner puts
:data:`REVIEW_MARKER` in its system prompt and :data:`REASK_MARKER` in a re-ask.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from harness.studio.generation import message_text

REVIEW_MARKER = "[harness-review-request v1]"
REASK_MARKER = "[harness-review-reask]"
SUBJECT_BEGIN = re.compile(r"^=+ BEGIN SUBJECT (\w+) =+$", re.MULTILINE)

_STYLES: dict[str, str] = {
    "mistralai/magistral-small-2509": "json",
    "qwen/qwen3-coder-30b": "fenced",
    "qwen/qwen3-4b-thinking-2507": "lenient",
    "google/gemma-3-12b": "markdown",
    "openai/gpt-oss-20b": "reask",
    "qwen/qwen3-4b": "refusal",
}

# (severity, titles by phrasing variant, impact, recommendation, hours)
_FINDINGS: tuple[tuple[str, tuple[str, str, str], str, str, float], ...] = (
    (
        "critical",
        (
            "Streaming responses are not handled",
            "No handling of streamed responses",
            "Streaming responses not handled end to end",
        ),
        "Partial answers can be returned as complete when a stream ends early.",
        "Treat a stream as complete only after finish_reason and [DONE]; test cut-offs.",
        16,
    ),
    (
        "major",
        (
            "Error messages lack request context",
            "Errors do not include the request URL and model",
            "Error messages lack URL and model context",
        ),
        "Failures cannot be diagnosed from logs alone.",
        "Include method, URL, model and attempt in every raised error.",
        4,
    ),
    (
        "major",
        (
            "No tests for concurrent requests",
            "Concurrent requests are untested",
            "Missing tests for concurrent requests",
        ),
        "Races between requests sharing a client would go unnoticed.",
        "Add a test that runs many requests at once against one client.",
        6,
    ),
    (
        "minor",
        (
            "Retry parameters are magic numbers",
            "Magic numbers in the retry configuration",
            "Undocumented retry constants",
        ),
        "Tuning retries needs reading the code.",
        "Name the retry constants and document why they were chosen.",
        1,
    ),
    (
        "minor",
        (
            "Inconsistent docstring style",
            "Docstrings use mixed styles",
            "Docstring style is inconsistent",
        ),
        "Readers must adapt to two conventions.",
        "Standardise on one docstring style.",
        1,
    ),
)

_STRENGTHS: tuple[tuple[str, str, str], ...] = (
    ("Clean separation of concerns", "Clear separation of concerns", "Good separation of concerns"),
    (
        "Readable, well-named code",
        "Code is readable and well named",
        "Readable code with good names",
    ),
    ("Tests exercise real behaviour", "Tests run against real behaviour", "Realistic tests"),
)


def _normalise_model(model: str) -> str:
    key = model.split("@", 1)[0]
    return re.sub(r":\d+$", "", key)


def _content(message: dict[str, Any]) -> str:
    return message_text(message.get("content"))


def is_review_request(messages: list[dict[str, Any]]) -> bool:
    """True when a chat request is a review prompt written by the review runner."""
    return any(
        isinstance(m, dict) and m.get("role") in {"system", "user"} and REVIEW_MARKER in _content(m)
        for m in messages
    )


def _subject_text(messages: Sequence[dict[str, Any]]) -> str:
    for message in messages:
        text = _content(message)
        match = SUBJECT_BEGIN.search(text)
        if match:
            nonce = match.group(1)
            end = re.search(rf"^=+ END SUBJECT {nonce} =+$", text[match.end() :], re.MULTILINE)
            stop = match.end() + end.start() if end else len(text)
            return text[match.end() : stop]
    return ""


def _files(subject: str) -> list[str]:
    found: list[str] = []
    for pattern in (r"^\+\+\+ b/(\S+)", r"^diff --git a/\S+ b/(\S+)", r"^#+ File: (\S+)"):
        for name in re.findall(pattern, subject, re.MULTILINE):
            if name not in found:
                found.append(name)
    return found or ["the change"]


def _first_added_line(subject: str) -> str:
    for line in subject.splitlines():
        if line.startswith("+") and not line.startswith("+++") and line[1:].strip():
            return line[1:].strip()[:200]
    return "the change description"


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def build_review(
    model: str, messages: Sequence[dict[str, Any]], seed: int | None
) -> dict[str, Any]:
    """The deterministic review (as a dict valid for the runner's schema) for this request."""
    key = _normalise_model(model)
    subject = _subject_text(messages)
    files = _files(subject)
    evidence = _first_added_line(subject)
    h = _digest(key, seed, hashlib.sha256(subject.encode()).hexdigest())
    variant = h % 3
    rating = 6 + (h >> 8) % 4
    # Every model reports findings 0 and 1 (so merging has work); others depend on the hash.
    chosen = [0, 1] + [i for i in range(2, len(_FINDINGS)) if (h >> (16 + i)) & 1]
    findings = []
    for n, index in enumerate(chosen):
        severity, titles, impact, recommendation, hours = _FINDINGS[index]
        line = 10 + 20 * index + (h >> (24 + n)) % 3
        findings.append(
            {
                "severity": severity,
                "title": titles[variant],
                "impact": impact,
                "evidence": [evidence] if n == 0 else [],
                "location": f"{files[index % len(files)]}:{line}",
                "recommendation": recommendation,
                "estimated_hours": hours + variant,
            }
        )
    strengths = [s[(variant + i) % 3] for i, s in enumerate(_STRENGTHS) if i < 2 + variant % 2]
    return {
        "rating": rating,
        "focus": _focus(messages),
        "summary": f"Reviewed {len(files)} file(s); {len(findings)} finding(s).",
        "findings": findings,
        "strengths": strengths,
        "recommendations": [f["recommendation"] for f in findings[:2]],
        "key_quote": f"Solid work on {files[0]}, but the streaming path needs attention.",
    }


def _focus(messages: Sequence[dict[str, Any]]) -> str:
    for message in messages:
        match = re.search(r"^Focus: (.+)$", _content(message), re.MULTILINE)
        if match:
            return match.group(1).strip()[:200]
    return "general"


def _markdown(review: dict[str, Any]) -> str:
    lines = [
        "# Review",
        "",
        f"## Rating\n{review['rating']}/10",
        "",
        f"## Focus\n{review['focus']}",
        "",
        f"## Summary\n{review['summary']}",
    ]
    for severity in ("critical", "major", "minor"):
        items = [f for f in review["findings"] if f["severity"] == severity]
        if not items:
            continue
        lines += ["", f"## {severity.capitalize()} issues"]
        for f in items:
            meta = [str(f["location"])] if f.get("location") else []
            if f.get("estimated_hours") is not None:
                meta.append(f"~{f['estimated_hours']:g}h")
            where = f" ({', '.join(meta)})" if meta else ""
            lines.append(
                f"- **{f['title']}**{where}: {f['impact']} Recommendation: {f['recommendation']}"
            )
    lines += ["", "## Strengths", *(f"- {s}" for s in review["strengths"])]
    lines += ["", "## Recommendations", *(f"- {r}" for r in review["recommendations"])]
    lines += ["", "## Key quote", f"> {review['key_quote']}", ""]
    return "\n".join(lines)


def _lenient(review: dict[str, Any]) -> str:
    text = json.dumps(review, indent=2)
    # Trailing commas after the last item of every list/object, and a // comment: the classic
    # near-JSON of small local models.
    text = re.sub(r"(\S)\n(\s*)([}\]])", r"\1,\n\2\3", text)
    return text.replace('"rating":', '// overall score\n  "rating":', 1)


def answer_review(
    model: str,
    messages: list[dict[str, Any]],
    response_format: dict[str, Any] | None,
    seed: int | None,
) -> str:
    """The text this model answers to a review prompt (see the module table for styles)."""
    key = _normalise_model(model)
    style = _STYLES.get(key, "json")
    review = build_review(key, messages, seed)
    reasked = bool(messages) and REASK_MARKER in _content(messages[-1])
    if style == "json" or (style == "reask" and reasked):
        return json.dumps(review, indent=2)
    if style == "fenced":
        return (
            "Here is my review of the change.\n\n```json\n"
            + json.dumps(review, indent=2)
            + "\n```\n\nLet me know if you want more detail."
        )
    if style == "lenient":
        return (
            "<think>The diff touches "
            + ", ".join(_files(_subject_text(messages)))
            + "; check streaming and errors.</think>\n"
            + _lenient(review)
        )
    if style == "markdown":
        return _markdown(review)
    if style == "reask":
        broken = dict(review, rating="excellent")
        broken["findings"] = [dict(f, severity="blocker") for f in review["findings"]]
        return json.dumps(broken, indent=2)
    return "I'm sorry, but I can't provide a structured review of this change right now."
