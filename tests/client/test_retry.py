"""Retry schedules never exceed the caps, whatever the statuses and Retry-After values."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.client.errors import (
    ConnectError,
    HTTPStatusError,
    LMStudioTimeout,
    RateLimited,
    ServerStreamError,
    ValidationError,
)
from harness.client.protocol import parse_retry_after
from harness.client.retry import RetryBudget, RetryPolicy

failures = st.one_of(
    st.builds(lambda s: HTTPStatusError("x", status=s), st.sampled_from([408, 500, 502, 503, 504])),
    st.builds(lambda ra: RateLimited("x", status=429, retry_after=ra),
              st.one_of(st.none(), st.floats(min_value=0, max_value=1e9))),
    st.just(ConnectError("refused")),
    st.builds(lambda p: LMStudioTimeout("t", phase=p), st.sampled_from(["connect", "read"])),
)


@settings(max_examples=400)
@given(st.lists(failures, min_size=1, max_size=12), st.integers(0, 2**32),
       st.one_of(st.none(), st.floats(min_value=0.1, max_value=120)))
def test_schedule_respects_caps(errors: list[Exception], seed: int, deadline: float | None
                                ) -> None:
    policy = RetryPolicy()
    rng = random.Random(seed)
    elapsed, attempts, waits = 0.0, 1, []
    for error in errors:
        remaining = None if deadline is None else deadline - elapsed
        wait, _ = policy.decide(attempts, error, remaining=remaining, rng=rng)
        if wait is None:
            break
        assert 0 <= wait <= 15
        waits.append(wait)
        elapsed += wait
        attempts += 1
    assert attempts <= 5
    if deadline is not None:
        assert elapsed < deadline


@given(st.integers(1, 10))
def test_backoff_is_full_jitter_under_the_ceiling(attempt: int) -> None:
    policy = RetryPolicy(backoff_base=0.5)
    ceiling = min(15.0, 0.5 * 2 ** (attempt - 1))
    for seed in range(20):
        assert 0 <= policy.backoff(attempt, random.Random(seed)) <= ceiling


def test_what_is_retried() -> None:
    policy = RetryPolicy()
    assert policy.decide(1, HTTPStatusError("x", status=400), remaining=None)[0] is None
    assert policy.decide(1, ServerStreamError("x"), remaining=None)[0] is None
    assert policy.decide(1, LMStudioTimeout("x", phase="deadline"), remaining=None)[0] is None
    assert policy.decide(1, LMStudioTimeout("x", phase="stream-idle"), remaining=None)[0] is None
    assert policy.decide(1, RateLimited("x", status=429, retry_after=3), remaining=None)[0] == 3
    assert policy.decide(1, RateLimited("x", status=429, retry_after=3), remaining=2)[0] is None


def test_policy_refuses_values_over_the_caps() -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(max_attempts=10)
    with pytest.raises(ValidationError):
        RetryPolicy(backoff_max=60)


@given(st.integers(0, 500), st.integers(0, 2000))
def test_budget_bounds_retries(calls: int, wanted: int) -> None:
    now = [0.0]
    budget = RetryBudget(ratio=0.2, floor=10, window=10, clock=lambda: now[0])
    for _ in range(calls):
        budget.record_call()
    granted = sum(budget.try_spend() for _ in range(wanted))
    assert granted == min(wanted, int(10 + 0.2 * calls + 0.9999))
    now[0] += 11  # the window slides: old calls and retries no longer count
    assert budget.retries_in_window == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("", None), ("soon", None), (None, None),
     ("nan", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date_in_future() -> None:
    import email.utils

    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(42, abs=1)
