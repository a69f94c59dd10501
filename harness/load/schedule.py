"""Open-loop arrivals on an absolute schedule shared by every worker.

Why absolute: sleeping for each inter-arrival gap accumulates every late wake-up (vLLM #21104
delivered 183.5 of 200 req/s). Here arrival j is due at ``t0 + offset_j``, computed once from the
scenario and a seed, identical on every worker; worker ``w`` of ``K`` takes arrivals
``j = w, w + K, w + 2K, ...``. A request that goes out late keeps its intended time, so the
schedule lag and the queue-inclusive latency show coordinated omission instead of hiding it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from harness.load.scenario import LoadShape


def arrival_offsets(shape: LoadShape) -> list[float]:
    """Every arrival's offset from t0 in seconds, over all levels (rates in req/s)."""
    if shape.mode != "open":
        raise ValueError("arrival offsets exist only for open-loop (mode = 'open') scenarios")
    rng = random.Random(shape.seed)
    offsets: list[float] = []
    for index, rate in enumerate(shape.levels):
        start = index * shape.level_duration_s
        end = start + shape.level_duration_s
        if shape.arrival == "constant":
            count = round(rate * shape.level_duration_s)
            offsets.extend(start + k / rate for k in range(count) if start + k / rate < end)
        else:
            t = start + rng.expovariate(rate)
            while t < end:
                offsets.append(t)
                t += rng.expovariate(rate)
    return offsets


def worker_slice(offsets: list[float], worker: int, workers: int) -> list[float]:
    """The arrivals worker ``worker`` (0-based) of ``workers`` sends: every K-th one."""
    if workers < 1 or not 0 <= worker < workers:
        raise ValueError(f"worker index {worker} out of range for {workers} worker(s)")
    return offsets[worker::workers]


class ArrivalQueue:
    """The arrivals of one worker, handed out in order to whichever user is free next.

    Users of one worker share this object (greenlets: no locking needed); when all users are busy,
    arrivals wait here and go out late, with the lag recorded, never dropped silently.
    """

    def __init__(self, t0: float, offsets: list[float]) -> None:
        self._iter: Iterator[float] = iter(offsets)
        self.t0 = t0

    def next_due(self) -> float | None:
        """Absolute due time of the next arrival (same clock as t0), or None when done."""
        offset = next(self._iter, None)
        if offset is None:
            return None
        return self.t0 + offset
