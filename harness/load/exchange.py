"""One measured request: a scenario's request in, ``RequestRecord`` out, through the client's call
layer (``harness.client.request`` builds the call, ``harness.client.stream.ResponseReader`` reads
the answer); this module adds only what a load generator needs on top.

What it adds is time: every network read is stamped by the kernel (``transport``) and that stamp
is the reader's clock, so the client's own assemblers, limits and errors run on the instants the
packets arrived, not on when a busy worker got round to them. The first event of kind text,
reasoning or tool call is the first token (the reader never yields role-only or empty frames, so
they can never stop the TTFT clock). Timestamps are converted to epoch seconds through one
(wall, perf) anchor per process, so records from several workers or machines line up while
keeping ``perf_counter`` precision.

Load users never retry (one attempt, ``max_attempts`` 1): a retried request would hide the very
failure a load test is there to count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.client import request as calls
from harness.client.config import Timeouts
from harness.client.errors import LMStudioError
from harness.client.models import ChatResult, ProgressEvent, ReasoningDelta, StreamEvent
from harness.client.protocol import chat_result, native_chat_result
from harness.client.request import Call
from harness.client.stream import ResponseReader
from harness.load.metrics import RequestRecord
from harness.load.scenario import RequestShape
from harness.load.transport import Connection, Response, TransportFailure

_WALL_ANCHOR = time.time()
_PERF_ANCHOR = time.perf_counter()


def to_epoch(perf: float) -> float:
    """A ``perf_counter`` reading as epoch seconds (one anchor per process)."""
    return _WALL_ANCHOR + (perf - _PERF_ANCHOR)


def to_perf(epoch: float) -> float:
    return _PERF_ANCHOR + (epoch - _WALL_ANCHOR)


#: A load request's limits: the client's defaults, except a minute of silence at most (a load
#: test waits for no answer longer) and a deadline bounded by the run's drain.
LIMITS = Timeouts(read=60.0, stream_idle=60.0, deadline=300.0)


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One scenario request for one model: the call is built from it per request, by the
    client's builders (a fresh ``X-Request-Id`` each time, the client's body rules)."""

    model: str
    shape: RequestShape

    @property
    def endpoint(self) -> str:
        return self.shape.endpoint

    @property
    def stream(self) -> bool:
        return self.shape.stream

    def call(self, base_url: str) -> Call:
        shape = self.shape
        params: dict[str, Any] = {"temperature": shape.temperature, "seed": shape.seed,
                                  "ttl": shape.ttl_s}
        if self.endpoint == "native":
            params["max_output_tokens"] = shape.max_tokens
            if shape.system:
                params["system_prompt"] = shape.system
            return calls.native_chat(base_url, shape.prompt_text, self.model, params,
                                     shape.stream)
        params["max_tokens"] = shape.max_tokens
        if self.endpoint == "chat":
            messages = [{"role": "system", "content": shape.system}] if shape.system else []
            messages.append({"role": "user", "content": shape.prompt_text})
            return calls.chat(base_url, messages, self.model, params, stream=shape.stream)
        if shape.stream:
            # The client's completion builder asks for no usage; a load test needs N from it.
            params["stream_options"] = {"include_usage": True}
        prompt = (shape.system + "\n\n" + shape.prompt_text) if shape.system else shape.prompt_text
        return calls.completion(base_url, prompt, self.model, params, shape.stream)


def prepare(shape: RequestShape, model: str) -> PreparedRequest:
    prepared = PreparedRequest(model, shape)
    prepared.call("http://127.0.0.1:1")  # a bad request fails at the start, not per request
    return prepared


