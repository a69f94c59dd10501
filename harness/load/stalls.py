"""Stalls of a load worker's loop: the GC policy that avoids the worker's own, and the report of
each one left with how much of it the process spent waiting for a CPU.

Why a worker reports them: a stall longer than one token interval makes a first token look a
whole frame late. The first token's packet and the next one wait in the socket together, the
kernel merges them into one buffer stamped with the newer packet's time, and no read can tell
them apart again. The emulator's truth shows that it happened; the stalls say why: a worker
busy with its own work (add workers, or batch reads) or one whose core other processes took
(``/proc/<pid>/schedstat``: time spent runnable but not running), i.e. a busy machine.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.load.scenario import LoadShape

TICK_S = 0.01  # the watch sleeps this long; anything later is a stall of the loop
MIN_STALL_S = 0.02  # stalls over this are kept (a token interval is 20-100 ms)
MAX_KEPT = 500  # per worker and run: a saturated worker stalls all the time, 500 say enough
#: Full (gen 2) collections after a freeze: one per this many gen 1 passes at most (Python's
#: default is 10); with the frozen objects out of its sight each pass walks only the run's own.
GC_FULL_EVERY = 100


def quiet_gc() -> None:
    """Keep the cyclic GC from stalling the worker while it times streams (call before t0).

    A full collection walked everything Locust, gevent and our imports had allocated: 46 ms in
    a 1,000-user worker, a 94 ms stall with the reads it held up, and every first token due in
    it a frame late. So: one full collection now, then ``gc.freeze`` (everything alive now is
    never garbage: out of the collector's sight), and full passes ten times rarer. The caller
    freezes again (``gc.freeze`` alone is O(1)) at each of ``freeze_times``.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, GC_FULL_EVERY)


def freeze_times(shape: LoadShape, t0: float) -> list[float]:
    """When to freeze again (epoch): as each level's measured window opens, after the warm-up
    made its users, greenlets and connections."""
    return [t0 + shape.measure_window(level)[0] for level in range(len(shape.levels))]


def run_queue_wait_s(pid: int | str = "self") -> float:
    """Seconds the process has spent runnable but waiting for a CPU (0 where unknown)."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass(frozen=True, slots=True)
class Stall:
    at: float  # epoch seconds when the loop came back
    lag_s: float  # how much later than asked the watch woke up
    cpu_wait_s: float  # of which the process waited for a CPU
    worker: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stall:
        return cls(at=float(data["at"]), lag_s=float(data["lag_s"]),
                   cpu_wait_s=float(data["cpu_wait_s"]), worker=int(data.get("worker", 0)))


def describe(stalls: Iterable[Stall], over_s: float) -> str:
    """One sentence on the stalls longer than ``over_s`` (empty when there were none)."""
    long = [s for s in stalls if s.lag_s > over_s]
    if not long:
        return ""
    worst = max(long, key=lambda s: s.lag_s)
    waited = sum(s.cpu_wait_s for s in long)
    stalled = sum(s.lag_s for s in long)
    share = waited / stalled if stalled else 0.0
    cause = ("mostly waiting for a CPU other processes had: a busy machine" if share >= 0.5
             else "mostly the worker's own work: add workers or batch reads")
    return (f"{len(long)} worker loop stall(s) over {over_s * 1000:g} ms while measuring, "
            f"longest {worst.lag_s * 1000:.0f} ms (worker {worst.worker}); "
            f"{share:.0%} of the stalled time was spent waiting for a CPU ({cause})")
