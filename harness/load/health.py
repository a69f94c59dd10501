"""When the target itself has failed: a streak of requests that got no HTTP answer at all.

Why a policy apart from the SLOs: a dead or refusing server fails every request in microseconds,
so a closed loop hammers it with about a thousand refused requests per second to the end of the
plan and the run ends as "SLO missed", as if the server were slow. Refused and reset connections
say nothing about latency; past a short streak the run stops early with a target error instead.
An HTTP error status (429, 500, ...) is an answer and never counts here.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.load.metrics import RequestRecord


@dataclass(frozen=True)
class TargetDownPolicy:
    """``streak`` unanswered requests in a row, spanning at least ``min_span_s``."""

    streak: int = 20
    min_span_s: float = 0.5
    backoff_s: float = 0.05  # a closed-loop user's pause after an unanswered request


DEFAULT_POLICY = TargetDownPolicy()


class TargetHealth:
    """The streak of unanswered requests seen by one process (every user of a worker)."""

    def __init__(self, policy: TargetDownPolicy = DEFAULT_POLICY) -> None:
        self.policy = policy
        self.streak = 0
        self.first_at: float | None = None
        self.reported = False

    @staticmethod
    def unanswered(record: RequestRecord) -> bool:
        return not record.ok and record.status is None

    def observe(self, record: RequestRecord) -> str | None:
        """Feed one finished request; returns a one-line reason once the target counts as down
        (and only once)."""
        if not self.unanswered(record):
            self.streak, self.first_at = 0, None
            return None
        self.streak += 1
        if self.first_at is None:
            self.first_at = record.t_send
        end = record.t_done if record.t_done is not None else record.t_send
        span = end - self.first_at
        if self.reported or self.streak < self.policy.streak or span < self.policy.min_span_s:
            return None
        self.reported = True
        return (f"{self.streak} requests in a row over {span:.2f}s got no answer from the server "
                f"(last: {record.error_kind}: {record.error})")
