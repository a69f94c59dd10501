"""One attempt's response, read against a clock: sans-IO, shared by every shell.

``ResponseReader`` owns everything that happens between sending a request and the last byte of
its answer: content decoding (gzip, deflate), SSE decoding, stream assembly, completeness, the
model check, the answer checks, the time limits and the cut-off for ``switch_model``. It is fed
bytes and readings of an injected clock and returns events, results or the one error that
describes what went wrong, built whole with the attempt's context. It never touches a socket.

Time limits are absolute instants (``read_by``), so trickling cannot stretch them: a server
that sends one byte a second, or SSE comments and keep-alive whitespace that carry no event,
moves nothing. Which limit applies depends on the phase:

- before the headers: ``read`` (plain answers) or ``first_token`` (streams), from sending;
- a plain body: ``read`` from the last byte;
- a stream: ``first_token`` from sending until the first token, then ``stream_idle`` from the
  last event (an SSE comment is not an event) or from the caller's return (``resumed``), if
  later;
- always: the call's deadline.

Driving it from a transport that is not httpx (the Locust user, a raw socket)::

    call = request.chat(base_url, messages, model, params, stream=True)
    attempts = Attempts(call, policy, timeouts.deadline, budget)
    ctx = attempts.begin()
    reader = ResponseReader(call, ctx, timeouts, deadline_at=attempts.deadline_at,
                            started=attempts.started)
    sock.settimeout(reader.timeout())            # before every blocking read or write
    sock.sendall(head + call.body)               # the request, as the transport frames it
    reader.sent()                                # limits before the headers count from here
    reader.head(status, headers)                 # once the response head is parsed
    for data in body_reads:                      # raw body bytes, still content-encoded
        for event in reader.feed(data): ...      # TextDelta | ReasoningDelta | ...
    trailing = reader.eof()                      # at the end of the body
    result = reader.result                       # ChatResult, or (ctx, json, timings)

On a socket error, a timeout included, call ``reader.transport_failure(kind, detail)`` with
``kind`` one of ``TRANSPORT_KINDS`` and raise what it returns. Pass the error to
``attempts.failed(err)`` for the wait before the next attempt.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from harness.client import protocol
from harness.client.config import Timeouts
from harness.client.errors import (
    BadResponse,
    ConnectError,
    IncompleteAnswer,
    LMStudioError,
    LMStudioTimeout,
    ModelSwitched,
    PartialOutput,
    Redirected,
    RequestContext,
    StreamInterrupted,
    StreamStalled,
    TransportError,
    redact,
)
from harness.client.messages_api import MessagesAssembler
from harness.client.models import StreamEvent, Timings
from harness.client.native_tools import NativeToolAssembler
from harness.client.request import Call
from harness.client.sse import SSEDecoder

Clock = Callable[[], float]
TransportKind = Literal["pool", "connect-timeout", "write-timeout", "timeout", "resolve",
                        "connect", "lost", "other"]
TRANSPORT_KINDS: tuple[TransportKind, ...] = ("pool", "connect-timeout", "write-timeout",
                                              "timeout", "resolve", "connect", "lost", "other")

_HEAD, _BODY, _ERROR_BODY, _STREAM, _DONE = range(5)
_ASSEMBLERS = {"chat": protocol.ChatStreamAssembler, "native": NativeToolAssembler,
               "messages": MessagesAssembler}


class ContentDecoder:
    """A ``Content-Encoding`` undone incrementally: gzip and deflate (zlib or raw), which is
    what ``request.ACCEPT_ENCODING`` advertises. Streams arrive compressed too: a proxy that
    gzips ``text/event-stream`` is legal.

    "deflate" means zlib-wrapped, yet some servers send raw deflate; the first two bytes tell
    them apart (RFC 1950's header check), so they are held until both arrived. Trying zlib and
    falling back on its error does not work: a first read of one byte raises nothing."""

    __slots__ = ("_head", "_z")

    def __init__(self, encoding: str) -> None:
        self._head: bytes | None = None  # deflate's first bytes, until there are two
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()
            self._head = b""
        else:
            raise ValueError(encoding)

    def decode(self, data: bytes) -> bytes:
        head = self._head
        if head is not None:
            data = head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = None
            if not zlib_header(data):
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._z.decompress(data)


def zlib_header(data: bytes) -> bool:
    """``data`` starts with a zlib header: method 8 (deflate), check bits a multiple of 31."""
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def content_decoder(ctx: RequestContext, headers: Mapping[str, str]) -> ContentDecoder | None:
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    try:
        return ContentDecoder(encoding)
    except ValueError:
        raise BadResponse(f"unsupported Content-Encoding {encoding!r} (we accept gzip, deflate)",
                          context=ctx) from None


def where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class ResponseReader:
    """See the module docstring. One per attempt; ``result`` is set when the answer is whole."""

    __slots__ = ("_assembler", "_body", "_cancelled", "_clock", "_decoder", "_last", "_sent",
                 "_sse", "_token", "call", "ctx", "deadline_at", "headers", "limits", "mode",
                 "pool_size", "result", "started", "status")

    def __init__(self, call: Call, ctx: RequestContext, limits: Timeouts, *,
                 deadline_at: float, started: float, clock: Clock = time.perf_counter,
                 cancelled: Callable[[], bool] | None = None, pool_size: int | None = None
                 ) -> None:
        self.call, self.ctx, self.limits, self._clock = call, ctx, limits, clock
        self.deadline_at = deadline_at
        self._sent = self._last = clock()
        # When the whole call started (elapsed in errors counts from here, retries included).
        self.started = started
        self._cancelled = cancelled
        self.pool_size = pool_size
        self.mode = _HEAD
        self.status = 0
        self.headers: Mapping[str, str] = {}
        self._token = False
        self._decoder: ContentDecoder | None = None
        self._sse: SSEDecoder | None = None
        self._assembler: Any = None
        self._body: list[bytes] = []
        self.result: Any = None

    # -- time ------------------------------------------------------------------------------------
    def read_by(self) -> float:
        """The instant by which the next byte (headers, body or event) must have arrived."""
        mode, limits = self.mode, self.limits
        if mode == _STREAM:
            limit = limits.stream_idle if self._token else limits.first_token
            at = self._last + limit
        elif mode == _HEAD:
            at = self._sent + (limits.first_token if self.call.stream else limits.read)
        else:
            at = self._last + limits.read
        return at if at < self.deadline_at else self.deadline_at

    def sent(self) -> None:
        """The request (or another piece of it) was written: the limits before the headers,
        and the time to first token, count from here."""
        if self.mode == _HEAD:
            self._sent = self._last = self._clock()

    def resumed(self) -> None:
        """The caller took the last read's events and handed control back. A stream's idle
        limit measures the server's silence, so it counts from here rather than from the last
        event: a caller slower than ``stream_idle`` over an event finds the next one waiting,
        not a stall. The deadline still counts the caller's time."""
        self._last = self._clock()

    def deadline_left(self) -> float:
        return self.deadline_at - self._clock()

    def timeout(self) -> float:
        """Seconds the transport may block on the next read (0 when the limit has passed)."""
        left = self.read_by() - self._clock()
        return left if left > 0.0 else 0.0

    def pool_timeout(self) -> float:
        """How long to wait for a free pooled connection: ``Timeouts.pool``, within the
        deadline (waiting for a connection is part of the call, not a connect failure)."""
        left = self.deadline_at - self._clock()
        pool = self.limits.pool
        return max(0.0, left if pool is None or pool > left else pool)

    def context(self, now: float) -> RequestContext:
        """The attempt's context at ``now``: every error is timed at the one clock reading its
        step took (the instant the limit was found passed), never at a later one."""
        return self.ctx.at(elapsed=now - self.started)

    # -- bytes in --------------------------------------------------------------------------------
    def head(self, status: int, headers: Mapping[str, str]) -> None:
        """The response's status and headers (lower-case names) arrived."""
        now = self._clock()
        if now > self.read_by():
            raise self._timed_out(now)
        self.status, self.headers, self._last = status, headers, now
        ctx = self.context(now)
        self._decoder = content_decoder(ctx, headers)
        if 300 <= status < 400:
            location = headers.get("location")
            raise Redirected(
                f"redirected ({status}) to {location or 'nowhere'}; "
                + ("too many redirects or no Location" if self.call.method == "GET" else
                   f"a {self.call.method} is not re-sent to another URL (it would repeat the "
                   "request); point base_url at the final address"),
                context=ctx, status=status, location=location)
        if status >= 400:
            self.mode = _ERROR_BODY
        elif self.call.stream is None:
            self.mode = _BODY
        elif "text/event-stream" in headers.get("content-type", ""):
            self.mode = _STREAM
            self._sse = SSEDecoder()
            # The assemblers count elapsed from sending.
            self._assembler = _ASSEMBLERS[self.call.stream](self.context(self._sent), self._sent)
        else:
            self.mode = _ERROR_BODY

    @property
    def streaming(self) -> bool:
        """Headers of an event stream arrived: from now on ``feed`` returns events."""
        return self.mode == _STREAM

    @property
    def streaming_ended(self) -> bool:
        """The stream's end signal arrived and ``eof`` was called (what follows is only the
        end of the HTTP body, worth reading so the connection can be reused)."""
        return self.mode == _DONE and self._assembler is not None and self._assembler.done

    @property
    def done(self) -> bool:
        """The stream's end signal arrived (the rest of the body is not needed)."""
        return self._assembler is not None and self._assembler.done

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Body bytes as read from the wire (still content-encoded); a stream's new events."""
        now = self._clock()
        # A plain answer is read to its end and handed over whole (the shell keeps it on the
        # ModelSwitched it raises); a stream is cut at the next read.
        if self.mode == _STREAM and self._cancelled is not None and self._cancelled():
            raise self._switched(now)
        if now > self.read_by():
            raise self._timed_out(now)
        if self._decoder is not None:
            try:
                data = self._decoder.decode(data)
            except zlib.error as exc:
                raise self._broken(f"undecodable {self.headers.get('content-encoding')} "
                                   f"body: {exc}", now) from None
        if self.mode != _STREAM:
            self._body.append(data)
            self._last = now
            return []
        messages, events = self._sse.feed_messages(data)  # type: ignore[union-attr]
        assembler = self._assembler
        if messages:
            out = assembler.feed_data(messages, now)
        elif events:
            out = []
            for event in events:
                out.extend(assembler.feed(event, now))
        else:
            return []
        self._last = now
        if out:
            self._token = True
        return out

    def eof(self) -> list[StreamEvent]:
        """The body ended (or the stream's end signal arrived). Sets ``result`` or raises why
        the answer is not one; returns the events of a last unterminated frame, if any."""
        now = self._clock()
        mode, self.mode = self.mode, _DONE
        if mode == _STREAM and self._cancelled is not None and self._cancelled():
            raise self._switched(now)
        # No decoder flush: ``decompress`` without ``max_length`` already returned everything.
        if mode == _STREAM:
            assembler, sse = self._assembler, self._sse
            out: list[StreamEvent] = []
            if assembler.done:
                result = assembler.finish(now)
            else:
                partial_event = sse.has_partial_event  # type: ignore[union-attr]
                # The end of the body ends a line held for a CR's LF: that may complete the
                # event (then none is partial).
                flushed = sse.flush()  # type: ignore[union-attr]
                for event in flushed:
                    out.extend(assembler.feed(event, now))
                result = assembler.finish(now, eof_with_partial_event=partial_event
                                          and not flushed)
            protocol.check_answer(self.context(now), result,
                                  tools_offered=self.call.tools_offered,
                                  check_ids=self.call.stream != "native")
            self.result = result
            return out
        body = b"".join(self._body)
        ctx = self.context(now)
        if mode == _ERROR_BODY:
            if self.status >= 400:
                raise protocol.error_from_response(ctx, self.status, self.headers, body)
            protocol.json_body(ctx, self.headers, body)  # raises on 200-with-error bodies
            raise BadResponse("expected an event stream, got a plain body", context=ctx,
                              status=self.status)
        parsed = protocol.json_body(ctx, self.headers, body)
        elapsed = now - self._sent
        self.result = (ctx, parsed, Timings(ttft=elapsed, total=elapsed))
        return []

    # -- errors out ------------------------------------------------------------------------------
    def partial(self) -> PartialOutput:
        if self._assembler is not None:
            partial: PartialOutput = self._assembler.partial()
            return partial
        text = b"".join(self._body)[:4096].decode("utf-8", "replace")
        return PartialOutput(text=text, chunks=len(self._body))

    def _timed_out(self, now: float) -> LMStudioError:
        """The error for a read (or write) that hit ``read_by``."""
        ctx, mode, limits = self.context(now), self.mode, self.limits
        host = where(self.call.url)
        if self.read_by() >= self.deadline_at:
            limit = self.deadline_at - self.started
            if mode in (_HEAD, _DONE):
                return LMStudioTimeout(f"call deadline passed waiting for {host}",
                                       phase="deadline", limit=limit, context=ctx)
            return StreamStalled("call deadline passed mid-answer", phase="deadline",
                                 limit=limit, context=ctx, partial=self.partial())
        if mode == _HEAD:
            if self.call.stream:
                return LMStudioTimeout(f"no response from {host} before the first token",
                                       phase="first-token", limit=limits.first_token,
                                       context=ctx)
            return LMStudioTimeout(f"no response from {host}", phase="read", limit=limits.read,
                                   context=ctx)
        if mode == _STREAM:
            if self._token:
                return StreamStalled(f"no stream data for {limits.stream_idle:g}s",
                                     phase="stream-idle", limit=limits.stream_idle,
                                     context=ctx, partial=self.partial())
            return StreamStalled(f"no first token within {limits.first_token:g}s",
                                 phase="first-token", limit=limits.first_token, context=ctx,
                                 partial=self.partial())
        return StreamStalled(f"response body stalled for {limits.read:g}s after the headers",
                             phase="body", limit=limits.read, context=ctx,
                             partial=self.partial())

    def switched(self) -> ModelSwitched:
        """The error for a call cut off by ``switch_model(inflight="cancel")``."""
        return self._switched(self._clock())

    def _switched(self, now: float) -> ModelSwitched:
        return ModelSwitched("cut off by switch_model(inflight='cancel')",
                             context=self.context(now), partial=self.partial())

    def _broken(self, why: str, now: float) -> StreamInterrupted:
        ctx = self.context(now)
        if self.mode == _STREAM:
            return StreamInterrupted(why, context=ctx, partial=self.partial())
        return IncompleteAnswer(why, context=ctx, status=self.status,
                                partial=self.partial())

    def transport_failure(self, kind: TransportKind, detail: str) -> LMStudioError:
        """The error for a transport failure of ``kind`` (see ``TRANSPORT_KINDS``)."""
        now = self._clock()
        if self._cancelled is not None and self._cancelled():
            return self._switched(now)  # switch_model closed the socket under the read
        ctx, host = self.context(now), where(self.call.url)
        text = redact(detail)
        if kind == "pool":
            # Only a pooled transport reports "pool", and it passes its size.
            return LMStudioTimeout(
                f"waiting for a connection: all {self.pool_size} connections of the client's "
                f"pool to {host} busy "
                "(raise limits.max_connections, or run fewer calls at once)", phase="pool",
                limit=self.limits.pool, context=ctx)
        if kind == "connect-timeout":
            return LMStudioTimeout(f"connect to {host} timed out", phase="connect",
                                   limit=self.limits.connect, context=ctx)
        if kind == "write-timeout":  # a server not taking the request
            if self._sent + self.limits.write < self.deadline_at:  # the send's own limit
                return LMStudioTimeout(f"sending the request to {host} timed out",
                                       phase="write", limit=self.limits.write, context=ctx)
            return LMStudioTimeout(f"call deadline passed sending to {host}", phase="deadline",
                                   limit=self.deadline_at - self.started, context=ctx)
        if kind == "timeout":
            return self._timed_out(now)
        if kind == "resolve":
            hostname = urlsplit(self.call.url).hostname
            return ConnectError(f"cannot resolve host {hostname!r} ({text})", context=ctx)
        if kind == "connect":
            if "refused" in text.lower():
                return ConnectError(f"connection refused by {host}", context=ctx)
            return ConnectError(f"cannot connect to {host}: {text}", context=ctx)
        if kind == "lost":
            if self.mode == _HEAD:
                # Nothing of the response arrived: typically LM Studio closing an idle
                # keep-alive connection just as we reused it. Safe to send again.
                return ConnectError(f"connection to {host} closed before a response: {text}",
                                    context=ctx)
            if self.mode == _STREAM:
                return StreamInterrupted(f"connection lost mid-stream: {text}", context=ctx,
                                         partial=self.partial())
            return IncompleteAnswer(f"connection lost after the response had started: {text}",
                                    context=ctx, status=self.status,
                                    partial=self.partial())
        return TransportError(f"transport failure with {host}: {text}", context=ctx)
