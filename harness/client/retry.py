"""Bounded retries: which failures to retry, how long to wait, and a budget shared by all calls.

The reference review's complaint was "10 retries in 10 s = 10x the rate limit". Three small values
bound that here:

- ``RetryPolicy``: at most 5 attempts, full-jitter exponential backoff (ceiling from tenacity's
  ``wait_exponential``) with no single wait over 15 s. ``Retry-After`` is never undercut: a wait
  up to ``retry_after_max`` (default 15 s, at most 300 s) is waited exactly; a longer one makes
  the call give up at once with the ``RateLimited`` error, whose ``retry_after`` says how long the
  server asked for (choose ``retry_after_max`` above it to wait, if the deadline allows);
- the per-call deadline (``Timeouts.deadline``): a retry whose wait would cross it is not made;
- ``RetryBudget``: retries across all calls of one client are at most ``ratio`` of the calls seen
  in the last ``window`` seconds plus a small ``floor``, so 100 concurrent calls hitting a 429
  storm make about 100 + 20 + floor upstream attempts, not 500.

``Attempts`` is the retry loop itself, sans-IO: both shells (and any other driver) ask it for the
next attempt's context and hand it each failure; it answers with the wait or re-raises. Which
failures are retried is decided only in ``RetryPolicy.is_retryable``: never a deterministic
rejection (template / tool JSON / context overflow), never anything after a response had started
(a broken body or stream, an incomplete answer), never a deadline or a full pool.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Protocol

from tenacity import wait_exponential

from harness.client.errors import (
    ConnectError,
    HTTPStatusError,
    LMStudioError,
    LMStudioTimeout,
    ModelNotFound,
    RequestContext,
    ServerRejected,
    ValidationError,
)

HARD_MAX_ATTEMPTS = 5
HARD_MAX_WAIT = 15.0
HARD_MAX_RETRY_AFTER = 300.0
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_RNG = random.Random()
logger = logging.getLogger("harness.client")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = HARD_MAX_ATTEMPTS
    backoff_base: float = 0.5
    backoff_max: float = HARD_MAX_WAIT
    retry_after_max: float = HARD_MAX_WAIT
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES
    budget_ratio: float = 0.2
    budget_floor: int = 10
    budget_window: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= HARD_MAX_ATTEMPTS:
            raise ValidationError("retry.max_attempts", f"must be 1..{HARD_MAX_ATTEMPTS}")
        if not 0 <= self.backoff_max <= HARD_MAX_WAIT:
            raise ValidationError("retry.backoff_max", f"must be 0..{HARD_MAX_WAIT:g} seconds")
        if not 0 <= self.retry_after_max <= HARD_MAX_RETRY_AFTER:
            raise ValidationError("retry.retry_after_max",
                                  f"must be 0..{HARD_MAX_RETRY_AFTER:g} seconds")
        if self.backoff_base < 0:
            raise ValidationError("retry.backoff_base", "must not be negative")
        if not 0 <= self.budget_ratio <= 1 or self.budget_floor < 0 or self.budget_window <= 0:
            raise ValidationError("retry.budget", "ratio 0..1, floor >= 0, window > 0")

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(max_attempts=1)

    def is_retryable(self, error: BaseException) -> bool:
        """Connect errors and resets before any response byte, connect/read timeouts before any
        byte, and the transient statuses. Never a deadline, a full pool, a validation error, a
        deterministic rejection, or anything after a response had started."""
        if isinstance(error, LMStudioTimeout):
            return error.phase in ("connect", "read")
        if isinstance(error, ConnectError):
            return True
        if isinstance(error, ServerRejected):
            return False
        if isinstance(error, HTTPStatusError):
            return error.status in self.retry_statuses
        return False

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter exponential wait after failed attempt ``attempt`` (1-based): uniform in
        ``[0, min(backoff_max, base * 2**(attempt-1))]``, the ceiling from tenacity's
        ``wait_exponential`` so the rule is the well-known one, the draw injectable for tests."""
        ceiling = wait_exponential(multiplier=self.backoff_base, max=self.backoff_max)(
            SimpleNamespace(attempt_number=attempt)  # type: ignore[arg-type]
        )
        return (rng or _RNG).uniform(0.0, float(ceiling))

    def wait_after(self, attempt: int, error: BaseException,
                   rng: random.Random | None = None) -> float:
        """The wait before the next attempt: the server's ``Retry-After`` when it gave one
        (exactly: ``decide`` gives up on one above ``retry_after_max`` rather than cut it short),
        otherwise the jittered backoff."""
        if isinstance(error, HTTPStatusError) and error.retry_after is not None:
            return error.retry_after
        return self.backoff(attempt, rng)

    def decide(self, attempt: int, error: BaseException, *, remaining: float | None,
               budget: RetryBudget | None = None, rng: random.Random | None = None
               ) -> tuple[float | None, str]:
        """``(wait, reason)``; ``wait`` is None when the call must give up now."""
        if not self.is_retryable(error):
            return None, "not retryable"
        if attempt >= self.max_attempts:
            return None, f"attempts exhausted ({attempt}/{self.max_attempts})"
        asked = error.retry_after if isinstance(error, HTTPStatusError) else None
        if asked is not None and asked > self.retry_after_max:
            return None, (f"server asked to wait {asked:g}s (Retry-After), over retry_after_max "
                          f"{self.retry_after_max:g}s")
        wait = self.wait_after(attempt, error, rng)
        if remaining is not None and wait >= remaining:
            return None, f"next wait {wait:.2f}s would pass the deadline ({remaining:.2f}s left)"
        if budget is not None and not budget.try_spend():
            return None, "client retry budget exhausted"
        return wait, _reason(error)


