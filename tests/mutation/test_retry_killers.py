"""Tests written against the retry module's surviving mutants (docs/mutation.md): the structured
log fields, the validation messages, the smallest valid budget, and which timeouts retry."""

from __future__ import annotations

import logging

import pytest

from harness.client.errors import LMStudioTimeout, RequestContext, ValidationError
from harness.client.retry import (
    HARD_MAX_RETRY_AFTER,
    HARD_MAX_WAIT,
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
                                                 ("deadline", False), ("stream-idle", False),
                                                 ("pool", False)])
def test_only_connect_and_read_timeouts_are_retried(phase: str, retried: bool) -> None:
    assert RetryPolicy().is_retryable(LMStudioTimeout("t", phase=phase)) is retried
