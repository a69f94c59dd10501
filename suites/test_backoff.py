"""Backoff suite. Gap: "Inadequate Rate Limit Handling" (reference analysis, major issue 2).

The review found retries without limits ("10 retries in 10 s = 10x rate limit") and no test of
"repeated 429s with different delays"; it recommended at most 5 retries and 15 s maximum
backoff. LM Studio itself never answers 429 (it queues), but the gateways and proxies in front of
it do, so against a live server these tests run through the fault proxy (``--via-proxy``).

The ``subject`` tests judge any client by the server's ground truth alone: how many attempts
reached the server and how long the client waited between them (short real ``Retry-After``
hints). The ``harness_api`` tests check the harness's own policy more closely: waits recorded by
an injected sleep, so the caps (5 attempts, 15 s) are checked without waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from itertools import pairwise
from typing import Any

import pytest

from harness.client import AsyncClient, RetryPolicy, Timeouts
from harness.client.errors import (
    ConnectError,
    HTTPStatusError,
    LMStudioError,
    LMStudioTimeout,
    RateLimited,
    ServerRejected,
)
from harness.evaluate.support import (
    acall_outcome,
    call_outcome,
    closed_port,
    full_backlog,
    prompt,
)
from harness.evaluate.target import Faults, Target, Truth
from harness.faults import (
    EmptyReplyFault,
    ErrorBody200Fault,
    FaultAction,
    FaultMatch,
    FaultPlan,
    FaultRule,
    LatencyFault,
    StatusFault,
    TemplateErrorFault,
    WrongModelFault,
)

pytestmark = [pytest.mark.backoff, pytest.mark.needs_faults, pytest.mark.needs_truth]

CHAT = "/v1/chat/completions"
HELLO = prompt("hello")


class RecordingSleep:
    """An injected ``sleep`` that records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def rule(action: FaultAction, nth: tuple[int, ...] | None = None) -> FaultRule:
    return FaultRule(match=FaultMatch(endpoint=CHAT, nth=nth), action=action)


def client_for(target: Target, sleep: Any, **kwargs: Any) -> AsyncClient:
    return AsyncClient(target.base_url, model=target.model(0), api_token=target.api_token,
                       sleep=sleep, **kwargs)


def gaps(records: list[dict[str, Any]]) -> list[float]:
    """Seconds between consecutive attempts as the server received them."""
    times = [r["received_at_s"] for r in records]
    return [round(b - a, 3) for a, b in pairwise(times)]


@pytest.mark.subject_needs("sync")
def test_429s_are_retried_honouring_retry_after(target: Target, faults: Faults, truth: Truth,
                                                subject: Any, record_property: Any) -> None:
    """Gap: inadequate rate limit handling ("no tests for repeated 429s with different
    delays"). Two 429s (Retry-After 0.3 s and 0.6 s), then an answer: the client retries, waits
    at least what the server asked each time, and returns the answer (attempts and waits as the
    server saw them)."""
    faults.set(FaultPlan(rules=(
        rule(StatusFault(status=429, retry_after=0.3), nth=(1,)),
        rule(StatusFault(status=429, retry_after=0.6), nth=(2,)),
    )))
    outcome = call_outcome(subject.chat, HELLO, model=target.model(0))
    records = truth.settled(CHAT)
    statuses = [r["status"] for r in records]
    assert outcome.answer is not None and outcome.answer.text, outcome.describe()
    assert statuses == [429, 429, 200], statuses
    waits = gaps(records)
    assert waits[0] >= 0.3 * 0.95 and waits[1] >= 0.6 * 0.95, f"Retry-After not honoured: {waits}"
    record_property("evidence", f"statuses {statuses}; waits between attempts {waits} s "
                                "(asked 0.3 and 0.6)")


