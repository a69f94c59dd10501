"""Metric definitions against hand-computed timelines (hypothesis) and exact percentiles."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.client import errors
from harness.client.errors import LMStudioError, StreamInterrupted
from harness.load.exchange import LIMITS, StampClock, _stream, prepare, to_epoch
from harness.load.metrics import Distribution, RequestRecord, percentile
from harness.load.scenario import RequestShape


class _FakeResponse:
    """Body reads with their arrival times, as ``transport.Response.chunks`` yields them."""

    def __init__(self, reads: list[tuple[bytes, float]]) -> None:
        self.reads = reads

    def chunks(self):  # type: ignore[no-untyped-def]
        yield from self.reads


def _frame(delta: dict, finish: str | None = None) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _usage(n: int) -> bytes:
    return b"data: " + json.dumps({"id": "c", "model": "m", "choices": [],
                                   "usage": {"prompt_tokens": 5, "completion_tokens": n,
                                             "total_tokens": n + 5}}).encode() + b"\n\n"


def _run(reads: list[Any], t_send: float) -> RequestRecord:
    """The client's own reader, on the clock of the reads' arrival stamps (as the load user)."""
    from harness.client.stream import ResponseReader

    call = prepare(RequestShape(), "m").call("http://x")
    clock = StampClock()
    clock.now = t_send
    reader = ResponseReader(call, call.context(1, 1, 0.0), LIMITS, deadline_at=math.inf,
                            started=t_send, clock=clock)
    reader.head(200, {"content-type": "text/event-stream"})
    rec = RequestRecord(endpoint="chat", model="m", stream=True, t_intended=to_epoch(t_send),
                        t_send=to_epoch(t_send))
    try:
        _stream(_FakeResponse(reads), reader, clock, rec)
    except LMStudioError as exc:  # as execute() records it
        rec.ok, rec.error_kind = False, type(exc).__name__
    return rec


timelines = st.tuples(
    st.floats(0.001, 1.0),                                   # role-only frame delay
    st.floats(0.0, 0.5),                                     # empty-content frame after it
    st.floats(0.001, 0.5),                                   # first token after that
    st.lists(st.floats(0.0005, 0.2), min_size=0, max_size=30),  # later token gaps
    st.booleans(),                                           # reasoning first?
)


@given(timelines)
@settings(deadline=None)  # wall-clock deadlines fail on a busy 2-core machine
def test_ttft_e2e_tpot_and_gaps_match_the_hand_computed_timeline(tl) -> None:  # type: ignore[no-untyped-def]
    role_at, empty_after, first_after, gaps, reasoning = tl
    t_send = 100.0
    t_role = t_send + role_at
    t_empty = t_role + empty_after
    t_first = t_empty + first_after
    reads = [(_frame({"role": "assistant"}), t_role), (_frame({"content": ""}), t_empty)]
    first_delta = {"reasoning_content": "r"} if reasoning else {"content": "a"}
    reads.append((_frame(first_delta), t_first))
    t = t_first
    for gap in gaps:
        t += gap
        reads.append((_frame({"content": "b"}), t))
    n = len(gaps) + 1
    t_last = t
    reads.append((_frame({}, finish="stop") + _usage(n) + b"data: [DONE]\n\n", t_last + 0.05))
    rec = _run(reads, t_send)
    if reasoning and not gaps:  # the client's answer check: reasoning, then no answer at all
        assert not rec.ok and rec.error_kind == "ReasoningOnly" and rec.chunks == 1
        assert math.isclose(rec.ttft, t_first - t_send, abs_tol=1e-6)  # still measured
        return
    assert rec.ok and rec.n_server == n and rec.chunks == n
    assert math.isclose(rec.ttft, t_first - t_send, abs_tol=1e-6)  # never the role/empty frame
    assert math.isclose(rec.e2e, t_last - t_send, abs_tol=1e-6)    # usage/[DONE] excluded
    assert len(rec.gaps) == len(gaps)
    for got, want in zip(rec.gaps, gaps, strict=True):
        assert math.isclose(got, want, abs_tol=1e-6)
    if n > 1:
        assert math.isclose(rec.tpot, (t_last - t_first) / (n - 1), abs_tol=1e-6)
    else:
        assert rec.tpot is None
    if reasoning:
        if gaps:
            assert math.isclose(rec.ttfo, t_first + gaps[0] - t_send, abs_tol=1e-6)
        else:
            assert rec.ttfo is None
    else:
        assert math.isclose(rec.ttfo, rec.ttft, abs_tol=1e-9)
    assert rec.tokens_per_chunk == 1.0


def test_tokens_per_chunk_and_tpot_use_the_servers_count_when_chunks_coalesce() -> None:
    # two chunks carrying 3 tokens each: N=6 from usage, TPOT over N-1, 3 tokens per chunk
    reads = [(_frame({"role": "assistant", "content": "abc"}), 1.2),
             (_frame({"content": "def"}), 1.7),
             (_frame({}, "stop") + _usage(6) + b"data: [DONE]\n\n", 1.8)]
    rec = _run(reads, 1.0)
    assert math.isclose(rec.ttft, 0.2, abs_tol=1e-6) and math.isclose(rec.e2e, 0.7, abs_tol=1e-6)
    assert math.isclose(rec.tpot, 0.5 / 5, abs_tol=1e-6)
    assert rec.tokens_per_chunk == 3.0
    assert not rec.usage_missing


def test_a_read_holding_the_first_two_tokens_is_counted() -> None:
    both = _frame({"content": "a"}) + _frame({"content": "b"})
    rec = _run([(both, 100.10), (_frame({}, finish="stop") + b"data: [DONE]\n\n", 100.15)],
               100.0)
    assert rec.first_read_tokens == 2
    alone = _run([(_frame({"content": "a"}), 100.05), (_frame({"content": "b"}), 100.10),
                  (_frame({}, finish="stop") + b"data: [DONE]\n\n", 100.15)], 100.0)
    assert alone.first_read_tokens == 1 and alone.ttft_uncertainty == 0.0


def test_missing_usage_falls_back_to_chunk_count_and_is_flagged() -> None:
    reads = [(_frame({"content": "a"}), 1.1), (_frame({"content": "b"}), 1.2),
             (_frame({}, "stop") + b"data: [DONE]\n\n", 1.3)]
    rec = _run(reads, 1.0)
    assert rec.n_server is None and rec.usage_missing and rec.output_tokens == 2


def test_llama_cpp_timings_on_the_last_chunk_become_the_server_side_numbers() -> None:
    """llama.cpp's server puts its own ``timings`` on the stream's last chunk (the usage chunk
    when usage is asked for): prompt_ms is its side of TTFT, predicted_per_token_ms of ITL."""
    timings = {"prompt_n": 9, "prompt_ms": 31.5, "predicted_n": 2, "predicted_ms": 80.0,
               "predicted_per_token_ms": 40.0, "predicted_per_second": 25.0}
    last = json.loads(_usage(2)[len(b"data: "):])
    reads = [(_frame({"content": "a"}), 1.1), (_frame({"content": "b"}), 1.15),
             (_frame({}, "stop") + b"data: " + json.dumps({**last, "timings": timings}).encode()
              + b"\n\ndata: [DONE]\n\n", 1.2)]
    rec = _run(reads, 1.0)
    assert rec.ok and rec.n_server == 2
    assert rec.server_ttft_s == 0.0315 and rec.server_itl_s == 0.04 and rec.server_tps == 25.0
    plain = _run([*reads[:2], (_frame({}, "stop") + b"data: [DONE]\n\n", 1.2)], 1.0)
    assert plain.server_ttft_s is None and plain.server_itl_s is None  # nothing invented


def test_a_stream_cut_off_keeps_timestamps_and_fails_typed() -> None:
    rec = _run([(_frame({"content": "a"}), 1.1)], 1.0)
    assert not rec.ok and issubclass(getattr(errors, rec.error_kind or ""), StreamInterrupted)
    assert rec.ttft is not None and math.isclose(rec.ttft, 0.1, abs_tol=1e-6)


def test_open_loop_lag_and_queue_inclusive_latency() -> None:
    rec = RequestRecord(endpoint="chat", model="m", stream=True, t_intended=10.0, t_send=10.5,
                        t_first_token=10.6, t_last_token=11.5, n_server=10, chunks=10)
    assert math.isclose(rec.schedule_lag, 0.5)
    assert math.isclose(rec.queued_e2e, 1.5)
    assert math.isclose(rec.e2e, 1.0)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
       st.floats(0, 100))
def test_percentile_is_exact_linear_interpolation(values: list[float], q: float) -> None:
    ordered = sorted(values)
    got = percentile(values, q)
    assert got is not None
    assert ordered[0] - 1e-6 <= got <= ordered[-1] + 1e-6
    assert percentile(values, 0) == ordered[0] and percentile(values, 100) == ordered[-1]
    rank = (len(ordered) - 1) * q / 100
    lo, hi = ordered[math.floor(rank)], ordered[math.ceil(rank)]
    assert min(lo, hi) - 1e-6 <= got <= max(lo, hi) + 1e-6


def test_percentile_hand_computed() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 95) == 48.0
    assert percentile([], 50) is None
    d = Distribution.of([0.001, 0.002, 0.003])
    assert d.count == 3 and math.isclose(d.p50, 2.0) and math.isclose(d.max, 3.0)


def test_record_json_is_asdict_and_round_trips() -> None:
    from dataclasses import asdict

    rec = RequestRecord(endpoint="native", model="m", stream=True, t_intended=1.0, t_send=1.5,
                        t_first_token=1.6, t_first_visible=1.7, t_last_token=2.0, t_done=2.1,
                        gaps=[0.1, 0.2], chunks=3, n_server=3, prompt_tokens=9,
                        finish_reason="stop", status=200, server_ttft_s=0.1, server_tps=30.0,
                        worker=1, user=2, level=1, warmup=True, request_id="harness-1-1")
    row = rec.to_json()
    assert row == asdict(rec) and list(row) == list(asdict(rec))
    assert row["gaps"] is not rec.gaps  # a copy, as asdict makes
    assert RequestRecord.from_json(json.loads(json.dumps(row))) == rec
    assert RequestRecord.from_json({**row, "added_later": 1}) == rec  # unknown keys ignored
