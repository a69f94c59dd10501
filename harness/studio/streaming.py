"""The hot path: write precomputed frames at their scheduled times, straight to the ASGI ``send``.

Deadlines are absolute (``t_first + step * interval`` on ``time.monotonic()``), so a late wake-up
never pushes later chunks back (no ``sleep(interval)`` drift). Each write is recorded next to its
deadline in the request's truth, which is how the benchmark measures lateness server-side.
Deadlines are kept by one shared ``Pacer`` per loop instead of a timer per chunk. Faults wrap the
frame iterator (``harness.faults.inject_stream``) only when one is active.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from harness.faults import OPENAI, Dialect, FaultAction, StreamDropped, inject_stream
from harness.studio.encoding import Frames
from harness.studio.engine import CutoffStyle, Hold
from harness.studio.pacer import Pacer
from harness.studio.stress import Stress, StressedWriter, reschedule
from harness.studio.truth import RequestTruth
from harness.studio.wire import DirectBody

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-powered-by", b"Express"),
]
UNLOADED_MESSAGE = "Model is unloaded."


Cutoff = Callable[[int], Sequence[bytes]]
"""The frames that end a stream cut off before frame ``n`` (raises ``StreamDropped`` to drop)."""


def cutoff_frames(style: CutoffStyle, dialect: Dialect) -> Cutoff:
    """How a cut-off stream ends in ``dialect``. ``drop`` is signalled by ``StreamDropped``."""

    def end(_: int) -> Sequence[bytes]:
        if style == "drop":
            raise StreamDropped("stream cut off: model unloaded (drop connection)")
        if style == "error":
            return [dialect.error(UNLOADED_MESSAGE)]
        return [dialect.done] if dialect.done is not None else []

    return end




class _Cursor:
    """Which deadline the frame being written belongs to (shared by producer and writer)."""

    __slots__ = ("due",)

    def __init__(self) -> None:
        self.due = 0.0


class Pace:
    """A generation's progress against its instance's ``Hold``: the previous step's deadline and
    the end of the last pause already applied to the deadlines still to come."""

    __slots__ = ("applied", "hold", "prev")

    def __init__(self, hold: Hold, started: float, *, own_pause: bool = False) -> None:
        self.hold = hold
        self.prev = started
        # A pause over by ``started`` is not this generation's; one under way is (it waits for
        # that prefill too), unless it is this request's own prefill, already in its timing.
        self.applied = hold.until if own_pause or hold.until <= started else 0.0

    def take(self, due: float) -> float:
        """Seconds to push back work due at ``due`` (0 if no new pause has reached it)."""
        hold = self.hold
        if hold.until <= self.applied or due <= hold.started:
            return 0.0
        shift = max(0.0, hold.until - max(hold.started, self.prev, self.applied))
        self.applied = hold.until
        return shift


def _shift(dues: array[float], first: int, seconds: float, record: RequestTruth) -> None:
    for i in range(first, len(dues)):
        dues[i] += seconds
    record.paused_s += seconds


async def _scheduled(
    frames: Sequence[bytes],
    dues: array[float],
    first: int,
    record: RequestTruth,
    cursor: _Cursor,
    cutoff: Cutoff,
    pace: Pace,
) -> AsyncIterator[bytes]:
    pacer = Pacer.current()
    now = time.monotonic
    hold = pace.hold
    i = first
    while i < len(frames):
        if hold.until > pace.applied:  # only a new pause can move this frame (as _PacedStream)
            shift = pace.take(dues[i])
            if shift > 0:
                _shift(dues, i, shift, record)
        due = dues[i]
        if due > now():
            await pacer.sleep_until(due)
            if hold.until > pace.applied and due > hold.started:
                continue  # a pause began while this frame waited: re-plan it
        if record.disconnect_seen:
            return
        if record.cut_off:
            for end in cutoff(i):
                cursor.due = now()
                yield end
            return
        cursor.due = pace.prev = due
        yield frames[i]
        i += 1


class _PacedStream:
    """A stream the pacer writes by itself, from a timer callback, with no task wake-up.

    Each callback writes every frame due by now in one transport write, records the truth and
    files the next deadline with the pacer. Anything out of the ordinary (client gone, model cut
    off, slow reader, the last frames) completes ``done`` and hands the rest of the stream back
    to the coroutine, which handles it exactly as the general path does.
    """

    __slots__ = ("body", "done", "dues", "finished", "frames", "hold", "index", "pace", "pacer",
                 "record")

    def __init__(self, frames: tuple[bytes, ...], dues: array[float], record: RequestTruth,
                 body: DirectBody, pacer: Pacer, pace: Pace) -> None:
        self.frames = frames
        self.dues = dues
        self.record = record
        self.body = body
        self.pacer = pacer
        self.hold = pace.hold
        self.pace = pace
        self.index = 0
        self.finished = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __call__(self) -> None:
        """The pacer's callback (the object itself: no bound method allocated per chunk)."""
        if self.done.done():  # the coroutine was cancelled
            return
        record = self.record
        body = self.body
        if record.disconnect_seen or record.cut_off or not body.writable():
            if body.disconnected:
                record.disconnect_seen = True
            self.done.set_result(None)
            return
        dues = self.dues
        first = self.index
        if self.hold.until > self.pace.applied:  # a new request's prefill may pause this stream
            shift = self.pace.take(dues[first])
            if shift > 0:
                _shift(dues, first, shift, record)
                self.pacer.call_at(dues[first], self)
                return
        now = time.monotonic()
        end = first + 1
        count = len(dues)
        while end < count and dues[end] <= now:
            end += 1
        if end == count:  # the last frames go out with the end of the response (one write)
            self.finished = True
            self.done.set_result(None)
            return
        if end == first + 1:  # the common case, without a slice per chunk
            body.write_one(self.frames[first])
            sent = time.monotonic()
            record.scheduled.append(dues[first])
            record.sent_at.append(sent)
        else:
            body.write(self.frames[first:end])
            sent = time.monotonic()
            record.scheduled.extend(dues[first:end])
            record.sent_at.extend(array("d", [sent]) * (end - first))
        self.index = end
        self.pace.prev = dues[end - 1]
        self.pacer.call_at(dues[end], self)


