"""Every retry cap, reached (issue 15, item 5).

The default policy hides its caps: five attempts at a 0.5 s base never bring the backoff near its
15 s ceiling, a test that ends after two retries never meets the deadline or the budget. These
tests drive the retry loop (``Attempts``, the one both shells use) on an injected clock, as long
as it takes to hit each cap, and check the cap holds exactly: the attempt count, the ceiling of a
single wait, the ``Retry-After`` cap (waited exactly up to it, refused above it), the per-call
deadline (no wait that crosses it, no attempt begun after it) and the shared retry budget (and
that its window slides). The draws are injected too: ``MaxDraw`` always takes the top of the
jitter range, so "no wait over the ceiling" is tested where it is tight.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.client import retry as retry_mod
from harness.client.errors import (
    ConnectError,
    HTTPStatusError,
    LMStudioError,
    LMStudioTimeout,
    RateLimited,
    RequestContext,
    ValidationError,
)
from harness.client.retry import (
    HARD_MAX_ATTEMPTS,
    HARD_MAX_RETRY_AFTER,
    HARD_MAX_WAIT,
    Attempts,
    RetryBudget,
    RetryPolicy,
)


class Clock:
    """A clock that only moves when told (the shells' sleep would move it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MaxDraw(random.Random):
    """Full jitter at its worst: every draw is the top of its range."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeCall:
    def context(self, attempt: int, max_attempts: int, elapsed: float,
                waited: float = 0.0) -> RequestContext:
        return RequestContext("POST", "http://127.0.0.1:1/v1/chat/completions", "m", attempt,
                              max_attempts, elapsed, None, waited)


def drive(policy: RetryPolicy, errors: Any, *, deadline: float = 600.0,
          budget: RetryBudget | None = None, clock: Clock | None = None
          ) -> tuple[list[float], LMStudioError, Attempts]:
    """Run the retry loop until it gives up: the waits it asked for, the error it re-raised."""
    clock = clock or Clock()
    attempts = Attempts(FakeCall(), policy, deadline, budget, clock=clock)
    waits: list[float] = []
    while True:
        attempts.begin()
        error = errors(attempts.number) if callable(errors) else errors
        try:
            wait = attempts.failed(error)
        except LMStudioError as given_up:
            return waits, given_up, attempts
        waits.append(wait)
        clock.now += wait


@pytest.fixture
def max_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_mod, "_RNG", MaxDraw())


def unavailable(_: int = 0) -> HTTPStatusError:
    return HTTPStatusError("unavailable", status=503)


# -- attempts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_attempts", range(1, HARD_MAX_ATTEMPTS + 1))
def test_the_attempt_cap_is_reached_and_holds(max_attempts: int, max_draws: None) -> None:
    waits, error, attempts = drive(RetryPolicy(max_attempts=max_attempts, backoff_base=0.01),
                                   unavailable)
    assert attempts.number == max_attempts and len(waits) == max_attempts - 1
    assert error.status == 503


@pytest.mark.parametrize("too_many", [0, HARD_MAX_ATTEMPTS + 1])
def test_no_policy_allows_more_than_the_hard_attempt_cap(too_many: int) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(max_attempts=too_many)


# -- a single wait ----------------------------------------------------------------------------


def test_the_backoff_reaches_its_ceiling_and_stops_there(max_draws: None) -> None:
    """Base 4 s doubles past 15 s by the third retry; every later wait is the ceiling."""
    waits, _, _ = drive(RetryPolicy(backoff_base=4.0), unavailable)
    assert waits == [4.0, 8.0, HARD_MAX_WAIT, HARD_MAX_WAIT]


def test_a_lower_backoff_max_is_the_ceiling(max_draws: None) -> None:
    waits, _, _ = drive(RetryPolicy(backoff_base=1.0, backoff_max=3.0), unavailable)
    assert waits == [1.0, 2.0, 3.0, 3.0]


@given(st.integers(1, 60), st.floats(0, 100), st.floats(0, HARD_MAX_WAIT), st.integers(0, 2**32))
def test_no_backoff_is_over_its_cap_or_negative(attempt: int, base: float, cap: float,
                                                seed: int) -> None:
    policy = RetryPolicy(backoff_base=base, backoff_max=cap)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert policy.backoff(attempt, MaxDraw()) == pytest.approx(ceiling)
    assert 0.0 <= policy.backoff(attempt, random.Random(seed)) <= ceiling <= HARD_MAX_WAIT


@pytest.mark.parametrize("too_long", [-0.1, HARD_MAX_WAIT + 0.01])
def test_no_policy_allows_a_wait_over_the_hard_cap(too_long: float) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(backoff_max=too_long)


# -- Retry-After ------------------------------------------------------------------------------


def limited(seconds: float) -> RateLimited:
    return RateLimited("slow down", status=429, retry_after=seconds)


def test_retry_after_at_the_cap_is_waited_exactly_every_time() -> None:
    waits, error, attempts = drive(RetryPolicy(), limited(HARD_MAX_WAIT))
    assert waits == [HARD_MAX_WAIT] * (HARD_MAX_ATTEMPTS - 1)
    assert attempts.number == HARD_MAX_ATTEMPTS and isinstance(error, RateLimited)


@pytest.mark.parametrize("over", [HARD_MAX_WAIT + 0.001, 60.0, 1e9])
def test_retry_after_over_the_cap_gives_up_at_once(over: float) -> None:
    waits, error, attempts = drive(RetryPolicy(), limited(over))
    assert waits == [] and attempts.number == 1
    assert isinstance(error, RateLimited) and error.retry_after == over


def test_a_raised_retry_after_cap_is_waited_up_to_the_hard_cap() -> None:
    policy = RetryPolicy(retry_after_max=HARD_MAX_RETRY_AFTER)
    waits, _, _ = drive(policy, limited(HARD_MAX_RETRY_AFTER), deadline=10_000)
    assert waits == [HARD_MAX_RETRY_AFTER] * (HARD_MAX_ATTEMPTS - 1)
    waits, _, attempts = drive(policy, limited(HARD_MAX_RETRY_AFTER + 1), deadline=10_000)
    assert waits == [] and attempts.number == 1
    with pytest.raises(ValidationError):
        RetryPolicy(retry_after_max=HARD_MAX_RETRY_AFTER + 1)


def test_retry_after_replaces_the_backoff_not_adds_to_it(max_draws: None) -> None:
    waits, _, _ = drive(RetryPolicy(backoff_base=4.0),
                        lambda n: limited(0.25) if n % 2 else unavailable())
    assert waits == [0.25, 8.0, 0.25, HARD_MAX_WAIT]


# -- the deadline -----------------------------------------------------------------------------


def test_no_wait_crosses_the_deadline() -> None:
    """Deadline 10 s, Retry-After 4 s: two waits fit (8 s); the third would end at 12 s."""
    clock = Clock()
    waits, error, attempts = drive(RetryPolicy(), limited(4.0), deadline=10.0, clock=clock)
    assert waits == [4.0, 4.0] and attempts.number == 3
    assert isinstance(error, RateLimited)
    assert clock.now - attempts.started == 8.0 < attempts.deadline


def test_a_wait_ending_exactly_at_the_deadline_is_not_taken() -> None:
    waits, _, attempts = drive(RetryPolicy(), limited(5.0), deadline=10.0)
    assert waits == [5.0] and attempts.number == 2


def test_no_attempt_begins_once_the_deadline_passed() -> None:
    clock = Clock()
    attempts = Attempts(FakeCall(), RetryPolicy(), 10.0, None, clock=clock)
    attempts.begin()
    clock.now += 10.0  # the attempt itself used the whole deadline
    with pytest.raises(LMStudioTimeout) as info:
        attempts.begin()
    assert info.value.phase == "deadline" and info.value.limit == 10.0
    assert info.value.context is not None and info.value.context.attempt == 2


def test_the_deadline_counts_the_attempts_own_time_too(max_draws: None) -> None:
    """Each attempt takes 3 s of the 10 s deadline before failing: after the first wait of 0.5 s
    only 6.5 s remain, after the second (1 s) 2.5 s, and the third attempt's failure leaves
    -0.5 s, so no further wait."""
    clock = Clock()

    def slow_failure(number: int) -> HTTPStatusError:
        clock.now += 3.0
        return unavailable()

    waits, _, attempts = drive(RetryPolicy(), slow_failure, deadline=10.0, clock=clock)
    assert waits == [0.5, 1.0] and attempts.number == 3


# -- the shared budget ------------------------------------------------------------------------


def test_the_budget_is_floor_plus_ratio_of_recent_calls() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, floor=2, window=10.0, clock=clock)
    for _ in range(4):
        budget.record_call()
    assert [budget.try_spend() for _ in range(5)] == [True, True, True, True, False]
    assert budget.retries_in_window == 4


def test_the_budget_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.0, floor=1, window=10.0, clock=clock)
    assert budget.try_spend() and not budget.try_spend()
    clock.now += 10.0  # exactly one window later the retry still counts
    assert not budget.try_spend()
    clock.now += 0.001
    assert budget.try_spend() and budget.retries_in_window == 1


def test_an_exhausted_budget_stops_every_call_sharing_it(max_draws: None) -> None:
    """Ten calls share a budget of floor 3 + 10 % of calls: 4 retries in all, not 40."""
    clock = Clock()
    policy = RetryPolicy(backoff_base=0.01, budget_ratio=0.1, budget_floor=3)
    budget = RetryBudget.for_policy(policy, clock=clock)
    runs = [Attempts(FakeCall(), policy, 600.0, budget, clock=clock) for _ in range(10)]
    retries = 0
    for attempts in runs:
        while True:
            attempts.begin()
            try:
                clock.now += attempts.failed(unavailable())
            except HTTPStatusError:
                break
            retries += 1
    assert retries == 4
    assert [a.number for a in runs] == [5, 1, 1, 1, 1, 1, 1, 1, 1, 1]


def test_a_refused_retry_is_not_taken_from_the_budget(max_draws: None) -> None:
    """Not retryable, out of attempts or over the deadline: the budget is not charged."""
    clock = Clock()
    budget = RetryBudget(ratio=0.0, floor=1, window=10.0, clock=clock)
    drive(RetryPolicy(max_attempts=1), unavailable, budget=budget, clock=clock)
    drive(RetryPolicy(), ConnectError("refused"), deadline=0.0001, budget=budget, clock=clock)
    drive(RetryPolicy(), HTTPStatusError("bad", status=400), budget=budget, clock=clock)
    assert budget.retries_in_window == 0 and budget.try_spend()
