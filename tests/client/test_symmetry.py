"""Every stream, stall, deadline, cancel and retry behaviour, on both shells (issue 15, item 4).

One behaviour, one test, parametrised over ``Client`` and ``AsyncClient``: the drivers below are
the only shell-specific code. They run against the emulator over real HTTP, with its streams
stressed (split and coalesced frames, multibyte text, keep-alives), its faults and its ground
truth, so "the server sent it once" and "the client delivered it once" are both checked. The
broken-stream cases run with retries *on* (the default policy, sleeps recorded instead of
slept): a stream must never be re-sent once tokens reached the caller, so no text is ever
delivered twice (issue 15, item 5).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness import AsyncClient, Client, RetryPolicy, Timeouts
from harness.client.errors import (
    HTTPStatusError,
    LMStudioError,
    LMStudioTimeout,
    RateLimited,
    StreamInterrupted,
    StreamStalled,
)
from harness.client.models import ChatResult, TextDelta
from harness.faults import (
    DisconnectFault,
    FaultAction,
    FaultMatch,
    FaultPlan,
    FaultRule,
    MalformedSseFault,
    MissingDoneFault,
    StallFault,
    StatusFault,
    TruncatedJsonFault,
)
from harness.studio.stress import Stress
from harness.studio.testing import StudioHandle, running_studio

SHELLS = ["sync", "async"]
CHAT = "/v1/chat/completions"
MODEL = "qwen/qwen3-4b"
STORY = [{"role": "user", "content": "Tell me a story"}]


@dataclass
class Outcome:
    """What one call through a shell gave the caller: the text pieces in order, then either
    the result or the error, and the waits it asked its sleep for."""

    pieces: list[str] = field(default_factory=list)
    result: ChatResult | None = None
    error: LMStudioError | None = None
    waits: list[float] = field(default_factory=list)


def run(shell: str, url: str, *, stream: bool = True, stop_after: int | None = None,
        sleep_for_real: bool = False, **client_kw: Any) -> Outcome:
    """One chat through ``shell``. ``stop_after``: leave the loop after that many pieces;
    waits are recorded and, with ``sleep_for_real``, also slept."""
    client_kw.setdefault("model", MODEL)
    out = Outcome()

    def take(event: Any) -> bool:
        if isinstance(event, TextDelta) and event.text:
            out.pieces.append(event.text)
        return stop_after is not None and len(out.pieces) >= stop_after

    def record_sync_wait(seconds: float) -> None:
        out.waits.append(seconds)
        if sleep_for_real:
            time.sleep(seconds)

    if shell == "sync":
        with Client(url, sleep=record_sync_wait, **client_kw) as client:
            try:
                if not stream:
                    out.result = client.chat(STORY, seed=1)
                    return out
                with client.stream_chat(STORY, seed=1) as s:
                    for event in s:
                        if take(event):
                            return out
                    out.result = s.result()
            except LMStudioError as err:
                out.error = err
        return out

    async def record_wait(seconds: float) -> None:
        out.waits.append(seconds)
        if sleep_for_real:
            await asyncio.sleep(seconds)

    async def main() -> None:
        async with AsyncClient(url, sleep=record_wait, **client_kw) as client:
            try:
                if not stream:
                    out.result = await client.chat(STORY, seed=1)
                    return
                async with client.stream_chat(STORY, seed=1) as s:
                    async for event in s:
                        if take(event):
                            return
                    out.result = await s.result()
            except LMStudioError as err:
                out.error = err

    asyncio.run(main())
    return out


@pytest.fixture(scope="module")
def _studio() -> Iterator[StudioHandle]:
    with running_studio(stress=Stress(seed=5)) as handle:
        yield handle


@pytest.fixture
def studio(_studio: StudioHandle) -> Iterator[StudioHandle]:
    _studio.clear_faults()
    yield _studio
    _studio.clear_faults()


def fault(studio: StudioHandle, action: FaultAction, **match: Any) -> int:
    """Install one rule for the chat endpoint; returns the truth mark to read from."""
    studio.set_faults(FaultPlan(rules=(FaultRule(match=FaultMatch(endpoint=CHAT, **match),
                                                 action=action),)))
    return last_id(studio)


def last_id(studio: StudioHandle) -> int:
    return max((r["id"] for r in studio.truth()), default=0)


def settled(studio: StudioHandle, since: int, count: int) -> list[dict[str, Any]]:
    """The chat records after ``since`` once ``count`` of them are closed (status known)."""
    deadline = time.monotonic() + 5
    while True:
        records = [r for r in studio.truth(since) if r["endpoint"] == CHAT]
        if len(records) >= count and all(r["status"] is not None for r in records):
            return records
        if time.monotonic() > deadline:
            return records
        time.sleep(0.01)


def whole_text(studio: StudioHandle) -> str:
    with Client(studio.base_url, model=MODEL, retry=RetryPolicy.none()) as client:
        return client.chat(STORY, seed=1).text


# -- streams ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_a_stressed_stream_is_read_whole_and_once(studio: StudioHandle, shell: str) -> None:
    mark = last_id(studio)
    out = run(shell, studio.base_url)
    assert out.error is None and out.result is not None
    assert "".join(out.pieces) == out.result.text == whole_text(studio)
    assert not out.result.text.isascii()  # the stress is on: multibyte text crossed reads
    assert [r["status"] for r in settled(studio, mark, 2)] == [200, 200]  # no retry


BROKEN: list[tuple[str, FaultAction]] = [
    ("disconnect", DisconnectFault(after_chunks=3)),
    ("truncated-json", TruncatedJsonFault(after_chunks=3, then="close")),
    ("malformed-line", MalformedSseFault(after_chunks=3)),
    ("missing-done", MissingDoneFault()),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("name", "action"), BROKEN, ids=[n for n, _ in BROKEN])
def test_a_broken_stream_raises_keeps_its_partial_and_is_never_re_sent(
        studio: StudioHandle, shell: str, name: str, action: FaultAction) -> None:
    mark = fault(studio, action)
    out = run(shell, studio.base_url)  # the default retry policy: retries on
    assert isinstance(out.error, StreamInterrupted), (name, out.error)
    assert out.result is None and out.waits == []
    delivered = "".join(out.pieces)
    assert out.error.partial.text == delivered and delivered
    studio.clear_faults()
    assert whole_text(studio).startswith(delivered)  # nothing twice, nothing out of order
    assert len(settled(studio, mark, 1)) == 2  # the broken call (once) + the twin above


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failure_before_the_first_token_is_retried_and_text_arrives_once(
        studio: StudioHandle, shell: str) -> None:
    mark = fault(studio, StatusFault(status=503), times=2)
    out = run(shell, studio.base_url)
    assert out.error is None and out.result is not None
    assert len(out.waits) == 2
    studio.clear_faults()
    assert "".join(out.pieces) == out.result.text == whole_text(studio)
    statuses = [r["status"] for r in settled(studio, mark, 4)]
    assert statuses[:3] == [503, 503, 200]


# -- stalls and deadlines ---------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_a_stall_after_tokens_raises_stream_idle_with_the_partial(studio: StudioHandle,
                                                                  shell: str) -> None:
    mark = fault(studio, StallFault(after_chunks=3, seconds=1.5))
    out = run(shell, studio.base_url, timeout=Timeouts(stream_idle=0.3, read=5))
    assert isinstance(out.error, StreamStalled) and out.error.phase == "stream-idle"
    assert out.error.partial.text == "".join(out.pieces) and out.pieces
    assert out.waits == [] and len(settled(studio, mark, 1)) == 1  # stalled: not re-sent


@pytest.mark.parametrize("shell", SHELLS)
def test_the_deadline_ends_a_stream_that_keeps_stalling(studio: StudioHandle, shell: str
                                                        ) -> None:
    fault(studio, StallFault(after_chunks=2, seconds=3.0))
    started = time.monotonic()
    out = run(shell, studio.base_url,
              timeout=Timeouts(stream_idle=10, read=10, deadline=0.6))
    elapsed = time.monotonic() - started
    assert isinstance(out.error, LMStudioTimeout) and out.error.phase == "deadline"
    assert elapsed < 2.5  # well before the 3 s stall ends


@pytest.mark.parametrize("shell", SHELLS)
def test_the_deadline_is_the_whole_call_retries_included(studio: StudioHandle, shell: str
                                                         ) -> None:
    """429 with Retry-After 0.4 s and a 1 s deadline, real sleeping: the call gives up in time
    instead of taking its fifth attempt (the exact arithmetic, on an injected clock, is in
    test_caps). It ends with the 429 when the next wait would cross the deadline, or, if a busy
    machine made the last attempt itself run into the deadline, with the deadline timeout."""
    fault(studio, StatusFault(status=429, retry_after=0.4))
    started = time.monotonic()
    out = run(shell, studio.base_url, stream=False, timeout=Timeouts(deadline=1.0),
              sleep_for_real=True)
    elapsed = time.monotonic() - started
    error = out.error
    assert isinstance(error, RateLimited) or (
        isinstance(error, LMStudioTimeout) and error.phase == "deadline"), repr(error)
    # Attempts at about 0, 0.4 and 0.8 s; a fourth would start past the deadline (a busy
    # machine only makes it fewer). The bound on time is loose on purpose: load, not the rule.
    assert error.context is not None and error.context.attempt <= 3, str(error)
    assert out.waits == [0.4] * (error.context.attempt - 1 if isinstance(error, RateLimited)
                                 else len(out.waits))
    assert elapsed < 2.5, f"{elapsed:.2f}s: {error}"


# -- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_leaving_a_stream_early_closes_it_at_the_server(studio: StudioHandle, shell: str
                                                        ) -> None:
    mark = fault(studio, StallFault(after_chunks=4, seconds=2.0))
    out = run(shell, studio.base_url, stop_after=2)
    assert out.error is None and len(out.pieces) == 2
    record = settled(studio, mark, 1)[0]
    assert record["disconnect_seen"] and record["finish_reason"] is None


# -- retry caps through the shells ------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_the_attempt_cap_holds_through_both_shells(studio: StudioHandle, shell: str,
                                                   stream: bool) -> None:
    mark = fault(studio, StatusFault(status=503))
    out = run(shell, studio.base_url, stream=stream)
    assert isinstance(out.error, HTTPStatusError) and out.error.status == 503
    assert out.error.context is not None and out.error.context.attempt == 5
    assert len(out.waits) == 4 and all(0 <= w <= 15 for w in out.waits)
    assert len(settled(studio, mark, 5)) == 5


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("asked", "waits"), [(15, [15.0]), (15.5, [])])
def test_retry_after_is_waited_exactly_up_to_its_cap(studio: StudioHandle, shell: str,
                                                     asked: float, waits: list[float]) -> None:
    mark = fault(studio, StatusFault(status=429, retry_after=asked), times=1)
    out = run(shell, studio.base_url)
    assert out.waits == waits
    if waits:
        assert out.error is None and out.result is not None
    else:
        assert isinstance(out.error, RateLimited) and out.error.retry_after == asked
        assert len(settled(studio, mark, 1)) == 1
