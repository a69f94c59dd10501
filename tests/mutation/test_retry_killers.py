"""Tests written against the retry module's surviving mutants (docs/mutation.md): the structured
log fields, the validation messages, the smallest valid budget, and which timeouts retry."""

from __future__ import annotations

import logging
import random

import pytest

from harness.client.errors import (
    HTTPStatusError,
    LMStudioTimeout,
    RequestContext,
    ValidationError,
)
from harness.client.retry import (
    HARD_MAX_RETRY_AFTER,
    HARD_MAX_WAIT,
    RetryBudget,
    RetryPolicy,
    log_attempt,
)


def test_a_retry_is_logged_with_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    ctx = RequestContext("POST", "http://127.0.0.1:1/v1/chat/completions", "m/x", 2, 5)
    with caplog.at_level(logging.WARNING, logger="harness.client"):
        log_attempt("retry", ctx, wait=0.5, reason="HTTP 503")
    record = caplog.records[-1]
    fields = {k: getattr(record, k, None) for k in
              ("event", "method", "url", "model", "attempt", "wait", "reason")}
    assert fields == {"event": "retry", "method": "POST", "model": "m/x", "attempt": 2,
                      "url": "http://127.0.0.1:1/v1/chat/completions", "wait": 0.5,
                      "reason": "HTTP 503"}


@pytest.mark.parametrize(("options", "message"), [
    ({"backoff_max": HARD_MAX_WAIT + 1}, f"must be 0..{HARD_MAX_WAIT:g} seconds"),
    ({"retry_after_max": HARD_MAX_RETRY_AFTER + 1},
     f"must be 0..{HARD_MAX_RETRY_AFTER:g} seconds"),
    ({"budget_floor": -1}, "ratio 0..1, floor >= 0, window > 0"),
])
def test_an_invalid_policy_says_the_allowed_range(options: dict[str, float], message: str
                                                  ) -> None:
    with pytest.raises(ValidationError, match=message):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_a_budget_floor_of_zero_is_valid() -> None:
    assert RetryPolicy(budget_floor=0).budget_floor == 0


@pytest.mark.parametrize(("phase", "retried"), [("connect", True), ("read", True),
                                                 ("write", False), ("deadline", False),
                                                 ("stream-idle", False), ("pool", False)])
def test_only_connect_and_read_timeouts_are_retried(phase: str, retried: bool) -> None:
    assert RetryPolicy().is_retryable(LMStudioTimeout("t", phase=phase)) is retried


def test_an_injected_draw_decides_the_wait() -> None:
    """``decide`` and ``wait_after`` take the jitter's draw from the ``rng`` they are given
    (tests and replays pin the backoff with it), not from the module's own generator."""
    policy = RetryPolicy()
    error = HTTPStatusError("busy", status=503)
    expected = policy.backoff(3, random.Random(7))
    assert policy.wait_after(3, error, random.Random(7)) == expected
    wait, _ = policy.decide(3, error, remaining=None, rng=random.Random(7))
    assert wait == expected


def test_a_budget_for_a_policy_keeps_its_clock() -> None:
    def clock() -> float:
        return 5.0

    budget = RetryBudget.for_policy(RetryPolicy(budget_window=2.0), clock=clock)
    assert budget.clock is clock and budget.window == 2.0
