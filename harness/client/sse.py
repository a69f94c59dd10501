"""Server-Sent Events decoding, sans-IO: bytes in, events out.

Why hand-written instead of a library: the decoder sits on the hottest path of every stream and
load test. It works on bytes, splits lines with one ``bytes.split`` per network read, and decodes
UTF-8 only for complete lines, so a character split across two reads is never mangled.
``benchmarks/bench_streaming.py`` measures it against httpx's line iterator and the openai SDK.

It follows the WHATWG SSE rules that matter for LM Studio: LF, CRLF and lone CR line ends (a CR at
the end of one read may be the first half of a CRLF), ``:`` comment / keep-alive lines, multi-line
``data:`` joined with ``\\n``, named ``event:`` lines, a single optional space after the colon, and
no dispatch for an event without data.
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed it network reads; it returns the events those reads completed.

    Linear in the input: an unfinished line is kept as a list of reads and joined once, when a
    read brings its line end, so a 40 MB line arriving in 64 KB reads costs one copy, not 600
    (``benchmarks/bench_streaming.py --long-line``)."""

    __slots__ = ("_data", "_event", "_id", "_parts")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._take(chunk)
        return [] if buf is None else self._split(buf)

    def feed_messages(self, chunk: bytes) -> tuple[list[bytes], list[SSEEvent]]:
        """``feed`` for a stream of unnamed events: ``(data, [])`` when every event this read
        completes is one ``data:`` line and nothing else (each chunk of an OpenAI-style stream),
        else ``([], events)`` as ``feed`` returns them.

        The first case is the hot path of every stream: the read is cut with one ``bytes.split``
        and checked with one ``bytes.join`` and ``in``, with no per-line Python work and no
        decoding (orjson reads UTF-8 bytes itself); ``benchmarks/bench_streaming.py`` measures
        it against ``feed``. The data is bytes, not yet decoded; a character split across reads
        arrives whole, as with ``feed``. Events with empty data are not dispatched, as in
        ``feed``; the last event id (``last_event_id``) is unchanged by such events."""
        buf = self._take(chunk)
        if buf is None:
            return [], []
        if (b"\r" not in buf and not self._data and self._event is None
                and buf.startswith(b"data: ")):
            end = buf.rfind(b"\n\n") + 2
            # Events "data: X\n\n" one after the other: cut at each blank line followed by
            # "data: ", they are so only if no X holds a line end (else an X would hold other
            # lines). One join and one memchr check that: counting line ends is a byte loop,
            # slower than the split itself.
            data = buf[6:end - 2].split(b"\n\ndata: ") if end > 1 else None
            if data is not None and b"\n" not in b"".join(data):
                if b"" in data:
                    data = [item for item in data if item]
                rest = buf[end:]
                if rest:
                    # What follows the last blank line holds no blank line (the ``rfind``), so
                    # its complete lines (if any) can start an event but not end one.
                    self._split(rest)
                return data, []
        return [], self._split(buf)

    @property
    def last_event_id(self) -> str | None:
        return self._id

    def _take(self, chunk: bytes) -> bytes | None:
        """The unprocessed bytes with ``chunk`` added; None while ``chunk`` only extends a
        line still open (nothing to split yet)."""
        parts = self._parts
        if not parts:
            return chunk
        if b"\n" not in chunk and b"\r" not in chunk and not parts[-1].endswith(b"\r"):
            parts.append(chunk)  # still inside one long line
            return None
        parts.append(chunk)
        buf = b"".join(parts)
        parts.clear()
        return buf

    def _split(self, buf: bytes) -> list[SSEEvent]:
        """Split ``buf`` into lines, keep its unterminated last line, decode the others."""
        if b"\r" in buf:
            hold_cr = buf.endswith(b"\r")
            if hold_cr:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = buf.split(b"\n")
            # A trailing CR stays pending: the next read may start with the LF of its CRLF.
            pending = lines.pop() + (b"\r" if hold_cr else b"")
        else:
            lines = buf.split(b"\n")
            pending = lines.pop()
        if pending:
            self._parts.append(pending)
        if not lines:
            return []
        return self._lines(lines)

    def flush(self) -> list[SSEEvent]:
        """End of stream. Per the spec a final line without its terminator is discarded and an
        event without its blank line is not dispatched; the assembler reports what was lost."""
        pending = b"".join(self._parts)
        self._parts.clear()
        # Only a line whose terminator arrived counts; a pending CR is such a terminator.
        events = self._lines([pending[:-1]]) if pending.endswith(b"\r") else []
        self._data, self._event = [], None
        return events

    @property
    def has_partial_event(self) -> bool:
        return bool(self._data or any(part.strip() for part in self._parts))

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        data = self._data
        for raw in lines:
            if not raw:
                if data:
                    joined = data[0] if len(data) == 1 else "\n".join(data)
                    if joined:  # the spec dispatches nothing for empty data
                        events.append(SSEEvent(joined, self._event or "message", self._id))
                    data = self._data = []
                self._event = None
                continue
            if raw.startswith(b"data: "):  # the common case, one C call
                data.append(raw[6:].decode("utf-8", "replace"))
                continue
            if raw[:5] == b"data:":
                value = raw[6:] if raw[5:6] == b" " else raw[5:]
                data.append(value.decode("utf-8", "replace"))
                continue
            if raw[:1] == b":":
                continue  # comment / keep-alive
            line = raw.decode("utf-8", "replace")
            name, sep, val = line.partition(":")
            if sep and val[:1] == " ":
                val = val[1:]
            if name == "event":
                self._event = val
            elif name == "data":  # "data" without a colon: empty data line
                data.append(val)
            elif name == "id" and "\x00" not in val:
                self._id = val
            # "retry" and unknown fields are ignored, as the spec says.
        return events
