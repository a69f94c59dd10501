"""The load generator's HTTP/1.1 hot path: one gevent socket per user, llhttp (C) parsing.

Why not httpx or FastHttpSession here: a load generator must time the arrival of each network
read, not of a parsed line or of the headers (Locust's ``stream=True`` timing is time-to-headers,
locust #2443), and one worker process must keep hundreds of streams at tens of tokens per second
without its own CPU becoming what is measured. A plain socket read timed with ``perf_counter``,
fed to geventhttpclient's C response parser, then to the client core's sans-IO SSE decoder and
stream assembler (the product's one parser), is the least work per chunk we found; see
``benchmarks/bench_load.py``.

Each read is timed by the kernel, not by the greenlet: with hundreds of users a greenlet runs
only after the ones woken before it, so ``perf_counter`` after ``recv`` adds the generator's own
queueing (measured: p95 15 ms of false TTFT at 200 users). ``SO_TIMESTAMPNS`` makes the kernel
stamp each received packet; ``recvmsg`` returns that stamp, converted to the ``perf_counter``
timeline at the moment of the read. Where the option is missing, the read time is used. The
stamp is the newest packet's: a reader more than a frame behind finds its packets merged by TCP
and times them all at the last one, so the stamps hold only while the worker keeps up (the CPU
gate and ``bench_load`` show where that ends). Peeking the first packet's stamp was tried: it
cost a syscall per read and changed nothing, because the kernel had already merged the packets.

This module only moves bytes: what goes on the wire (path, headers, ``X-Request-Id``, body) is the
client's ``harness.client.request.Call``, and what the bytes mean (status, SSE, completeness,
time limits, every typed error) is the client's sans-IO ``ResponseReader``. A socket failure is
a ``TransportFailure`` of one of the reader's ``TRANSPORT_KINDS``, which the reader turns into
the client's own error, with the call's context.
"""

from __future__ import annotations

import errno
import socket as pysocket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import gevent.socket as gsocket
from geventhttpclient.response import HTTPResponse

from harness.client.request import Call, base_headers
from harness.client.stream import TransportKind
from harness.client.validation import normalize_base_url

