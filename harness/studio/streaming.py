"""The hot path: write precomputed frames at their scheduled times, straight to the ASGI ``send``.

Deadlines are absolute (``t_first + step * interval`` on the loop clock), so a late wake-up never
pushes later chunks back (no ``sleep(interval)`` drift). Each write is recorded next to its
deadline in the request's truth, which is how the benchmark measures lateness server-side.
Faults wrap the frame iterator (``harness.faults.inject_stream``) only when one is active.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from harness.faults import FaultAction, StreamDropped, inject_stream
from harness.studio.encoding import DONE, Frames, error_frame
from harness.studio.engine import CutoffStyle
from harness.studio.truth import RequestTruth

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
    frames: Frames,
    t_first: float,
    interval: float,
    record: RequestTruth,
    cursor: _Cursor,
    cutoff_style: CutoffStyle,
    openai_style: bool,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    sleep = asyncio.sleep
    for frame, step in zip(frames.frames, frames.steps, strict=True):
        due = t_first + step * interval
        delay = due - loop.time()
        if delay > 0:
            await sleep(delay)
        if record.disconnect_seen:
            return
        if record.cut_off:
            for end in cutoff_frames(cutoff_style, openai_style):
                cursor.due = loop.time()
                yield end
            return
        cursor.due = due
        yield frame


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
) -> bool:
    """Stream ``frames``; returns False when the connection was dropped on purpose."""
    now = time.monotonic  # real write time; loop.time() may be cached per loop iteration
    if not headers_sent:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    cursor = _Cursor()
    source = _scheduled(frames, t_first, interval, record, cursor, cutoff_style, openai_style)
    if fault is not None:
        source = inject_stream(fault, source, on_evict)
    scheduled = record.scheduled
    sent_at = record.sent_at
    try:
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