class StampClock:
    """The reader's clock: the arrival stamp of the bytes being fed, else ``perf_counter``."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now: float | None = None

    def __call__(self) -> float:
        now = self.now
        return time.perf_counter() if now is None else now


def execute(conn: Connection, req: PreparedRequest, *, intended: float | None = None,
            read_batch_s: float = 0.0) -> RequestRecord:
    """Send ``req`` and measure it. Never raises for server behaviour: failures are records
    (``ok=False`` with the client's typed error's class and one-line message)."""
    call = req.call(conn.base_url)
    clock = StampClock()
    t_send = time.perf_counter()
    reader = ResponseReader(call, call.context(1, 1, 0.0), LIMITS,
                            deadline_at=t_send + LIMITS.deadline, started=t_send, clock=clock)
    record = RequestRecord(endpoint=req.endpoint, model=req.model, stream=req.stream,
                           t_intended=to_epoch(t_send if intended is None else intended),
                           t_send=to_epoch(t_send), request_id=call.request_id)
    sent_at = [t_send]

    def on_sent() -> None:
        sent_at[0] = time.perf_counter()
        reader.sent()

    try:
        try:
            response = conn.send(call, reader.timeout, on_sent)
            record.t_send = to_epoch(sent_at[0])
            if intended is None:
                record.t_intended = record.t_send
            record.status = response.status
            reader.head(response.status, response.headers)
            if reader.streaming:
                _stream(response, reader, clock, record, read_batch_s)
            else:
                _plain(response, reader, clock, req, record)
        except TransportFailure as failure:
            raise reader.transport_failure(failure.kind, failure.detail) from None
    except LMStudioError as exc:
        conn.close()
        record.ok = False
        record.error_kind = type(exc).__name__
        record.error = str(exc)
        if record.t_done is None:
            record.t_done = to_epoch(time.perf_counter())
    return record


def _plain(response: Response, reader: ResponseReader, clock: StampClock, req: PreparedRequest,
           record: RequestRecord) -> None:
    for data, now in response.chunks():
        clock.now = now
        reader.feed(data)
    clock.now = None
    reader.eof()  # an error status raises the client's typed error here
    ctx, body, timings = reader.result
    record.t_done = record.t_last_token = to_epoch(clock())
    result = (native_chat_result(ctx, body, timings) if req.endpoint == "native"
              else chat_result(ctx, body, timings))
    _fill_result(record, result)


_INVISIBLE = (ReasoningDelta, ProgressEvent)


def _stream(response: Any, reader: ResponseReader, clock: StampClock,
            record: RequestRecord, read_batch_s: float = 0.0) -> None:
    """Feed a stream's reads to the reader on their arrival stamps; the record keeps the first
    token, the first visible one, the last one and every gap between token-bearing reads.

    With ``read_batch_s``, once the first token is in, the next read waits that long (the
    socket buffers the chunks; one wake-up reads them all): a worker spends one wake-up per
    batch instead of one per chunk. The last read's stamp is its newest packet, the last token
    (or the end frames right after it), so E2E and TPOT stay right; single gaps do not."""
    first: float | None = None
    first_visible: float | None = None
    last: float | None = None
    gaps: list[float] = []
    now = clock()
    tokens = 0
    try:
        for data, now in response.chunks():
            clock.now = now
            events: list[StreamEvent] = reader.feed(data)
            if not events:
                continue
            token_events = 0
            for event in events:
                if isinstance(event, ProgressEvent):
                    continue
                token_events += 1
                if first_visible is None and not isinstance(event, _INVISIBLE):
                    first_visible = now
                if first is None:
                    first = now
                else:
                    gaps.append(now - last)  # 0 within one read
                last = now
            if token_events and tokens == 0:
                # More than one: the first token shared its read with later ones (the worker
                # fell behind, and TCP stamps merged packets with the newest one's time).
                record.first_read_tokens = token_events
            tokens += token_events
            if read_batch_s and first is not None and not reader.done:
                record.paced = True
                time.sleep(read_batch_s)  # gevent's sleep in a Locust process
        reader.eof()
    finally:
        record.chunks = tokens
        record.gaps = gaps
        if first is not None:
            record.t_first_token = to_epoch(first)
            record.t_last_token = to_epoch(last if last is not None else now)
        if first_visible is not None:
            record.t_first_visible = to_epoch(first_visible)
        record.t_done = to_epoch(now)
    _fill_result(record, reader.result)


def _fill_result(record: RequestRecord, result: ChatResult) -> None:
    record.finish_reason = result.finish_reason
    if result.usage is not None:
        record.n_server = result.usage.completion_tokens
        record.prompt_tokens = result.usage.prompt_tokens
    stats = result.stats or {}
    if record.n_server is None and isinstance(stats.get("total_output_tokens"), int):
        record.n_server = stats["total_output_tokens"]
        if isinstance(stats.get("input_tokens"), int):
            record.prompt_tokens = stats["input_tokens"]
    ttft = stats.get("time_to_first_token_seconds", stats.get("time_to_first_token"))
    if isinstance(ttft, int | float):
        record.server_ttft_s = float(ttft)
    tps = stats.get("tokens_per_second")
    if isinstance(tps, int | float):
        record.server_tps = float(tps)
    engine = result.engine_timings or {}  # llama.cpp's server measures each answer itself
    prompt_ms, per_token_ms = engine.get("prompt_ms"), engine.get("predicted_per_token_ms")
    if record.server_ttft_s is None and isinstance(prompt_ms, int | float):
        record.server_ttft_s = prompt_ms / 1000.0
    if isinstance(per_token_ms, int | float):
        record.server_itl_s = per_token_ms / 1000.0
    if record.server_tps is None and isinstance(engine.get("predicted_per_second"), int | float):
        record.server_tps = float(engine["predicted_per_second"])
    if not record.stream:
        record.chunks = 1
