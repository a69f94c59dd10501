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

from harness.faults import FaultAction, StreamDropped, inject_stream
from harness.studio.encoding import DONE, Frames, error_frame
from harness.studio.engine import CutoffStyle
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


def cutoff_frames(style: CutoffStyle, openai_style: bool) -> list[bytes]:
    """How a cut-off stream ends. ``drop`` is signalled by ``StreamDropped`` instead."""
    if style == "drop":
        raise StreamDropped("stream cut off: model unloaded (drop connection)")
    if style == "error":
        return [error_frame(UNLOADED_MESSAGE)]
    return [DONE] if openai_style else []


class _Cursor:
    """Which deadline the frame being written belongs to (shared by producer and writer)."""

    __slots__ = ("due",)

    def __init__(self) -> None:
        self.due = 0.0


async def _scheduled(
    frames: Sequence[bytes],
    dues: Sequence[float],
    record: RequestTruth,
    cursor: _Cursor,
    cutoff_style: CutoffStyle,
    openai_style: bool,
) -> AsyncIterator[bytes]:
    pacer = Pacer.current()
    now = time.monotonic
    for frame, due in zip(frames, dues, strict=True):
        if due > now():
            await pacer.sleep_until(due)
        if record.disconnect_seen:
            return
        if record.cut_off:
            for end in cutoff_frames(cutoff_style, openai_style):
                cursor.due = now()
                yield end
            return
        cursor.due = due
        yield frame


class _PacedStream:
    """A stream the pacer writes by itself, from a timer callback, with no task wake-up.

    Each callback writes every frame due by now in one transport write, records the truth and
    files the next deadline with the pacer. Anything out of the ordinary (client gone, model cut
    off, slow reader, the last frames) completes ``done`` and hands the rest of the stream back
    to the coroutine, which handles it exactly as the general path does.
    """

    __slots__ = ("body", "done", "dues", "finished", "frames", "index", "pacer", "record")

    def __init__(self, frames: tuple[bytes, ...], dues: array[float], record: RequestTruth,
                 body: DirectBody, pacer: Pacer) -> None:
        self.frames = frames
        self.dues = dues
        self.record = record
        self.body = body
        self.pacer = pacer
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
        now = time.monotonic()
        dues = self.dues
        first = self.index
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
    cutoff_style: CutoffStyle,
    openai_style: bool,
    fault: FaultAction | None,
    on_evict: Callable[[], Awaitable[None]] | None,
    headers_sent: bool = False,
    on_complete: Callable[[], object] | None = None,
    stress: Stress | None = None,
) -> bool:
    """Stream ``frames``; returns False when the connection was dropped on purpose.

    Without a fault and on uvicorn's httptools protocol the pacer writes the frames itself
    (``_PacedStream``); otherwise, and for whatever the pacer hands back, each frame is awaited
    through ``send``. Both record every frame's deadline and write time in the truth. With
    ``stress`` the frames take the general path through a ``StressedWriter`` (split, coalesced,
    keep-alive comments, jittered deadlines: ``harness.studio.stress``).
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
    groups: list[int] = []
    if stress is not None:
        rng = stress.rng(record.id)
        groups = reschedule(stress, dues, interval, rng, coalesce=fault is None)
    if fault is None and all_frames and stress is None:
        body = DirectBody.attach(send)
        if body is not None:
            paced = _PacedStream(all_frames, dues, record, body, Pacer.current())
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
    source = _scheduled(all_frames[first:], dues[first:], record, cursor, cutoff_style,
                        openai_style)
    if fault is not None:
        source = inject_stream(fault, source, on_evict)
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
