"""Tests that kill the mutants of ``harness/client/stream.py`` the suites cannot see
(docs/mutation.md): the ``host:port`` errors name when a URL gives no port, the instant an
error is timed at, bytes handed over after a limit, waits once a limit passed, and which limit
ended a send, all on an injected clock."""

from __future__ import annotations

from collections.abc import Callable

import httpcore
import pytest

from harness.client import request
from harness.client._httpx import CURRENT, _bounded
from harness.client.config import Timeouts
from harness.client.errors import LMStudioTimeout, RequestContext, StreamStalled
from harness.client.stream import ResponseReader, where


@pytest.mark.parametrize(("url", "named"), [
    ("https://lmstudio.example/v1/chat/completions", "lmstudio.example:443"),
    ("http://lmstudio.example/v1/models", "lmstudio.example:80"),
    ("https://127.0.0.1:8443/v1/models", "127.0.0.1:8443"),
    ("http://127.0.0.1:1234", "127.0.0.1:1234"),
])
def test_an_error_names_the_port_the_scheme_implies(url: str, named: str) -> None:
    assert where(url) == named


SHORT = Timeouts(read=1, first_token=1, stream_idle=1, deadline=9)


def reader(now: float | Callable[[], float], *, stream: bool = True, limits: Timeouts = SHORT
           ) -> ResponseReader:
    """A reader on a clock that always says ``now`` (or on the clock ``now``), for a call that
    started at 0 and ends at 9."""
    clock = now if callable(now) else lambda: now
    call = request.chat("http://127.0.0.1:1", [{"role": "user", "content": "hi"}], "m/x", {},
                        stream=stream)
    ctx = RequestContext("POST", call.url, "m/x", 1, 1, 0.0)
    return ResponseReader(call, ctx, limits, deadline_at=9.0, started=0.0, clock=clock)


def test_an_error_built_for_an_instant_is_timed_at_that_instant() -> None:
    """Each error says how long the call had run when it went wrong: at the instant the step
    read its clock (the moment the read returned), not whenever the error object got built."""
    late = reader(7.0)
    assert late._timed_out(2.5).context.elapsed == 2.5  # type: ignore[union-attr]
    assert late._switched(2.5).context.elapsed == 2.5  # type: ignore[union-attr]
    assert late.switched().context.elapsed == 7.0  # type: ignore[union-attr]
    late.head(200, {"content-type": "text/event-stream"})
    assert late._broken("undecodable", 3.5).context.elapsed == 3.5  # type: ignore[union-attr]


def test_a_byte_arriving_at_the_limit_itself_is_in_time() -> None:
    """A limit is the last instant allowed: the headers or a read arriving exactly at
    ``read_by`` are read, not timed out (the unit tests' clock can land there; a real one
    only by chance)."""
    clock = [0.0]
    on_time = reader(lambda: clock[0])
    clock[0] = on_time.read_by()
    on_time.head(200, {"content-type": "text/event-stream"})
    clock[0] = on_time.read_by()
    assert on_time.feed(b": keep-alive\n\n") == []


def test_a_write_or_connect_is_bounded_by_what_is_left_of_the_deadline() -> None:
    """A socket write or connect may take what is left of the call's deadline and no more
    (httpx's own limit was computed when the request was built, before any wait for a pooled
    connection); once the deadline has passed it fails at once."""
    clock = [4.0]
    bounded = reader(lambda: clock[0])  # deadline at 9
    assert bounded.deadline_left() == 5.0
    token = CURRENT.set(bounded)
    try:
        assert _bounded(30.0, read=False) == 5.0
        assert _bounded(2.0, read=False) == 2.0
        clock[0] = 9.5
        with pytest.raises(httpcore.WriteTimeout):
            _bounded(30.0, read=False)
    finally:
        CURRENT.reset(token)


def test_bytes_that_arrive_after_the_limit_are_late_at_their_arrival() -> None:
    """Headers or a read handed over after ``read_by`` (the transport's read raced the
    limit) are a timeout, timed at the instant they were handed over."""
    clock = [0.0]
    late = reader(lambda: clock[0])
    clock[0] = late.read_by() + 0.5
    with pytest.raises(LMStudioTimeout) as caught:
        late.head(200, {"content-type": "text/event-stream"})
    assert caught.value.phase == "first-token" and caught.value.elapsed == clock[0]
    clock[0] = 0.0
    on_time = reader(lambda: clock[0])
    on_time.head(200, {"content-type": "text/event-stream"})
    clock[0] = on_time.read_by() + 0.25
    with pytest.raises(StreamStalled) as stalled:
        on_time.feed(b"data: {}\n\n")
    assert stalled.value.phase == "first-token" and stalled.value.elapsed == clock[0]


def test_a_passed_limit_leaves_no_time_to_wait() -> None:
    """Once ``read_by`` (or the deadline) has passed, a transport may block for 0 s, never for
    a negative time (a socket refuses it) nor for any time at all."""
    clock = [0.0]
    late = reader(lambda: clock[0])  # read_by 1 (first_token), deadline 9, pool unbounded
    assert late.timeout() == 1.0 and late.pool_timeout() == 9.0
    clock[0] = 3.0
    assert late.timeout() == 0.0
    clock[0] = 12.0
    assert late.pool_timeout() == 0.0


@pytest.mark.parametrize(("write", "phase"), [(2.0, "write"), (9.0, "deadline"),
                                              (30.0, "deadline")])
def test_a_send_cut_short_names_the_limit_that_ended_first(write: float, phase: str) -> None:
    """A write timeout is the send's own limit when that ends before the deadline (sent at 0,
    deadline 9); when both end together, or the deadline first, it is the deadline."""
    sending = reader(0.0, stream=False, limits=Timeouts(write=write, deadline=9))
    err = sending.transport_failure("write-timeout", "timed out")
    assert isinstance(err, LMStudioTimeout) and err.phase == phase, repr(err)
    assert err.limit == (write if phase == "write" else 9.0)
    assert err.message == ("sending the request to 127.0.0.1:1 timed out" if phase == "write"
                           else "call deadline passed sending to 127.0.0.1:1")