@pytest.mark.subject_needs("sync")
def test_endless_429s_are_given_up_within_the_caps(target: Target, faults: Faults, truth: Truth,
                                                   subject: Any, record_property: Any) -> None:
    """Gap: inadequate rate limit handling (the review: at most 5 retries, 15 s backoff). A
    server that answers 429 forever: the client gives up after at most 5 attempts, raises
    (never returns a value as an answer), and no wait exceeds 15 s."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=429, retry_after=0.05)),)))
    outcome = call_outcome(subject.chat, HELLO, model=target.model(0))
    records = truth.settled(CHAT)
    assert outcome.error is not None, f"429 every time, and the client {outcome.describe()}"
    assert 1 <= len(records) <= 5, f"{len(records)} attempts for one call (cap 5)"
    assert all(w <= 15.0 for w in gaps(records))
    record_property("evidence", f"{len(records)} attempts, waits {gaps(records)} s; "
                                f"{outcome.describe(100)}")


@pytest.mark.subject_needs("async")
async def test_429_storm_is_not_multiplied(target: Target, faults: Faults, truth: Truth,
                                           subject: Any, record_property: Any) -> None:
    """Gap: inadequate rate limit handling ("10 retries in 10 s = 10x rate limit"). 100
    concurrent calls in a 429 storm (Retry-After 0.02 s): the upstream attempts the server
    counts stay within 100 + 20 % + a floor of 10, not a multiple of the calls."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=429, retry_after=0.02)),)))
    outcomes = await asyncio.gather(*(acall_outcome(subject.achat, HELLO, model=target.model(0))
                                      for _ in range(100)))
    assert all(o.error is not None for o in outcomes), "an answer came out of a 429 storm"
    upstream = len(truth.settled(CHAT, expect=100))
    allowed = 100 + 10 + 20
    assert upstream <= allowed, (f"{upstream} upstream attempts for 100 calls "
                                 f"({upstream / 100:.1f}x the load; allowed {allowed})")
    record_property("evidence", f"{upstream} upstream attempts for 100 calls (allowed "
                                f"{allowed})")


@pytest.mark.subject_needs("sync")
def test_5xx_burst_is_retried_and_recovers(target: Target, faults: Faults, truth: Truth,
                                           subject: Any, record_property: Any) -> None:
    """Gap: inadequate rate limit handling. A 500 then a 503: the client retries and returns
    the answer that follows."""
    faults.set(FaultPlan(rules=(
        rule(StatusFault(status=500), nth=(1,)),
        rule(StatusFault(status=503), nth=(2,)),
    )))
    outcome = call_outcome(subject.chat, HELLO, model=target.model(0))
    statuses = [r["status"] for r in truth.settled(CHAT)]
    assert outcome.answer is not None and outcome.answer.text, outcome.describe()
    assert statuses == [500, 503, 200], statuses
    record_property("evidence", f"statuses {statuses}; answer returned")


