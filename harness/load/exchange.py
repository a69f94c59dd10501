"""One measured request: body in, ``RequestRecord`` out, through the client core's protocol.

The timing rule lives here once: every network read is stamped with ``perf_counter`` when it
returns; the SSE decoder and the stream assembler (``harness.client``) turn it into typed deltas,
and the first delta of kind text, reasoning or tool call is the first token (role-only and empty
frames produce no delta, so they can never stop the TTFT clock). Timestamps are converted to epoch
seconds through one (wall, perf) anchor per process, so records from several workers or machines
line up while keeping ``perf_counter`` precision.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from harness.client.errors import LMStudioError, RequestContext
from harness.client.models import ChatResult, ProgressEvent, ReasoningDelta, Timings
from harness.client.protocol import (
    ChatStreamAssembler,
    NativeChatAssembler,
    chat_result,
    error_from_response,
    json_body,
    native_chat_result,
)
from harness.client.sse import SSEDecoder
from harness.load.metrics import RequestRecord
from harness.load.scenario import RequestShape
from harness.load.transport import Connection

_WALL_ANCHOR = time.time()
_PERF_ANCHOR = time.perf_counter()


def to_epoch(perf: float) -> float:
    """A ``perf_counter`` reading as epoch seconds (one anchor per process)."""
    return _WALL_ANCHOR + (perf - _PERF_ANCHOR)


def next_request_id() -> str:
    """Unique across the workers of a run; sent as ``X-Request-Id``. A UUID, the client's own
    form: llama-cpp-python's server refuses any other (HTTP 400, empty body)."""
    from harness.client.request import new_request_id

    return new_request_id()


def to_perf(epoch: float) -> float:
    return _PERF_ANCHOR + (epoch - _WALL_ANCHOR)


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request body encoded once per (shape, model): the hot path only writes bytes."""

    endpoint: str
    path: str
    model: str
    stream: bool
    body: bytes


def request_body(shape: RequestShape, model: str) -> dict[str, Any]:
    """The JSON body for one request of ``shape`` (LM Studio's three generation endpoints)."""
    prompt = shape.prompt_text
    body: dict[str, Any] = {"model": model, "stream": shape.stream}
    if shape.endpoint == "native":
        body["input"] = prompt
        if shape.system:
            body["system_prompt"] = shape.system
        body["max_output_tokens"] = shape.max_tokens
    else:
        if shape.endpoint == "chat":
            messages = [{"role": "system", "content": shape.system}] if shape.system else []
            messages.append({"role": "user", "content": prompt})
            body["messages"] = messages
        else:
            body["prompt"] = (shape.system + "\n\n" + prompt) if shape.system else prompt
        body["max_tokens"] = shape.max_tokens
        if shape.stream:
            body["stream_options"] = {"include_usage": True}
    if shape.temperature is not None:
        body["temperature"] = shape.temperature
    if shape.seed is not None:
        body["seed"] = shape.seed
    if shape.ttl_s is not None:
        body["ttl"] = shape.ttl_s
    return body


def prepare(shape: RequestShape, model: str) -> PreparedRequest:
    body = json.dumps(request_body(shape, model), separators=(",", ":")).encode()
    return PreparedRequest(shape.endpoint, shape.path, model, shape.stream, body)


def execute(conn: Connection, req: PreparedRequest, *, intended: float | None = None
            ) -> RequestRecord:
    """Send ``req`` and measure it. Never raises for server behaviour: failures are records
    (``ok=False`` with the typed error's class and one-line message)."""
    url = f"http://{conn.host}:{conn.port}{conn.prefix}{req.path}"
    ctx = RequestContext("POST", url, req.model)
    t_send = time.perf_counter()
    record = RequestRecord(endpoint=req.endpoint, model=req.model, stream=req.stream,
                           t_intended=to_epoch(t_send if intended is None else intended),
                           t_send=to_epoch(t_send),
                           request_id=next_request_id())
    try:
        response, t_send = conn.send("POST", req.path, req.body, ctx, record.request_id)
        record.t_send = to_epoch(t_send)
        if intended is None:
            record.t_intended = record.t_send
        record.status = response.status
        if response.status >= 300:
            raise error_from_response(ctx, response.status, response.headers, response.read_all())
        if req.stream:
            _stream(response, req, ctx, t_send, record)
        else:
            body = json_body(ctx, response.headers, response.read_all())
            t_done = time.perf_counter()
            record.t_done = record.t_last_token = to_epoch(t_done)
            timings = Timings(total=t_done - t_send)
            result = (native_chat_result(ctx, body, timings) if req.endpoint == "native"
                      else chat_result(ctx, body, timings))
            _fill_result(record, result)
    except LMStudioError as exc:
        conn.close()
        record.ok = False
        record.error_kind = type(exc).__name__
        record.error = str(exc)
        if record.t_done is None:
            record.t_done = to_epoch(time.perf_counter())
    return record


_INVISIBLE = (ReasoningDelta, ProgressEvent)


def _stream(response: Any, req: PreparedRequest, ctx: RequestContext, t_send: float,
            record: RequestRecord) -> None:
    decoder = SSEDecoder()
    assembler: ChatStreamAssembler | NativeChatAssembler = (
        NativeChatAssembler(ctx, t_send) if req.endpoint == "native"
        else ChatStreamAssembler(ctx, t_send)
    )
    first_visible: float | None = None
    now = t_send
    acc = assembler.acc
    try:
        for data, now in response.chunks():
            waiting_for_first = acc.first_at is None
            token_events = 0
            for event in decoder.feed(data):
                deltas = assembler.feed(event, now)
                if deltas:
                    token_events += 1
                for delta in deltas:
                    if first_visible is None and not isinstance(delta, _INVISIBLE):
                        first_visible = now
            if waiting_for_first and token_events:
                # More than one: the first token shared its read with later ones (the worker
                # fell behind, and TCP stamps merged packets with the newest one's time).
                record.first_read_tokens = token_events
        for event in decoder.flush():
            assembler.feed(event, now)
        result = assembler.finish(now, eof_with_partial_event=decoder.has_partial_event)
    finally:
        record.chunks = 0 if acc.first_at is None else len(acc.gaps) + 1
        record.gaps = list(acc.gaps)
        if acc.first_at is not None:
            record.t_first_token = to_epoch(acc.first_at)
            record.t_last_token = to_epoch(acc.last_at if acc.last_at is not None else now)
        if first_visible is not None:
            record.t_first_visible = to_epoch(first_visible)
        record.t_done = to_epoch(now)
    _fill_result(record, result)


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
    if not record.stream:
        record.chunks = 1