async def watch_disconnect(receive: Receive, record: RequestTruth) -> None:
    """Wait for ``http.disconnect`` (the body was already read) and note it in the truth."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            record.disconnect_seen = True
            return


async def write_stream(
    send: Send,
    frames: Frames,
    *,
    t_first: float,
    interval: float,
    record: RequestTruth,
    cutoff: Cutoff,
    fault: FaultAction | None,
    on_evict: Callable[[], Awaitable[None]] | None,
    headers_sent: bool = False,
    on_complete: Callable[[], object] | None = None,
    dialect: Dialect = OPENAI,
    on_fire: Callable[[], object] = lambda: None,
    pace: Pace | None = None,
    stress: Stress | None = None,
) -> bool:
    """Stream ``frames``; returns False when the connection was dropped on purpose.

    Without a fault and on uvicorn's httptools protocol the pacer writes the frames itself
    (``_PacedStream``); otherwise, and for whatever the pacer hands back, each frame is awaited
    through ``send``. Both record every frame's deadline and write time in the truth. With a
    ``pace`` (the instance's ``Hold``), deadlines still to come move back by each prefill pause.
    With ``stress`` the frames take the general path through a ``StressedWriter`` (split,
    coalesced, keep-alive comments, jittered deadlines: ``harness.studio.stress``).
    """
    now = time.monotonic  # real write time; loop.time() may be cached per loop iteration
    if not headers_sent:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    # Tuples of bytes and float arrays: the GC untracks the one and never tracks the other,
    # so a thousand live streams add nothing to its passes (lists did, a few ms each time).
    all_frames = frames.frames
    dues = array("d", [t_first + step * interval for step in frames.steps])
    scheduled = record.scheduled
    sent_at = record.sent_at
    first = 0
    if pace is None:
        pace = Pace(Hold(), now())
    groups: list[int] = []
    if stress is not None:
        rng = stress.rng(record.id)
        groups = reschedule(stress, dues, interval, rng, coalesce=fault is None)
    if fault is None and all_frames and stress is None:
        body = DirectBody.attach(send)
        if body is not None:
            paced = _PacedStream(all_frames, dues, record, body, Pacer.current(), pace)
            paced.pacer.call_at(dues[0], paced)
            await paced.done
            first = paced.index
            # Re-checked: the client, an unload or a full buffer may have intervened since.
            if body.disconnected:
                record.disconnect_seen = True
            if paced.finished and not record.cancelled and body.writable():
                if on_complete is not None:
                    on_complete()
                await send({"type": "http.response.body", "body": b"".join(all_frames[first:]),
                            "more_body": False})
                sent = now()
                scheduled.extend(dues[first:])
                sent_at.extend(array("d", [sent]) * (len(dues) - first))
                return True
    cursor = _Cursor()
    source = _scheduled(all_frames, dues, first, record, cursor, cutoff, pace)
    if fault is not None:
        source = inject_stream(fault, source, on_evict, dialect=dialect, on_fire=on_fire)
    try:
        if stress is not None:
            writer = StressedWriter(stress, send, rng, groups, scheduled, sent_at)
            await writer.run(source, lambda: cursor.due)
        else:
            async for frame in source:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                scheduled.append(cursor.due)
                sent_at.append(now())
    except StreamDropped:
        return False
    if on_complete is not None:
        on_complete()  # stop watching for disconnects before the response completes
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True
