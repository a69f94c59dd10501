"""Synchronous body writes on uvicorn's httptools connection, so the pacer can write chunks itself.

Awaiting the ASGI ``send`` for every chunk means waking one task per chunk; at 20,000 chunks a
second that wake-up, not the socket write, was the emulator's cost. Once the response has
started with chunked encoding, uvicorn's ``send`` for a non-final body message does nothing but
frame the bytes and call ``transport.write``: ``DirectBody`` does exactly that, and reports
itself unusable whenever uvicorn's ``send`` would have done anything else (client gone, write
buffer above its high-water mark, response complete). Callers then fall back to the ASGI
``send``, which also ends every response, so uvicorn's own completion and keep-alive handling
stay in charge. Any other server (or uvicorn's h11 protocol) simply gets no ``DirectBody``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_HttptoolsCycle: type | None
try:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _Cycle
except ImportError:  # pragma: no cover - httptools is an optional uvicorn extra
    _HttptoolsCycle = None
else:
    _HttptoolsCycle = _Cycle


class DirectBody:
    """Chunked-encoding writes straight to the transport of one uvicorn response."""

    __slots__ = ("_cycle", "_write")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._write: Callable[[bytes], object] = cycle.transport.write

    @classmethod
    def attach(cls, send: Callable[..., Any]) -> DirectBody | None:
        """For ``send`` of a started chunked uvicorn/httptools response; otherwise ``None``."""
        owner = getattr(send, "__self__", None)
        if _HttptoolsCycle is None or type(owner) is not _HttptoolsCycle:
            return None
        cycle: Any = owner
        if not cycle.response_started or cycle.chunked_encoding is not True:
            return None
        if cycle.scope.get("method") == "HEAD":
            return None
        return cls(cycle)

    @property
    def disconnected(self) -> bool:
        return bool(self._cycle.disconnected)

    def writable(self) -> bool:
        """True when uvicorn's ``send`` would write at once (not wait, drop or refuse)."""
        cycle = self._cycle
        return not (cycle.disconnected or cycle.response_complete or cycle.flow.write_paused)

    def write_one(self, frame: bytes) -> None:
        """Write one frame as one HTTP chunk."""
        self._write(b"%x\r\n%s\r\n" % (len(frame), frame))

    def write(self, frames: Sequence[bytes]) -> None:
        """Write ``frames`` as HTTP chunks in one transport write (one syscall)."""
        self._write(b"".join([b"%x\r\n%s\r\n" % (len(f), f) for f in frames]))