_READ_SIZE = 65536
perf_counter = time.perf_counter
# Python names the option only on some builds; 35 is its number on Linux, and only there.
_SO_TIMESTAMPNS = getattr(pysocket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_ANC_SIZE = pysocket.CMSG_SPACE(16)


def _stamp(ancillary: list[tuple[int, int, bytes]], now: float, wall: float) -> float:
    """The kernel's receive stamp on the ``perf_counter`` timeline (``now`` if there is none)."""
    for level, kind, data in ancillary:
        if level == pysocket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            # never later than now; a stamp more than 1 s old would mean a clock step: ignore it
            lag = wall - (sec + nsec / 1e9)
            if 0.0 <= lag < 1.0:
                return now - lag
    return now


def _recv_timed(sock: gsocket.socket, stamped: bool) -> tuple[bytes, float]:
    """One read and when its last packet reached this host (``perf_counter`` timeline)."""
    if not stamped:
        raw = sock.recv(_READ_SIZE)
        return raw, perf_counter()
    raw, ancillary, _, _ = sock.recvmsg(_READ_SIZE, _ANC_SIZE)
    return raw, _stamp(ancillary, perf_counter(), time.time())


class TransportFailure(Exception):
    """A socket-level failure, named by the reader's kind (``ResponseReader.transport_failure``)."""

    def __init__(self, kind: TransportKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _Parser(HTTPResponse):
    """geventhttpclient's llhttp-based parser, collecting body bytes instead of buffering them."""

    def __init__(self, method: str) -> None:
        super().__init__(method=method)
        self.parts: list[bytes] = []

    def _on_body(self, buf: bytearray) -> None:
        self.parts.append(bytes(buf))

    def take(self) -> bytes:
        parts = self.parts
        if not parts:
            return b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.parts = []
        return data


Timeout = Callable[[], float]  # seconds the next blocking socket operation may take


class Response:
    """Status and headers of one answer; ``chunks()`` yields body bytes (de-chunked, still
    content-encoded) with the time their packets arrived."""

    def __init__(self, conn: Connection, parser: _Parser, timeout: Timeout,
                 first: tuple[bytes, float]) -> None:
        self._conn = conn
        self._parser = parser
        self._timeout = timeout
        self._first = first
        self.status = parser.status_code
        self.headers = {k.lower(): v for k, v in parser.items()}

    def chunks(self) -> Iterator[tuple[bytes, float]]:
        parser, sock = self._parser, self._conn.sock
        data, now = self._first
        if data:
            yield data, now
        try:
            while not parser.message_complete:
                assert sock is not None
                sock.settimeout(max(self._timeout(), 0.001))
                try:
                    raw, now = _recv_timed(sock, self._conn.stamped)
                except TimeoutError:
                    raise TransportFailure("timeout", "read timed out") from None
                except OSError as exc:
                    raise TransportFailure("lost", str(exc)) from None
                if not raw:
                    break  # peer closed: the reader decides what that means
                parser.feed(raw)
                data = parser.take()
                if data:
                    yield data, now
        finally:
            self.release()

    def release(self) -> None:
        """Keep the connection for the next request only if this answer was read to its end."""
        parser = self._parser
        if not parser.message_complete or parser.should_close():
            self._conn.close()


class Connection:
    """One keep-alive HTTP/1.1 connection (one per Locust user: no pool, no lock) to the root of
    ``base_url`` (``/v1`` or not, as the client normalises it: the call's paths carry it)."""

    def __init__(self, base_url: str, *, connect_timeout: float = 5.0,
                 api_token: str | None = None) -> None:
        self.base_url = normalize_base_url(base_url)
        parts = urlsplit(self.base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"load transport needs an http:// base URL, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.connect_timeout = connect_timeout
        self.sock: gsocket.socket | None = None
        self.stamped = False  # the kernel stamps received packets (SO_TIMESTAMPNS)
        headers = {"host": f"{self.host}:{self.port}", **base_headers(api_token)}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _connect(self) -> gsocket.socket:
        try:
            sock = gsocket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError:
            raise TransportFailure("connect-timeout", "connect timed out") from None
        except pysocket.gaierror as exc:
            raise TransportFailure("resolve", str(exc.strerror or exc)) from None
        except OSError as exc:
            raise TransportFailure("connect", str(exc.strerror or exc)) from None
        sock.setsockopt(pysocket.IPPROTO_TCP, pysocket.TCP_NODELAY, 1)
        self.stamped = False
        if _SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(pysocket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                self.stamped = True
            except OSError:
                pass
        self.sock = sock
        return sock

    def request_bytes(self, call: Call) -> bytes:
        """The call as HTTP/1.1: its own path, headers (``X-Request-Id`` included) and body."""
        body = call.body or b""
        extra = "".join(f"{k}: {v}\r\n" for k, v in call.headers.items())
        return (f"{call.method} {call.path} HTTP/1.1\r\n{self._head}{extra}"
                f"content-length: {len(body)}\r\n\r\n").encode("latin-1") + body

    def send(self, call: Call, timeout: Timeout, on_sent: Callable[[], None]) -> Response:
        """Send ``call`` and read the response head. ``on_sent`` runs right after the write (the
        reader's clock starts there).

        A kept-alive socket the server already closed fails before any response byte; that is
        retried once on a fresh connection (nothing was processed), anything else fails.
        """
        payload = self.request_bytes(call)
        for attempt in (1, 2):
            fresh = self.sock is None
            sock = self.sock if self.sock is not None else self._connect()
            sock.settimeout(max(timeout(), 0.001))
            try:
                sock.sendall(payload)
            except OSError as exc:
                self.close()
                if fresh or attempt == 2:
                    raise TransportFailure("lost", f"cannot send the request: {exc}") from None
                continue
            on_sent()
            try:
                return self._read_head(sock, call.method, timeout)
            except _StaleConnection:
                self.close()
                if fresh or attempt == 2:
                    raise TransportFailure("lost", "connection closed by the server before any "
                                                   "response") from None
        raise AssertionError("unreachable")

    def _read_head(self, sock: gsocket.socket, method: str, timeout: Timeout) -> Response:
        parser = _Parser(method)
        got_any = False
        while not parser.headers_complete:
            sock.settimeout(max(timeout(), 0.001))
            try:
                raw, now = _recv_timed(sock, self.stamped)
            except TimeoutError:
                self.close()
                raise TransportFailure("timeout", "no response headers in time") from None
            except OSError as exc:
                if not got_any and exc.errno in (errno.ECONNRESET, errno.EPIPE):
                    raise _StaleConnection from None
                self.close()
                raise TransportFailure("lost", str(exc)) from None
            if not raw:
                if not got_any:
                    raise _StaleConnection
                self.close()
                raise TransportFailure("lost", "connection closed in the middle of the response "
                                               "headers")
            got_any = True
            parser.feed(raw)
        return Response(self, parser, timeout, (parser.take(), now))


class _StaleConnection(Exception):
    """The server closed a kept-alive connection before answering."""
