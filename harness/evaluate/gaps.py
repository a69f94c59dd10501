"""The gaps of the reference review (``phase2-review-analysis.md``) that the suites close.

One immutable record per gap: where the review raised it, how severe it called it, and the pytest
marker whose tests prove it closed. The evaluation report is a table over exactly this list, so a
gap with no test shows up as SKIP ("no test ran") instead of disappearing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gap:
    marker: str
    title: str
    severity: str  # critical | major | minor, as the review ranked it
    reference: str  # section of the review
    risk: str  # what the review said goes wrong


GAPS: tuple[Gap, ...] = (
    Gap("streaming", "No streaming model handling", "critical",
        "Critical Issues #1 (Qwen3-Thinking)",
        "Data loss and inconsistent results: incomplete streams taken for whole answers."),
    Gap("switching", "Mid-request model switching not handled", "critical",
        "Critical Issues #2 (Qwen3-Thinking)",
        "Partial responses and data corruption when the model changes during active requests."),
    Gap("errors", "Error messages need more context", "critical",
        "Critical Issues #3 (Qwen3-Coder-30B); Major #4; Minor #5",
        "'Could not connect to LM Studio' with no URL; timeouts that do not say which request."),
    Gap("agent", "Exception handling in the multi-MCP loop", "critical",
        "Critical Issues #4 (Qwen3-Coder-30B)",
        "One failing MCP call leaves later calls unexecuted; fail-fast vs continue undecided."),
    Gap("cache", "Model cache expiration not implemented", "major",
        "Major Issues #1 (Qwen3-Thinking, Qwen3-Coder-30B)",
        "Stale model data, memory bloat, false 'model not found'."),
    Gap("backoff", "Inadequate rate limit handling", "major",
        "Major Issues #2 (Qwen3-Thinking)",
        "Unbounded retries multiply a rate limit; no tests for repeated 429s with varied delays."),
    Gap("concurrency", "No async/await safety", "major",
        "Major Issues #3 (Qwen3-Thinking, Qwen3-Coder-30B)",
        "Race conditions: model parameter overwrite and timeouts under concurrent requests."),
)

GAP_MARKERS = frozenset(g.marker for g in GAPS)


def gap_of(markers: set[str]) -> Gap | None:
    """The gap a test guards, by its markers (the first gap in review order wins)."""
    for gap in GAPS:
        if gap.marker in markers:
            return gap
    return None
