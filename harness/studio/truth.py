"""Ground truth of every request the emulator (or the proxy) served.

Suites and load tests measure TTFT, gaps and completeness from the client side; these records say
what really happened on the server (which instance answered, when each chunk was due and when it
was written, whether the client went away or the stream was cut off) so a measurement can be
checked against the truth instead of against itself.

Times are ``time.monotonic()`` readings, one clock for arrival, deadlines and writes: the clock a
client on the same host reads too. (The loop clock is not used: uvloop's is a millisecond-truncated
reading cached for the whole loop iteration.) The JSON form makes them relative to the moment the
request arrived, apart from ``received_at_s`` itself.
"""

from __future__ import annotations

import itertools
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any


class RequestTruth:
    """What happened to one request. Mutable while the request runs, then frozen by use."""

    __slots__ = (
        "client_request_id",
        "completion_tokens",
        "cut_off",
        "cut_off_reason",
        "disconnect_seen",
        "endpoint",
        "fault",
        "finish_reason",
        "finished_at",
        "id",
        "instance_id",
        "load_wait_s",
        "method",
        "model_requested",
        "paused_s",
        "queue_wait_s",
        "received_at",
        "scheduled",
        "scheduled_ttft_s",
        "sent_at",
        "status",
        "stream",
        "substituted",
        "token_interval_s",
    )

    def __init__(self, request_id: int, endpoint: str, method: str, stream: bool) -> None:
        self.id = request_id
        self.client_request_id: str | None = None
        self.endpoint = endpoint
        self.method = method
        self.stream = stream
        self.received_at = time.monotonic()
        self.finished_at: float | None = None
        self.model_requested: str | None = None
        self.instance_id: str | None = None
        self.substituted = False
        self.status: int | None = None
        self.queue_wait_s: float | None = None
        self.load_wait_s: float | None = None
        self.scheduled_ttft_s: float | None = None
        self.token_interval_s: float | None = None
        # Flat float arrays, not lists: the cyclic GC does not track them, whereas lists of a
        # thousand live streams made each young-generation pass walk ~10^5 elements (5-14 ms).
        self.scheduled: array[float] = array("d")
        self.sent_at: array[float] = array("d")
        self.disconnect_seen = False
        self.cut_off = False
        self.cut_off_reason: str | None = None
        self.fault: str | None = None
        self.finish_reason: str | None = None
        self.completion_tokens = 0
        self.paused_s = 0.0

    @property
    def cancelled(self) -> bool:
        """Generation stopped before its end: client went away or the model was unloaded."""
        return self.disconnect_seen or self.cut_off

    def lateness(self) -> list[float]:
        """Per-chunk actual write time minus scheduled time, in seconds."""
        return [a - s for a, s in zip(self.sent_at, self.scheduled, strict=False)]

    def as_dict(self) -> dict[str, Any]:
        t0 = self.received_at
        late = self.lateness()
        return {
            "id": self.id,
            "client_request_id": self.client_request_id,
            "endpoint": self.endpoint,
            "method": self.method,
            "stream": self.stream,
            "received_at_s": round(t0, 6),
            "status": self.status,
            "model_requested": self.model_requested,
            "instance_id": self.instance_id,
            "model_substituted": self.substituted,
            "queue_wait_s": self.queue_wait_s,
            "load_wait_s": self.load_wait_s,
            "scheduled_ttft_s": self.scheduled_ttft_s,
            "token_interval_s": self.token_interval_s,
            "scheduled_chunk_times_s": [round(s - t0, 6) for s in self.scheduled],
            "sent_chunk_times_s": [round(a - t0, 6) for a in self.sent_at],
            "max_lateness_s": round(max(late), 6) if late else None,
            "chunks_sent": len(self.sent_at),
            "disconnect_seen": self.disconnect_seen,
            "cut_off": self.cut_off,
            "cut_off_reason": self.cut_off_reason,
            "cancelled": self.cancelled,
            "fault": self.fault,
            "finish_reason": self.finish_reason,
            "completion_tokens": self.completion_tokens,
            "paused_s": round(self.paused_s, 6),
            "duration_s": None if self.finished_at is None else round(self.finished_at - t0, 6),
        }


class TruthLog:
    """A bounded log of request truths (oldest dropped first) with monotonically rising ids."""

    def __init__(self, limit: int) -> None:
        self._records: deque[RequestTruth] = deque(maxlen=limit)
        self._ids = itertools.count(1)

    def open(self, endpoint: str, method: str, stream: bool) -> RequestTruth:
        record = RequestTruth(next(self._ids), endpoint, method, stream)
        self._records.append(record)
        return record

    def clear(self) -> None:
        self._records.clear()

    def records(self, since: int = 0) -> list[RequestTruth]:
        return [r for r in self._records if r.id > since]

    @property
    def last_id(self) -> int:
        """The newest record's id (0 for an empty log): where a client's next ``since`` starts."""
        return self._records[-1].id if self._records else 0

    def __len__(self) -> int:
        return len(self._records)


@dataclass
class EndpointCounters:
    requests: int = 0
    streamed_chunks: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "streamed_chunks": self.streamed_chunks,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


class RequestLedger:
    """The truth log and per-endpoint counters that the ``/_harness/`` control routes report.

    The emulator's engine and the fault proxy both keep one, so a request is opened, counted and
    closed the same way wherever it was served.
    """

    def __init__(self, truth_limit: int) -> None:
        self.truth = TruthLog(truth_limit)
        self.counters: dict[str, EndpointCounters] = {}

    def new_truth(self, endpoint: str, method: str, stream: bool = False) -> RequestTruth:
        record = self.truth.open(endpoint, method, stream)
        counters = self.counters.get(endpoint)
        if counters is None:
            counters = self.counters[endpoint] = EndpointCounters()
        counters.requests += 1
        return record

    def close_truth(self, record: RequestTruth, status: int) -> None:
        record.status = status
        counters = self.counters.get(record.endpoint)
        if counters is not None:
            counters.statuses[status] = counters.statuses.get(status, 0) + 1
            counters.streamed_chunks += len(record.sent_at)
        record.finished_at = time.monotonic()
