"""Every error the harness raises, in one tree.

    LMStudioError(Exception)            root; carries a RequestContext and one-line __str__
     ├── ValidationError(ValueError)    bad input caught before any I/O (names the field)
     ├── TransportError                 nothing usable came back
     │    ├── ConnectError              refused, unresolvable, reset before a response
     │    └── LMStudioTimeout(TimeoutError)   .phase: connect | read | stream-idle | deadline
     ├── HTTPStatusError                a 4xx/5xx status (.status, .server_message)
     │    ├── RateLimited               429, with .retry_after
     │    ├── AuthenticationError       401 (LM Studio's token envelope)
     │    └── ModelNotFound             404 model_not_found / 400 "No models loaded" / catalog miss
     ├── BadResponse                    200 that is no answer: not JSON, an HTML page,
     │                                  LM Studio's 200-with-error ("Unexpected endpoint or method")
     ├── StreamInterrupted              a stream ended without the server's end signal;
     │    │                             .partial keeps what arrived (text, reasoning, tool calls)
     │    ├── ServerStreamError         the server said why: an `event: error` frame
     │    ├── StreamStalled             also an LMStudioTimeout, phase "stream-idle" or "deadline"
     │    └── ModelSwitched             cut off on purpose by client.switch_model(inflight="cancel")
     └── ModelMismatch                  answered by another model than the one pinned

Why a context on every error: the reference review's complaint was "Could not connect to LM Studio"
with no URL and a timeout that did not say which request. Every error here names method, URL, model,
attempt, elapsed time, status, server message and request id, in one line, with tokens redacted.
Errors are picklable (they cross process boundaries in xdist and Locust workers), so all state lives
in plain attributes rebuilt by ``__reduce__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from harness.secrets import redact as _redact


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove tokens from text that may reach a log, an error or a report (``harness.secrets``:
    the registered token values, token patterns and URL credentials)."""
    return _redact(text, secrets)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What one call was: resolved once when the call starts, never mutated (model pinning)."""

    method: str
    url: str
    model: str | None = None
    attempt: int = 1
    max_attempts: int = 1
    elapsed: float = 0.0
    request_id: str | None = None

    def at(self, *, attempt: int | None = None, elapsed: float | None = None) -> RequestContext:
        return replace(
            self,
            attempt=self.attempt if attempt is None else attempt,
            elapsed=self.elapsed if elapsed is None else elapsed,
        )


@dataclass(slots=True)
class PartialOutput:
    """What a stream delivered before it broke: kept, never returned as a success."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    chunks: int = 0
    model: str | None = None
    finish_reason: str | None = None


class LMStudioError(Exception):
    """Root of the tree; see the module docstring."""

    def __init__(
        self,
        message: str,
        *,
        context: RequestContext | None = None,
        status: int | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.context = context
        self.status = status
        self.server_message = redact(server_message) if server_message else None
        self.total_waited = 0.0

    # Flat accessors so callers and log formatters need not know about RequestContext.
    @property
    def method(self) -> str | None:
        return self.context.method if self.context else None

    @property
    def url(self) -> str | None:
        return self.context.url if self.context else None

    @property
    def model(self) -> str | None:
        return self.context.model if self.context else None

    @property
    def attempt(self) -> int:
        return self.context.attempt if self.context else 1

    @property
    def max_attempts(self) -> int:
        return self.context.max_attempts if self.context else 1

    @property
    def elapsed(self) -> float:
        return self.context.elapsed if self.context else 0.0

    @property
    def request_id(self) -> str | None:
        return self.context.request_id if self.context else None

    def with_context(self, context: RequestContext) -> LMStudioError:
        self.context = context
        return self

    def _details(self) -> list[str]:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.server_message and self.server_message not in self.message:
            parts.append(f"server said: {self.server_message}")
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        if self.total_waited:
            parts.append(f"waited {self.total_waited:.2f}s in backoff")
        return parts

    def __str__(self) -> str:
        text = self.message
        details = self._details()
        if details:
            text = f"{text} ({'; '.join(details)})"
        ctx = self.context
        if ctx is None:
            return text
        head = f"{ctx.method} {ctx.url} (model={ctx.model or '-'}, "
        head += f"attempt {ctx.attempt}/{ctx.max_attempts}, {ctx.elapsed:.2f}s)"
        return redact(f"{head}: {text}".replace("\n", " "))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[LMStudioError], state: dict[str, Any]) -> LMStudioError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ValidationError(LMStudioError, ValueError):
    """Bad input, caught before any I/O. ``field`` names what was wrong."""

    def __init__(self, field_name: str, problem: str, **kwargs: Any) -> None:
        super().__init__(f"invalid {field_name}: {problem}", **kwargs)
        self.field = field_name


class TransportError(LMStudioError):
    """No usable HTTP response arrived."""


class ConnectError(TransportError):
    """The connection could not be made or was reset before a response."""


class LMStudioTimeout(TransportError, TimeoutError):
    """A time limit passed; ``phase`` says which: connect, read, stream-idle or deadline."""

    def __init__(self, message: str, *, phase: str, limit: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.phase = phase
        self.limit = limit

    def _details(self) -> list[str]:
        limit = f" after {self.limit:g}s" if self.limit is not None else ""
        return [f"phase {self.phase}{limit}", *super()._details()]


class HTTPStatusError(LMStudioError):
    """The server answered with a 4xx/5xx status. ``retry_after`` is its ``Retry-After`` hint in
    seconds, if any (sent with 429 and 503; the retry policy caps it)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(HTTPStatusError):
    """429: too many requests (from a gateway or proxy: LM Studio itself queues instead)."""


class AuthenticationError(HTTPStatusError):
    """401: a token is required or was refused."""


class ModelNotFound(HTTPStatusError):
    """The model is not known (or nothing is loaded). ``available`` lists the closest ids."""

    def __init__(self, message: str, *, available: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.available = tuple(available)

    def _details(self) -> list[str]:
        parts = super()._details()
        if self.available:
            parts.append("closest: " + ", ".join(self.available))
        return parts


class BadResponse(LMStudioError):
    """A response that is not an answer: not JSON, an HTML page, or a 200 carrying an error."""


class StreamInterrupted(LMStudioError):
    """The stream ended without its end signal. ``partial`` holds everything that arrived."""

    def __init__(self, message: str, *, partial: PartialOutput | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.partial = partial or PartialOutput()

    def _details(self) -> list[str]:
        p = self.partial
        got = f"{p.chunks} chunks, {len(p.text)} chars of text kept"
        if p.reasoning:
            got += f", {len(p.reasoning)} chars of reasoning"
        if p.tool_calls:
            got += f", {len(p.tool_calls)} tool-call fragments"
        return [got, *super()._details()]


class ServerStreamError(StreamInterrupted):
    """The server reported a failure inside the open stream (``event: error``)."""


class StreamStalled(StreamInterrupted, LMStudioTimeout):
    """No stream data for longer than the idle timeout (or the call's deadline passed)."""

    def __init__(self, message: str, *, phase: str, limit: float | None,
                 partial: PartialOutput | None = None, **kw: Any) -> None:
        LMStudioError.__init__(self, message, **kw)
        self.partial = partial or PartialOutput()
        self.phase = phase
        self.limit = limit


class ModelSwitched(StreamInterrupted):
    """The call was cut off because the client switched models with ``inflight="cancel"``."""


class ModelMismatch(LMStudioError):
    """The answer came from another model than the pinned one (LM Studio may substitute)."""

    def __init__(self, message: str, *, answered_by: str, partial: PartialOutput | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.answered_by = answered_by
        self.partial = partial