@pytest.mark.subject_needs("sync")
def test_client_error_is_not_retried(target: Target, faults: Faults, truth: Truth,
                                     subject: Any) -> None:
    """Gap: inadequate rate limit handling. A 400 is reported at once: retrying it would only
    multiply load."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=400)),)))
    outcome = call_outcome(subject.chat, HELLO, model=target.model(0))
    assert outcome.error is not None, outcome.describe()
    assert len(truth.settled(CHAT)) == 1


@pytest.mark.harness_api
async def test_repeated_429s_with_varied_retry_after_are_capped(
        target: Target, faults: Faults, truth: Truth, caplog: pytest.LogCaptureFixture,
        record_property: Any) -> None:
    """Gap: inadequate rate limit handling ("no tests for repeated 429s with different
    delays"). Retry-After absent, in seconds, as an HTTP date and huge: no wait over 15 s, each
    hint honoured exactly, a hint over the cap never undercut (the call gives up at once with
    the hint on the error), and the error reports attempts and waits."""
    faults.set(FaultPlan(rules=(
        rule(StatusFault(status=429), nth=(1,)),
        rule(StatusFault(status=429, retry_after=3), nth=(2,)),
        rule(StatusFault(status=429, retry_after=8, retry_after_format="http_date"), nth=(3,)),
        rule(StatusFault(status=429, retry_after=86400), nth=(4,)),
        rule(StatusFault(status=429, retry_after=1)),
    )))
    sleep = RecordingSleep()
    caplog.set_level(logging.WARNING, logger="harness.client")
    async with client_for(target, sleep) as client:
        with pytest.raises(RateLimited) as caught:
            await client.chat(HELLO)
    err = caught.value
    attempts = truth.settled(CHAT)
    assert len(attempts) == 4 and all(r["status"] == 429 for r in attempts)
    assert err.attempt == 4 and err.retry_after == 86400
    waits = sleep.waits
    assert len(waits) == 3 and max(waits) <= 15.0
    assert 0 <= waits[0] <= 0.5 * 2 ** 0  # no hint: jittered backoff, first ceiling 0.5 s
    assert waits[1] == 3.0
    assert 6.0 <= waits[2] <= 8.0  # an HTTP date has one-second resolution
    # One day asked: not undercut by a 15 s wait, given up at once with the hint on the error.
    assert err.total_waited == pytest.approx(sum(waits))
    text = str(err)
    assert "attempt 4/5" in text and "HTTP 429" in text and "waited" in text
    retries = [r for r in caplog.records if r.getMessage().startswith("retry ")]
    assert len(retries) == 3 and "attempt 3/5" in retries[-1].getMessage()
    assert all("reason=HTTP 429" in r.getMessage() for r in retries), retries[0].getMessage()
    # The structured fields a log pipeline reads: which request, which attempt, how long.
    assert [(r.event, r.url, r.attempt) for r in retries] == [  # type: ignore[attr-defined]
        ("retry", f"{target.base_url}{CHAT}", n) for n in (1, 2, 3)]
    assert [r.wait for r in retries] == [round(w, 3) for w in waits]  # type: ignore[attr-defined]
    record_property("evidence", f"4 upstream attempts; waits {[round(w, 2) for w in waits]} s "
                                f"(cap 15 s); one day asked: gave up at once; {text[:160]}")


@pytest.mark.harness_api
@pytest.mark.parametrize(("options", "message"), [
    ({"max_attempts": 0}, "invalid retry.max_attempts: must be 1..5"),
    ({"max_attempts": 6}, "invalid retry.max_attempts: must be 1..5"),
    ({"backoff_max": -0.1}, "invalid retry.backoff_max: must be 0..15 seconds"),
    ({"backoff_max": 15.5}, "invalid retry.backoff_max: must be 0..15 seconds"),
    ({"retry_after_max": -1}, "invalid retry.retry_after_max: must be 0..300 seconds"),
    ({"retry_after_max": 301}, "invalid retry.retry_after_max: must be 0..300 seconds"),
    ({"backoff_base": -0.5}, "invalid retry.backoff_base: must not be negative"),
    ({"budget_ratio": -0.1}, "invalid retry.budget: ratio 0..1, floor >= 0, window > 0"),
    ({"budget_ratio": 1.5}, "invalid retry.budget: ratio 0..1, floor >= 0, window > 0"),
    ({"budget_floor": -1}, "invalid retry.budget: ratio 0..1, floor >= 0, window > 0"),
    ({"budget_window": 0}, "invalid retry.budget: ratio 0..1, floor >= 0, window > 0"),
], ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else "")
def test_the_caps_cannot_be_configured_away(options: dict[str, float], message: str) -> None:
    """Gap: inadequate rate limit handling (the review: at most 5 retries, 15 s backoff). A
    policy past a cap is refused before any request, naming the field and its range."""
    with pytest.raises(ValueError) as caught:
        RetryPolicy(**options)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.harness_api
def test_the_caps_themselves_are_allowed() -> None:
    """Gap: inadequate rate limit handling. Every bound of the policy is inclusive: one or five
    attempts, no or a 15 s backoff, 0 or 300 s Retry-After, a zero base, ratio 0 or 1, floor 0."""
    for options in ({"max_attempts": 1}, {"max_attempts": 5}, {"backoff_max": 0},
                    {"backoff_max": 15}, {"retry_after_max": 0}, {"retry_after_max": 300},
                    {"backoff_base": 0}, {"budget_ratio": 0}, {"budget_ratio": 1},
                    {"budget_floor": 0}, {"budget_window": 0.001}):
        policy = RetryPolicy(**options)  # type: ignore[arg-type]
        assert all(getattr(policy, k) == v for k, v in options.items()), options


@pytest.mark.harness_api
async def test_retry_after_over_the_cap_gives_up_even_when_the_deadline_allows_it(
        target: Target, faults: Faults, truth: Truth) -> None:
    """Gap: inadequate rate limit handling. A hint over ``retry_after_max`` (5 s asked, 1 s
    cap) is neither undercut nor waited out, even with a deadline that would allow it: the
    call gives up at once with the hint on the error."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=429, retry_after=5)),)))
    sleep = RecordingSleep()
    async with client_for(target, sleep, retry=RetryPolicy(retry_after_max=1.0),
                          timeout=Timeouts(deadline=60)) as client:
        with pytest.raises(RateLimited) as caught:
            await client.chat(HELLO)
    assert caught.value.retry_after == 5 and caught.value.attempt == 1
    assert sleep.waits == [] and len(truth.settled(CHAT)) == 1


@pytest.mark.harness_api
async def test_retry_after_exactly_at_the_cap_is_waited(target: Target, faults: Faults,
                                                        truth: Truth) -> None:
    """Gap: inadequate rate limit handling. A hint exactly at ``retry_after_max`` is within
    the cap: waited exactly, then the next attempt answers."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=429, retry_after=2), nth=(1,)),)))
    sleep = RecordingSleep()
    async with client_for(target, sleep, retry=RetryPolicy(retry_after_max=2.0)) as client:
        result = await client.chat(HELLO, max_tokens=16)
    assert result.text and sleep.waits == [2.0]
    assert len(truth.settled(CHAT, expect=2)) == 2


@pytest.mark.harness_api
async def test_read_timeout_before_any_byte_is_retried(target: Target, faults: Faults,
                                                       truth: Truth) -> None:
    """Gap: inadequate rate limit handling. A server that sent nothing within the read limit
    (the first attempt's headers come after 4 s, the limit is 1 s) is asked again, and the
    answer of a later attempt is returned. Counted, not timed: every attempt but the last
    timed out and was followed by one wait (a busy machine may time out a second one too)."""
    faults.set(FaultPlan(rules=(FaultRule(match=FaultMatch(endpoint=CHAT, nth=(1,)),
                                          action=LatencyFault(before_headers_s=4.0)),)))
    sleep = RecordingSleep()
    async with client_for(target, sleep, timeout=Timeouts(connect=5, read=1.0,
                                                          deadline=60)) as client:
        result = await client.chat(HELLO, max_tokens=16)
    assert result.finish_reason in ("stop", "length") and result.text
    # The held first attempt ends on the server's side only after its 4 s hold (and, through
    # the proxy, the upstream answer it then still fetches): wait past that, not 3 s flat.
    attempts = len(truth.settled(CHAT, expect=2, timeout=4.0 + target.calibration.seconds(3.0)))
    assert attempts >= 2 and len(sleep.waits) == attempts - 1, (attempts, sleep.waits)


@pytest.mark.harness_api
async def test_retries_stop_within_the_deadline(target: Target, faults: Faults, truth: Truth,
                                                record_property: Any) -> None:
    """Gap: inadequate rate limit handling. Retries never run past the call's deadline: a wait
    that would cross it is not taken, and the call gives up in time with the 429 (real time,
    short cap: 1 s deadline, 0.4 s Retry-After)."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=429, retry_after=0.4)),)))
    started = time.perf_counter()
    async with client_for(target, asyncio.sleep,
                          timeout=Timeouts(connect=2, read=5, deadline=1.0)) as client:
        with pytest.raises((RateLimited, LMStudioTimeout)) as caught:
            await client.chat(HELLO)
    elapsed = time.perf_counter() - started
    attempts = len(truth.settled(CHAT))
    # The client's decisions, not the machine's speed: with 0.4 s hints and a 1 s deadline at
    # most 3 attempts fit (at 0, 0.4, 0.8 s), and the waits it took stay within the deadline.
    # It ends with the 429 when the next wait would cross the deadline or, when a busy machine
    # made the last attempt itself run into the deadline, with the deadline timeout.
    error = caught.value
    assert isinstance(error, RateLimited) or (
        isinstance(error, LMStudioTimeout) and error.phase == "deadline"), repr(error)
    assert attempts == error.attempt <= 3
    assert error.total_waited <= 1.0, f"waited {error.total_waited:.2f}s"
    assert elapsed < 2.0, f"gave up after {elapsed:.2f}s, far past the 1 s deadline"
    record_property("evidence", f"gave up after {attempts} attempts in {elapsed:.2f} s "
                                "(deadline 1 s)")


@pytest.mark.harness_api
async def test_a_wait_that_overran_the_deadline_sends_no_further_attempt(
        target: Target, faults: Faults, truth: Truth) -> None:
    """Gap: inadequate rate limit handling. The deadline is checked again after every wait: a
    0.1 s wait (Retry-After) that a stalled event loop stretched past the 3 s deadline ends
    the call with the deadline timeout, and no second attempt reaches the server."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=429, retry_after=0.1)),)))

    async def overrunning_sleep(seconds: float) -> None:
        await asyncio.sleep(seconds + 3.0)

    async with client_for(target, overrunning_sleep,
                          timeout=Timeouts(connect=2, read=3, deadline=3.0)) as client:
        with pytest.raises(LMStudioTimeout) as caught:
            await client.chat(HELLO)
    assert caught.value.phase == "deadline" and caught.value.limit == 3.0
    assert caught.value.attempt == 2 and caught.value.message == "call deadline passed"
    assert len(truth.settled(CHAT)) == 1


@pytest.mark.harness_api
async def test_429_storm_stays_within_the_retry_budget(target: Target, faults: Faults,
                                                       truth: Truth,
                                                       record_property: Any) -> None:
    """Gap: inadequate rate limit handling ("10 retries in 10 s = 10x rate limit"). 100
    concurrent calls in a 429 storm: the client's shared retry budget keeps upstream attempts
    near 100 + 20% + a small floor instead of 500 (counted by the server's ground truth)."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=429)),)))
    sleep = RecordingSleep()
    policy = RetryPolicy()
    async with client_for(target, sleep, retry=policy) as client:
        outcomes = await asyncio.gather(*(client.chat(HELLO) for _ in range(100)),
                                        return_exceptions=True)
    assert all(isinstance(o, RateLimited) for o in outcomes), {type(o) for o in outcomes}
    upstream = len(truth.settled(CHAT, expect=100))
    allowed = 100 + policy.budget_floor + int(policy.budget_ratio * 100)
    # Every call is counted before any retry, so the whole budget (floor + ratio x calls) is
    # spent: well over the floor alone (half the ratio's share as margin), never over it all.
    assert 100 + policy.budget_floor + policy.budget_ratio * 50 < upstream <= allowed, (
        f"{upstream} upstream attempts, budget allows {allowed}")
    assert max(sleep.waits) <= 15.0
    record_property("evidence", f"{upstream} upstream attempts for 100 calls (unbounded: 500; "
                                f"budget: {allowed})")


@pytest.mark.harness_api
@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
async def test_5xx_burst_recovers(target: Target, faults: Faults, truth: Truth, stream: bool,
                                  record_property: Any) -> None:
    """Gap: inadequate rate limit handling. A burst of 500/502/503 answers is retried with
    backoff and the call then succeeds (a stream is retried before its first token)."""
    faults.set(FaultPlan(rules=(
        rule(StatusFault(status=500), nth=(1,)),
        rule(StatusFault(status=502), nth=(2,)),
        rule(StatusFault(status=503), nth=(3,)),
    )))
    sleep = RecordingSleep()
    live = not target.can("emulator")
    bound = {"max_tokens": 16} if live else {}
    async with client_for(target, sleep) as client:
        if stream:
            async with client.stream_chat(HELLO, **bound) as s:
                result = await s.result()
        else:
            result = await client.chat(HELLO, **bound)
    assert result.finish_reason in (("stop", "length") if live else ("stop",)) and result.text
    statuses = [r["status"] for r in truth.settled(CHAT)]
    assert statuses == [500, 502, 503, 200]
    assert len(sleep.waits) == 3
    for attempt, wait in enumerate(sleep.waits, start=1):  # full jitter under the doubling ceiling
        assert 0 <= wait <= RetryPolicy().backoff_base * 2 ** (attempt - 1)
    record_property("evidence", f"statuses {statuses}; waits {[round(w, 2) for w in sleep.waits]}")


@pytest.mark.harness_api
async def test_non_retryable_status_is_not_retried(target: Target, faults: Faults,
                                                   truth: Truth) -> None:
    """Gap: inadequate rate limit handling. A client error (400) is reported at once: retrying
    it would only multiply load."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=400)),)))
    sleep = RecordingSleep()
    async with client_for(target, sleep) as client:
        with pytest.raises(HTTPStatusError) as caught:
            await client.chat(HELLO)
    assert caught.value.status == 400 and caught.value.attempt == 1
    assert len(truth.settled(CHAT)) == 1 and sleep.waits == []


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def fields(record: logging.LogRecord, *names: str) -> tuple[Any, ...]:
    return tuple(getattr(record, name, None) for name in names)


GIVE_UPS = {
    "attempts-exhausted": (StatusFault(status=429), RetryPolicy(),
                           ["HTTP 429"] * 4, "attempts exhausted (5/5)", "RateLimited"),
    "not-retryable": (StatusFault(status=400), RetryPolicy(),
                      [], "not retryable", "HTTPStatusError"),
    "budget-exhausted": (StatusFault(status=503), RetryPolicy(budget_floor=0, budget_ratio=0),
                         [], "client retry budget exhausted", "HTTPStatusError"),
    # Every call may be retried once, but only calls of the last microsecond count: by the
    # time this one failed, it no longer did.
    "budget-window-passed": (StatusFault(status=503),
                             RetryPolicy(budget_floor=0, budget_ratio=1.0, budget_window=1e-6),
                             [], "client retry budget exhausted", "HTTPStatusError"),
    # One retry per call of the last minute: this call and the listing that warmed the cache.
    "budget-one-per-call": (StatusFault(status=503),
                            RetryPolicy(budget_floor=0, budget_ratio=1.0, budget_window=60),
                            ["HTTP 503"] * 2, "client retry budget exhausted",
                            "HTTPStatusError"),
}


@pytest.mark.harness_api
@pytest.mark.parametrize("case", sorted(GIVE_UPS))
async def test_every_retry_and_give_up_is_logged_with_its_reason(
        target: Target, faults: Faults, truth: Truth, caplog: pytest.LogCaptureFixture,
        case: str, record_property: Any) -> None:
    """Gap: inadequate rate limit handling, and errors that don't say what failed. Each retry
    is one structured ``retry`` record and the end of trying one ``give-up`` record, naming
    the request, the attempt out of how many, why (attempts used up, not retryable, the client's
    retry budget spent), the error, the time the call took and the time it waited. Giving up on
    a 429 leaves the model listing cached: only a model-not-found answer drops it."""
    action, policy, retry_reasons, reason, error = GIVE_UPS[case]
    faults.set(FaultPlan(rules=(rule(action),)))
    sleep = RecordingSleep()
    caplog.set_level(logging.WARNING, logger="harness.client")
    async with client_for(target, sleep, retry=policy, timeout=Timeouts(deadline=60)) as client:
        await client.catalog.amodels()
        started = time.perf_counter()
        with pytest.raises(HTTPStatusError) as caught:
            await client.chat(HELLO)
        took = time.perf_counter() - started
        assert client.catalog.age is not None, "a failed call must not drop the cached listing"
    attempts = len(truth.settled(CHAT))
    assert attempts == caught.value.attempt == len(retry_reasons) + 1
    assert type(caught.value).__name__ == error
    retries = logged(caplog, "retry")
    assert [fields(r, "reason", "attempt", "max_attempts") for r in retries] == [
        (why, n, policy.max_attempts) for n, why in enumerate(retry_reasons, start=1)]
    [give_up] = logged(caplog, "give-up")
    assert fields(give_up, "reason", "error", "attempt", "max_attempts", "method", "url",
                  "model") == (reason, error, attempts, policy.max_attempts, "POST",
                               f"{target.base_url}{CHAT}", target.model(0))
    assert give_up.getMessage() == (
        f"give-up POST {target.base_url}{CHAT} (model={target.model(0)}, attempt {attempts}/"
        f"{policy.max_attempts}) reason={reason} error={error}")
    assert not logged(caplog, "send"), "sending is logged at DEBUG, not as a warning"
    # Seconds to the millisecond: how long the call had run, how long it waited in backoff.
    elapsed, waited = give_up.elapsed, give_up.waited  # type: ignore[attr-defined]
    assert 0 < elapsed <= took + 0.001 and elapsed == round(elapsed, 3), (elapsed, took)
    assert waited == pytest.approx(sum(sleep.waits), abs=1e-3) and waited == round(waited, 3)
    record_property("evidence", f"{attempts} attempts; give-up: {give_up.getMessage()}")


@pytest.mark.harness_api
@pytest.mark.parametrize("how", ["refused", "accept-queue-full"])
async def test_a_connection_that_never_opened_is_retried_and_logged(
        how: str, caplog: pytest.LogCaptureFixture, record_property: Any) -> None:
    """Gap: inadequate rate limit handling. Nothing was sent when the connection was refused or
    never accepted (a server whose accept queue is full: the kernel drops the handshake, the
    connect times out), so both are retried, each retry saying why, and the call then gives up
    with the same typed error. A raw loopback socket, no server at all."""
    sleep = RecordingSleep()
    caplog.set_level(logging.WARNING, logger="harness.client")
    with contextlib.ExitStack() as stack:
        port = closed_port() if how == "refused" else stack.enter_context(full_backlog())
        async with AsyncClient(f"http://127.0.0.1:{port}", model="m/x", sleep=sleep,
                               retry=RetryPolicy(max_attempts=3),
                               timeout=Timeouts(connect=0.2, deadline=30)) as client:
            with pytest.raises((ConnectError, LMStudioTimeout)) as caught:
                await client.chat(HELLO)
    expected = "ConnectError" if how == "refused" else "timeout (connect)"
    err = caught.value
    assert (type(err) is ConnectError) if how == "refused" else (
        isinstance(err, LMStudioTimeout) and err.phase == "connect"), repr(err)
    assert err.attempt == 3 and len(sleep.waits) == 2
    assert [fields(r, "reason", "attempt") for r in logged(caplog, "retry")] == [
        (expected, 1), (expected, 2)]
    [give_up] = logged(caplog, "give-up")
    assert fields(give_up, "reason", "error") == ("attempts exhausted (3/3)", type(err).__name__)
    record_property("evidence", f"{how}: {err}")


@pytest.mark.harness_api
@pytest.mark.parametrize("action", [ErrorBody200Fault(), EmptyReplyFault(), WrongModelFault()],
                         ids=["error-body-200", "empty-reply", "wrong-model"])
async def test_an_answer_that_had_started_is_never_sent_again(
        target: Target, faults: Faults, truth: Truth, action: FaultAction) -> None:
    """Gap: inadequate rate limit handling ("retries multiply load"). Once the server answered
    (a 200 carrying an error, an empty reply, an answer from another model), the request ran:
    sending it again would run it twice. The call fails at once, retries on by default."""
    faults.set(FaultPlan(rules=(rule(action),)))
    sleep = RecordingSleep()
    async with client_for(target, sleep) as client:
        with pytest.raises(LMStudioError) as caught:
            await client.chat(HELLO)
    assert not isinstance(caught.value, HTTPStatusError), repr(caught.value)
    assert caught.value.attempt == 1 and sleep.waits == []
    assert len(truth.settled(CHAT)) == 1


@pytest.mark.harness_api
async def test_backoff_reaches_its_ceiling_and_never_passes_it(target: Target, faults: Faults,
                                                               truth: Truth) -> None:
    """Gap: inadequate rate limit handling (15 s maximum backoff). With the default base the
    doubling never comes near its ceiling in 5 attempts, so the cap is shown on a policy whose
    base alone passes it (8 s base, 4 s ceiling): on endless 503s all four waits are under the
    ceiling (full jitter up to it; without the cap they could reach 8, 16, 32 and 64 s).
    Injected sleep: nothing is waited for real."""
    faults.set(FaultPlan(rules=(rule(StatusFault(status=503)),)))
    sleep = RecordingSleep()
    policy = RetryPolicy(backoff_base=8.0, backoff_max=4.0)
    async with client_for(target, sleep, retry=policy, timeout=Timeouts(deadline=600)) as client:
        with pytest.raises(HTTPStatusError) as caught:
            await client.chat(HELLO)
    assert caught.value.status == 503 and caught.value.attempt == 5
    assert len(sleep.waits) == 4 and all(0 <= w <= 4.0 for w in sleep.waits), sleep.waits
    assert len(truth.settled(CHAT)) == 5


@pytest.mark.harness_api
async def test_a_deterministic_500_is_never_retried(target: Target, faults: Faults,
                                                    truth: Truth) -> None:
    """Gap: inadequate rate limit handling ("retries multiply load"). LM Studio answers a
    prompt its chat template cannot render with an HTTP 500 (BT#2218): a status that is
    retried when it is transient, but this one the same request always gets again. It fails
    at once as ``ServerRejected``, naming the template, with no wait and one attempt."""
    faults.set(FaultPlan(rules=(rule(TemplateErrorFault()),)))
    sleep = RecordingSleep()
    async with client_for(target, sleep) as client:
        with pytest.raises(ServerRejected) as caught:
            await client.chat(HELLO)
    assert caught.value.status == 500 and caught.value.reason == "template"
    assert caught.value.attempt == 1 and sleep.waits == []
    assert len(truth.settled(CHAT)) == 1


@pytest.mark.harness_api
async def test_a_listing_that_fails_is_logged_without_a_model(
        target: Target, faults: Faults, truth: Truth, caplog: pytest.LogCaptureFixture) -> None:
    """Gap: errors that don't say what failed. A request that names no model (the model
    listing) is retried and given up like any other, its log saying ``model=-`` rather than
    naming a model it never asked for."""
    faults.set(FaultPlan(rules=(FaultRule(match=FaultMatch(endpoint="/v1/models"),
                                          action=StatusFault(status=503)),)))
    caplog.set_level(logging.WARNING, logger="harness.client")
    sleep = RecordingSleep()
    async with client_for(target, sleep, retry=RetryPolicy(max_attempts=2)) as client:
        with pytest.raises(HTTPStatusError):
            await client.list_models()
    [retry] = logged(caplog, "retry")
    [give_up] = logged(caplog, "give-up")
    url = f"{target.base_url}/v1/models"
    assert retry.getMessage() == (f"retry GET {url} (model=-, attempt 1/2) "
                                  f"wait={round(sleep.waits[0], 3)} reason=HTTP 503")
    assert give_up.getMessage() == (f"give-up GET {url} (model=-, attempt 2/2) "
                                    "reason=attempts exhausted (2/2) error=HTTPStatusError")
    assert len(truth.settled("/v1/models")) == 2
