"""Everything httpx-specific, in one place: the pool's limits, the per-read time limit, and the
table that maps httpx's exceptions onto the error tree (as ``httpx/_transports/default.py`` maps
httpcore's onto its own).

Why a network backend: httpx's ``read`` timeout is per socket read, so a server that trickles one
byte a second (slow headers, a slow body, keep-alive whitespace) never trips it and a call can
run far past its deadline. ``LimitedBackend`` wraps httpcore's backend and bounds every read and
write by the current attempt's absolute ``read_by`` instant (``stream.ResponseReader``), found
through a context variable the shell sets around each blocking step. Async and sync alike.
"""

from __future__ import annotations

import contextvars
import functools
import socket
from types import TracebackType
from typing import Any

import httpcore
import httpx

from harness.client.config import DOCUMENTED_CONCURRENCY
from harness.client.errors import LMStudioError
from harness.client.stream import ResponseReader, TransportKind

#: The reader whose limits bound the socket operations running in this context.
CURRENT: contextvars.ContextVar[ResponseReader | None] = contextvars.ContextVar(
    "harness_client_reader", default=None)


#: After a stream's end signal, how long to wait for the end of its HTTP body (a server that
#: keeps the response open after ``[DONE]`` costs this much, then the connection is closed).
DRAIN_S = 0.2


def default_limits() -> httpx.Limits:
    """Sized for ``DOCUMENTED_CONCURRENCY`` calls at once. Idle connections expire before LM
    Studio's 5 s keep-alive does, so reuse rarely races a close."""
    return httpx.Limits(max_connections=DOCUMENTED_CONCURRENCY, max_keepalive_connections=64,
                        keepalive_expiry=4.0)


# Most specific first: the first matching row decides.
_TABLE: tuple[tuple[type[Exception], TransportKind], ...] = (
    (httpx.PoolTimeout, "pool"),
    (httpx.ConnectTimeout, "connect-timeout"),
    (httpx.WriteTimeout, "write-timeout"),
    (httpx.TimeoutException, "timeout"),
    (httpx.ConnectError, "connect"),
    (httpx.RemoteProtocolError, "lost"),
    (httpx.ReadError, "lost"),
    (httpx.WriteError, "lost"),
    (httpx.CloseError, "lost"),
    (httpx.StreamError, "lost"),
    (httpx.HTTPError, "other"),
    (OSError, "lost"),
)


class transport_errors:
    """Run one blocking step of ``reader``'s attempt: its limit bounds the socket, and an httpx
    exception leaves as the error the reader builds for it (one table, ``_TABLE``).

    A class rather than ``@contextmanager``: it runs once per network read."""

    __slots__ = ("_reader", "_token")

    def __init__(self, reader: ResponseReader) -> None:
        self._reader = reader

    def __enter__(self) -> None:
        self._token = CURRENT.set(self._reader)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        CURRENT.reset(self._token)
        if exc is None or isinstance(exc, LMStudioError) or not isinstance(exc, Exception):
            return
        for kind_type, name in _TABLE:
            if isinstance(exc, kind_type):
                if name == "connect" and _caused_by_resolver(exc):
                    name = "resolve"
                raise self._reader.transport_failure(name, str(exc) or type(exc).__name__
                                                     ) from None


def _caused_by_resolver(exc: BaseException) -> bool:
    """httpx keeps the resolver's ``socket.gaierror`` at the root of a ``ConnectError`` (by
    type on every platform, where its message differs on each)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing. LM Studio sets no cookies, and a harness whose calls
    depended on cookies left by earlier answers would not be reproducible; not keeping them
    also skips httpx's per-response ``Set-Cookie`` parse through ``http.cookiejar`` (about a
    tenth of a small call's CPU)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


def without_cookies(client: httpx.Client | httpx.AsyncClient) -> None:
    """Give ``client`` a ``NoCookies`` jar (the public ``cookies`` setter copies into a plain
    ``httpx.Cookies``, so this sets the attribute the property reads)."""
    client._cookies = NoCookies()


@functools.lru_cache(maxsize=512)
def parsed_url(url: str) -> httpx.URL:
    """``url`` parsed once: httpx re-parses a ``str`` URL on every request (a measurable part
    of a small call), while an ``httpx.URL`` is immutable and reused as is. Bounded: the URLs
    of one process are a handful of base URLs times a handful of paths."""
    return httpx.URL(url)


def timeout_for(reader: ResponseReader) -> httpx.Timeout:
    """The per-request httpx timeouts of an attempt: reads end at the reader's limit, connects
    and writes at their own within the deadline (the backend then tightens each operation).
    A write is not bounded by the time to first token, which counts from its end."""
    limits = reader.limits
    left = reader.deadline_left()
    return httpx.Timeout(connect=max(min(limits.connect, left), 0.001),
                         read=reader.timeout() or 0.001,
                         write=max(min(limits.write, left), 0.001),
                         pool=reader.pool_timeout() or 0.001)


def _bounded(timeout: float | None, *, read: bool = True) -> float | None:
    """A socket operation's timeout within the current attempt's limit: a read must return by
    the attempt's ``read_by`` (headers, body or next event); a connect or a write only within
    the call's deadline (httpx's own ``connect``/``write`` limits still apply)."""
    reader = CURRENT.get()
    if reader is None:
        return timeout
    left = reader.timeout() if read else reader.deadline_left()
    if left <= 0:
        raise httpcore.ReadTimeout("time limit passed") if read else \
            httpcore.WriteTimeout("call deadline passed")
    return left if timeout is None or left < timeout else timeout


def _wrote() -> None:
    reader = CURRENT.get()
    if reader is not None:
        reader.sent()  # the limits before the headers count from the last byte sent


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, read=False))
        _wrote()

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _bounded(timeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, _bounded(timeout, read=False))
        _wrote()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class LimitedBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None
                    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _bounded(timeout, read=False),
                                               local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncLimitedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None
                          ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.connect_tcp(
            host, port, _bounded(timeout, read=False), local_address, socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.connect_unix_socket(path, timeout,
                                                                  socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def sync_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport with every socket operation bounded by the attempt's limit."""
    transport = httpx.HTTPTransport(limits=limits)
    pool = transport._pool
    pool._network_backend = LimitedBackend(pool._network_backend)
    return transport


def async_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(limits=limits)
    pool = transport._pool
    pool._network_backend = AsyncLimitedBackend(pool._network_backend)
    return transport
