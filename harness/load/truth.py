"""Measured TTFT and inter-chunk latency against the emulator's ground truth.

The emulator records, for each request, when it arrived and when each frame was written to the
socket (``/_harness/truth``), and the ``X-Request-Id`` every load user sends, so each client record
is paired with its own truth. Against a server that records no ids, requests are paired by order
(client records by send time, server records by arrival), which concurrent sends can mis-pair:
pairs whose token counts disagree are counted (``mismatched``), and when the two sides do not have
the same number of requests only the distributions are compared.

Only requests outside warm-up are counted (a burst of connections at spawn time waits in the
server's accept queue before the emulator's clock starts). Error = client TTFT - server TTFT
(server: arrival to first token frame written), so it contains both loopback transits plus
whatever delay the load generator itself added: the quantity a load generator must keep small.
The emulator stamps its truth with ``time.monotonic()``, the clock ``perf_counter`` reads too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from harness.load.exchange import to_perf
from harness.load.metrics import Distribution, RequestRecord, pooled_gaps
from harness.load.scenario import ENDPOINT_PATHS


class TruthComparison(BaseModel):
    client_requests: int
    server_requests: int
    paired: int
    mismatched: int
    ttft_error_ms: Distribution | None = None
    intake_ms: Distribution | None = None  # client send -> emulator clock start (shared clock)
    ttft_abs_error_ms: Distribution | None = None
    icl_error_ms: Distribution | None = None
    client_ttft_ms: Distribution
    server_ttft_ms: Distribution
    client_icl_ms: Distribution
    server_icl_ms: Distribution
    late_first_tokens: int = 0  # paired requests whose TTFT error exceeds ``late_ms``
    late_ms: float = 5.0
    note: str = ""


def _first_token_index(truth: dict[str, Any]) -> int | None:
    """Index of the first frame scheduled at or after the scheduled TTFT (the first token)."""
    target = truth.get("scheduled_ttft_s")
    if target is None:
        return None
    scheduled = truth.get("scheduled_chunk_times_s") or []
    return next((i for i, due in enumerate(scheduled) if due >= target - 1e-6), None)


def _first_token_s(truth: dict[str, Any]) -> float | None:
    start = _first_token_index(truth)
    sent = truth.get("sent_chunk_times_s") or []
    return None if start is None or start >= len(sent) else float(sent[start])


def _token_gaps_s(truth: dict[str, Any]) -> list[float]:
    """Gaps between the frames that carried the N tokens (one frame per token in the emulator)."""
    count = int(truth.get("completion_tokens") or 0)
    start = _first_token_index(truth) if count >= 2 else None
    if start is None:
        return []
    frames = (truth.get("sent_chunk_times_s") or [])[start:start + count]
    return [b - a for a, b in itertools.pairwise(frames)]


def generation_truth(truth: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    paths = set(ENDPOINT_PATHS.values())
    return sorted((t for t in truth if t.get("endpoint") in paths and t.get("method") == "POST"),
                  key=lambda t: t.get("id", 0))


def compare_with_truth(records: list[RequestRecord], truth: Iterable[dict[str, Any]], *,
                       shared_clock: bool = False, late_ms: float = 5.0) -> TruthComparison:
    """Pair client records with the emulator's truth and measure the client's timing error.

    With ``shared_clock`` (load generator and emulator on one host: both read
    ``CLOCK_MONOTONIC``), the server's first write is placed on the client's own timeline, so
    the error excludes the request's transit and the server's intake before its clock starts
    (reported apart as ``intake_ms``) and measures only what the load generator adds.
    """
    server = generation_truth(truth)
    client = sorted((r for r in records if r.status is not None), key=lambda r: r.t_send)
    server_stream = [t for t in server if t.get("stream") and t.get("status") == 200]
    server_ttfts = [_first_token_s(t) for t in server_stream]
    server_gaps = [g for t in server_stream for g in _token_gaps_s(t)]
    streamed_ok = [r for r in client if r.stream and r.ok and not r.warmup]
    result = TruthComparison(
        client_requests=len(client),
        server_requests=len(server),
        paired=0,
        mismatched=0,
        client_ttft_ms=Distribution.of(r.ttft for r in streamed_ok),
        server_ttft_ms=Distribution.of(server_ttfts),
        client_icl_ms=Distribution.of(pooled_gaps(streamed_ok)),
        server_icl_ms=Distribution.of(server_gaps),
        late_ms=late_ms,
    )
    by_id = {t["client_request_id"]: t for t in server if t.get("client_request_id")}
    pairs: list[tuple[RequestRecord, dict[str, Any]]]
    if client and all(r.request_id in by_id for r in client):
        pairs = [(r, by_id[r.request_id]) for r in client if r.request_id is not None]
        result.note = "paired by X-Request-Id"
    elif len(client) != len(server):
        result.note = (f"client saw {len(client)} answered requests, server logged {len(server)}: "
                       "no per-request pairing, distributions only")
        return result
    else:
        pairs = list(zip(client, server, strict=True))
        result.note = "paired by order (the server recorded no request ids)"
    ttft_errors: list[float] = []
    icl_errors: list[float] = []
    intakes: list[float] = []
    mismatched = 0
    for rec, tru in pairs:
        if not (rec.stream and rec.ok and tru.get("stream") and tru.get("status") == 200):
            continue
        if rec.n_server is not None and rec.n_server != tru.get("completion_tokens"):
            mismatched += 1
            continue
        server_ttft, client_ttft = _first_token_s(tru), rec.ttft
        if server_ttft is None or client_ttft is None or rec.warmup:
            continue  # warm-up requests are paired (to keep the order) but never counted
        received = tru.get("received_at_s")
        if shared_clock and isinstance(received, int | float):
            intake = received - to_perf(rec.t_send)
            intakes.append(intake)
            server_ttft += intake
        ttft_errors.append(client_ttft - server_ttft)
        truth_gaps = _token_gaps_s(tru)
        if not rec.paced and len(truth_gaps) == len(rec.gaps):
            icl_errors.extend(c - s for c, s in zip(rec.gaps, truth_gaps, strict=True))
    result.paired = len(ttft_errors)
    result.late_first_tokens = sum(e * 1000 > late_ms for e in ttft_errors)
    result.mismatched = mismatched
    result.ttft_error_ms = Distribution.of(ttft_errors)
    result.ttft_abs_error_ms = Distribution.of(abs(e) for e in ttft_errors)
    result.icl_error_ms = Distribution.of(icl_errors)
    result.intake_ms = Distribution.of(intakes) if intakes else None
    return result