class Attempts:
    """One call's retry loop as a value: which attempt, how long waited, when to stop.

    A driver does::

        attempts = Attempts(call, policy, deadline, budget)
        while True:
            ctx = attempts.begin()          # raises the deadline error when no time is left
            try:
                return attempt(ctx)         # errors raised inside carry ctx, built whole
            except LMStudioError as err:
                sleep(attempts.failed(err))  # re-raises err when the policy says give up
    """

    __slots__ = ("_budget", "_call", "_clock", "_on_not_found", "_policy", "deadline", "number",
                 "started", "waited")

    def __init__(self, call: _CallLike, policy: RetryPolicy, deadline: float,
                 budget: RetryBudget | None, clock: Callable[[], float] = time.perf_counter,
                 on_model_not_found: Callable[[], None] | None = None) -> None:
        self._call, self._policy, self._budget, self._clock = call, policy, budget, clock
        self._on_not_found = on_model_not_found
        self.started = clock()
        self.deadline = deadline
        self.number = 0
        self.waited = 0.0
        if budget is not None:
            budget.record_call()

    @property
    def deadline_at(self) -> float:
        return self.started + self.deadline

    def begin(self) -> RequestContext:
        self.number += 1
        elapsed = self._clock() - self.started
        ctx = self._call.context(self.number, self._policy.max_attempts, elapsed, self.waited)
        if elapsed >= self.deadline:
            raise LMStudioTimeout("call deadline passed", phase="deadline", limit=self.deadline,
                                  context=ctx)
        return ctx

    def failed(self, error: LMStudioError) -> float:
        """The wait before the next attempt; re-raises ``error`` when the call must give up."""
        if isinstance(error, ModelNotFound) and self._on_not_found is not None:
            self._on_not_found()  # the cached catalog is stale
        elapsed = self._clock() - self.started
        # The log names this loop's own attempt and times, whatever context (if any) the error
        # carries: a driver's errors need not carry one, and the logged fields stay the same.
        ctx = self._call.context(self.number, self._policy.max_attempts, elapsed, self.waited)
        wait, reason = self._policy.decide(self.number, error, remaining=self.deadline - elapsed,
                                           budget=self._budget)
        if wait is None:
            log_attempt("give-up", ctx, reason=reason, error=type(error).__name__)
            raise error
        log_attempt("retry", ctx, wait=round(wait, 3), reason=reason)
        self.waited += wait
        return wait


class _CallLike(Protocol):
    def context(self, attempt: int, max_attempts: int, elapsed: float,
                waited: float = 0.0) -> RequestContext: ...


def log_attempt(event: str, ctx: RequestContext, **fields: Any) -> None:
    level = logging.WARNING if event in ("retry", "give-up") else logging.DEBUG
    if logger.isEnabledFor(level):
        logger.log(level, "%s %s %s (model=%s, attempt %d/%d)%s", event, ctx.method, ctx.url,
                   ctx.model or "-", ctx.attempt, ctx.max_attempts,
                   "".join(f" {k}={v}" for k, v in fields.items()),
                   extra={"event": event, "method": ctx.method, "url": ctx.url,
                          "model": ctx.model, "attempt": ctx.attempt,
                          "max_attempts": ctx.max_attempts, "elapsed": round(ctx.elapsed, 3),
                          "waited": round(ctx.waited, 3), **fields})


def _reason(error: BaseException) -> str:
    if isinstance(error, LMStudioError) and error.status is not None:
        return f"HTTP {error.status}"
    if isinstance(error, LMStudioTimeout):
        return f"timeout ({error.phase})"
    return type(error).__name__


@dataclass
class RetryBudget:
    """Retries allowed across all calls of one client: ``floor + ratio * calls`` per window."""

    ratio: float = 0.2
    floor: int = 10
    window: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _calls: deque[float] = field(default_factory=deque)
    _retries: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_policy(cls, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic
                   ) -> RetryBudget:
        return cls(ratio=policy.budget_ratio, floor=policy.budget_floor,
                   window=policy.budget_window, clock=clock)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        for queue in (self._calls, self._retries):
            while queue and queue[0] < horizon:
                queue.popleft()

    def record_call(self) -> None:
        now = self.clock()
        with self._lock:
            self._trim(now)
            self._calls.append(now)

    def try_spend(self) -> bool:
        now = self.clock()
        with self._lock:
            self._trim(now)
            if len(self._retries) >= self.floor + self.ratio * len(self._calls):
                return False
            self._retries.append(now)
            return True

    @property
    def retries_in_window(self) -> int:
        with self._lock:
            self._trim(self.clock())
            return len(self._retries)
