"""How fast a live server is, measured once per session, and the scale it gives time limits.

Why: the suites' time limits and load sizes were tuned on the emulator (tens of milliseconds to
the first token, slots for dozens of requests). A real engine on a small machine takes seconds,
serialises requests, and queues the rest: the same 10 s idle limit then fails a correct client,
and 200 concurrent calls become minutes of queue. A short probe at session start measures time
to first token, decode speed and how many requests the server runs at once; ``time_scale``
stretches deadlines and idle limits by how much slower the server is than what they were tuned
for, and ``concurrency()`` sizes load to the server's real width. The report states the scale.

The probe: one warm streamed answer (TTFT, tokens/s), then ``width`` identical ones at once. If
the server ran them side by side they take about as long as one; if it queued them, ``width``
times as long. ``parallel = round(width * single / together)``, between 1 and ``width``. A
server that cuts the running stream off when another request arrives (llama-cpp-python's
``interrupt_requests``, on by default) runs one at a time and says so: ``cuts_running``.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from harness.capabilities import StreamSample, stream_sample
from harness.client import Client, RetryPolicy, Timeouts
from harness.client.errors import StreamInterrupted

# What the suites' limits were tuned for: a 10 s idle limit is 20x this TTFT, and a 60 s
# deadline holds a few hundred tokens at this speed.
REFERENCE_TTFT_S = 0.5
REFERENCE_TOKENS_PER_S = 20.0
MAX_SCALE = 30.0


@dataclass(frozen=True)
class Calibration:
    """The measured speed of a target and the scale derived from it."""

    ttft_s: float | None = None
    tokens_per_s: float | None = None
    parallel: int | None = None  # None: not measured (the emulator says how many slots it has)
    time_scale: float = 1.0
    source: str = "not measured"
    cuts_running: bool = False  # a new request ended a running stream early

    def seconds(self, limit: float) -> float:
        """A time limit tuned on the emulator, stretched for this target."""
        return limit * self.time_scale

    def timeouts(self, *, connect: float = 2.0, read: float = 15.0, stream_idle: float = 10.0,
                 deadline: float = 60.0) -> Timeouts:
        """Client time limits for a test: connect stays (loopback), the rest scale."""
        return Timeouts(connect=connect, read=self.seconds(read),
                        stream_idle=self.seconds(stream_idle), deadline=self.seconds(deadline))

    def concurrency(self, wanted: int, *, per_slot: int = 4) -> int:
        """How many concurrent calls to send where ``wanted`` was sized for the emulator:
        at most ``per_slot`` waiting per slot the server runs, and never fewer than 2 (the
        point of a concurrency test is that calls overlap)."""
        if self.parallel is None:
            return wanted
        return max(2, min(wanted, self.parallel * per_slot))

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for reports and skip reasons."""
        if self.parallel is None and self.ttft_s is None:
            return f"time scale x{self.time_scale:g} ({self.source})"
        ttft = f"TTFT {self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "TTFT ?"
        tps = f"{self.tokens_per_s:.0f} tokens/s" if self.tokens_per_s else "tokens/s ?"
        cuts = "; a new request cuts the running stream off" if self.cuts_running else ""
        return (f"time scale x{self.time_scale:g} ({self.source}: {ttft}, {tps}, "
                f"{self.parallel} request(s) at once{cuts})")


UNSCALED = Calibration(source="emulator-tuned limits, unscaled")


def scale_for(ttft_s: float | None, tokens_per_s: float | None) -> float:
    """How much slower than the reference a server is, rounded up to a half, 1 to 30."""
    ratios = [1.0]
    if ttft_s is not None:
        ratios.append(ttft_s / REFERENCE_TTFT_S)
    if tokens_per_s:
        ratios.append(REFERENCE_TOKENS_PER_S / tokens_per_s)
    return min(MAX_SCALE, math.ceil(max(ratios) * 2) / 2)


def parallel_from(single_s: float, together_s: float, width: int) -> int:
    """Requests a server ran at once, from one answer's time and ``width`` answers' time."""
    if together_s <= 0:
        return width
    return max(1, min(width, round(width * single_s / together_s)))


def calibrate(base_url: str, model: str, api_token: str | None = None, *, width: int = 3,
              max_tokens: int = 24) -> Calibration:
    """Measure ``base_url`` with ``model`` (a few seconds on a small engine); raises the
    client's typed errors if the server cannot answer."""
    timeouts = Timeouts(connect=5.0, read=120.0, stream_idle=120.0, deadline=300.0)
    with Client(base_url, api_token=api_token, retry=RetryPolicy.none(),
                timeout=timeouts) as client:
        stream_sample(client, model, max_tokens=4)  # warm-up: a JIT load is not speed
        single = stream_sample(client, model, max_tokens=max_tokens)

        def one(_: int) -> StreamSample | None:
            try:
                return stream_sample(client, model, max_tokens=max_tokens)
            except StreamInterrupted:  # cut off by one of the others
                return None

        started = time.perf_counter()
        with ThreadPoolExecutor(width) as pool:
            outcomes = list(pool.map(one, range(width)))
        together_s = time.perf_counter() - started
    together = [s for s in outcomes if s is not None]
    cuts = len(together) < width
    slowest_ttft = max((s.ttft_s for s in together if s.ttft_s is not None), default=None)
    parallel = 1 if cuts else parallel_from(single.total_s, together_s, width)
    # The scale covers the worst a test meets: the first token of a request queued behind
    # the server's full width, as measured, not only an idle server's.
    ttft = max((t for t in (single.ttft_s, slowest_ttft) if t is not None), default=None)
    return Calibration(ttft_s=single.ttft_s, tokens_per_s=single.tokens_per_s,
                       parallel=parallel, time_scale=scale_for(ttft, single.tokens_per_s),
                       source=f"measured on {model}", cuts_running=cuts)
