"""One timer per event loop for every stream's chunk deadlines.

With one ``asyncio.sleep`` per chunk per stream, 1,000 streams at 20 tokens/s meant 20,000 timer
handles a second, each pushed on and popped off the loop's timer heap and each waking its own
task. Deadlines of concurrent streams cluster, so the pacer files callbacks in 1 ms buckets
(the loop's own timer granularity under uvloop) and keeps exactly one loop timer armed, on the
earliest bucket. A bucket fires at or after its end, so a callback never runs before its deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
import weakref
from collections import deque
from collections.abc import Callable

TICKS_PER_S = 1000
# Waiters let through per gate opening: each plans a reply (~0.1 ms), so at most ~1 ms passes
# before the gate checks for due chunks again; one per opening cost a whole loop iteration each.
GATE_BATCH = 8

_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Pacer:
    """Runs callbacks at (never before) ``time.monotonic()`` deadlines, batched per millisecond."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, list[Callable[[], object]]] = {}
        self._ticks: list[int] = []
        self._armed_tick: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._firing = False
        self._gate: deque[asyncio.Future[None]] = deque()
        self._gate_scheduled = False

    @classmethod
    def current(cls) -> Pacer:
        """The pacer of the running loop (created on first use)."""
        loop = asyncio.get_running_loop()
        pacer = _pacers.get(loop)
        if pacer is None:
            pacer = _pacers[loop] = cls(loop)
        return pacer

    def call_at(self, due: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` once ``time.monotonic()`` has reached ``due``."""
        tick = math.ceil(due * TICKS_PER_S)
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.append(callback)
            return
        self._buckets[tick] = [callback]
        heapq.heappush(self._ticks, tick)
        if not self._firing and (self._armed_tick is None or tick < self._armed_tick):
            self._arm(tick)

    def sleep_until(self, due: float) -> asyncio.Future[None]:
        """A future that completes at ``due`` (for coroutines that must await the deadline)."""
        future = self._loop.create_future()
        self.call_at(due, lambda: _wake(future))
        return future

    async def catch_up(self) -> None:
        """Return once no deadline is overdue: due chunks go out before more work starts.

        A burst of new requests was planned in one go otherwise (about 0.1 ms each), and every
        stream already running was late by the whole burst. Callers queue here in FIFO order and
        are let through a few at a time (``GATE_BATCH``, a baton passed after their steps), only
        while nothing is overdue; so a burst shows up where a real server shows it, as a later
        first token for the new requests, not as stutter in the streams under way. One baton
        instead of every waiter re-checking also keeps a queue of 1,000 waiters cheap.
        """
        if not self._gate and not self._overdue():
            return
        future = self._loop.create_future()
        self._gate.append(future)
        self._schedule_gate()
        await future

    def _overdue(self) -> bool:
        ticks = self._ticks
        return bool(ticks) and ticks[0] <= time.monotonic() * TICKS_PER_S

    def _schedule_gate(self) -> None:
        if self._gate_scheduled:
            return
        self._gate_scheduled = True
        if self._overdue():
            self.call_at(time.monotonic(), self._open_gate)  # after the overdue buckets
        else:
            self._loop.call_soon(self._open_gate)  # after the previous caller's step

    def _open_gate(self) -> None:
        self._gate_scheduled = False
        gate = self._gate
        released = 0
        while gate:
            if self._overdue():
                self._schedule_gate()
                return
            future = gate.popleft()
            if not future.done():  # a cancelled waiter (client gone) just leaves the queue
                future.set_result(None)
                released += 1
                if released == GATE_BATCH:
                    self._schedule_gate()
                    return

    def _arm(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_tick = tick
        self._handle = self._loop.call_at(tick / TICKS_PER_S, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_tick = None
        ticks = self._ticks
        buckets = self._buckets
        # Deadlines are on time.monotonic(); the loop clock (which only arms the timer) never
        # runs ahead of it, so what is due is decided by the real clock.
        now_tick = time.monotonic() * TICKS_PER_S
        self._firing = True  # callbacks re-schedule; arm once, on the earliest tick, afterwards
        try:
            while ticks and ticks[0] <= now_tick:
                for callback in buckets.pop(heapq.heappop(ticks)):
                    try:
                        callback()
                    except Exception as exc:  # one broken stream must not stall the others
                        self._loop.call_exception_handler(
                            {"message": f"pacer callback {callback!r} failed", "exception": exc})
        finally:
            self._firing = False
            if ticks:
                self._arm(ticks[0])
