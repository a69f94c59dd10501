"""Every error the harness raises, in one tree.

    LMStudioError(Exception)            root; carries a RequestContext and one-line __str__
     ├── ValidationError(ValueError)    bad input caught before any I/O (names the field)
     ├── TransportError                 nothing usable came back
     │    ├── ConnectError              refused, unresolvable, reset before any response byte
     │    └── LMStudioTimeout(TimeoutError)   .phase: pool | connect | write | read |
     │                                  first-token | stream-idle | deadline
     ├── HTTPStatusError                a 4xx/5xx status (.status, .server_message, .retry_after)
     │    ├── RateLimited               429, with .retry_after
     │    ├── AuthenticationError       401 (LM Studio's token envelope)
     │    ├── ModelNotFound             404 model_not_found / 400 "No models loaded" / catalog miss
     │    ├── Redirected                3xx on a non-GET (never re-sent elsewhere); .location
     │    └── ServerRejected            a 4xx/5xx the same request always gets again (chat
     │         │                        template / Jinja errors, invalid tool-call JSON): never
     │         │                        retried; .reason
     │         └── ContextOverflow      the prompt does not fit the loaded context: a 400, or an
     │                                  `event: error` frame in a 200 stream (then also a
     │                                  ServerStreamError, partial kept)
     ├── BadResponse                    200 that is no answer: not JSON, an HTML page,
     │                                  LM Studio's 200-with-error ("Unexpected endpoint or method")
     ├── StreamInterrupted              an answer ended without the server's end signal;
     │    │                             .partial keeps what arrived (text, reasoning, tool calls)
     │    ├── IncompleteAnswer          a non-streamed answer cut off: body cut after the headers,
     │    │                             or a 200 whose choice has no finish_reason (an unload or
     │    │                             JIT auto-evict mid-generation)
     │    ├── ServerStreamError         the server said why: an `event: error` frame
     │    ├── StreamStalled             also an LMStudioTimeout, phase first-token, stream-idle or
     │    │                             deadline
     │    └── ModelSwitched             cut off on purpose by client.switch_model(inflight="cancel")
     ├── UnusableAnswer                 complete on the wire but not an answer; .partial is it all
     │    ├── ReasoningOnly             reasoning, then an empty answer (LM Studio BT#1602)
     │    ├── EmptyAnswer               nothing at all: LM Studio's GGUF engine answers a prompt
     │    │                             that overflows the context this way (BT#2339)
     │    ├── ToolCallsAsText           tools were offered and the call came back as plain text
     │    └── BlankToolCallId           a tool call without an id (echoing it back fails, BT#830)
     └── ModelMismatch                  answered by another model than the one pinned

Why a context on every error: the reference review's complaint was "Could not connect to LM Studio"
with no URL and a timeout that did not say which request. Every error here names method, URL, model,
attempt, elapsed time, status, server message and request id, in one line, with tokens redacted.
Errors are picklable (they cross process boundaries in xdist and Locust workers), so all state lives
in plain attributes rebuilt by ``__reduce__``. Errors are built whole where they are raised: the
context a call layer passes down already names the attempt and the time waited in backoff, so
nothing is patched onto an exception after it was raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    waited: float = 0.0  # seconds spent in backoff before this attempt

    def at(self, *, attempt: int | None = None, elapsed: float | None = None) -> RequestContext:
        # Spelled out rather than dataclasses.replace: this runs several times per call.
        return RequestContext(self.method, self.url, self.model,
                              self.attempt if attempt is None else attempt, self.max_attempts,
                              self.elapsed if elapsed is None else elapsed, self.request_id,
                              self.waited)


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

    @property
    def total_waited(self) -> float:
        """Seconds the call spent in backoff before the attempt that raised this."""
        return self.context.waited if self.context else 0.0

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
    """A time limit passed; ``phase`` says which (see the tree above)."""

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
    """429: too many requests (from a gateway or proxy: LM Studio itself queues instead).
    ``retry_after`` is the wait the server asked for; a call gives up at once when it is above
    the policy's ``retry_after_max`` (the server's wait is never undercut)."""


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


class Redirected(HTTPStatusError):
    """A 3xx for a request that is not a GET: its body is never re-sent to another URL."""

    def __init__(self, message: str, *, location: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.location = location


class ServerRejected(HTTPStatusError):
    """A 4xx/5xx whose body says the same request will fail again: a chat-template (Jinja)
    error, tool-call JSON the server cannot parse, a prompt over the context. Never retried.
    ``reason`` is ``template``, ``tool_json`` or ``context_overflow``."""

    def __init__(self, message: str, *, reason: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reason = reason


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


class IncompleteAnswer(StreamInterrupted):
    """A non-streamed answer that was cut off: the body broke after the headers, or LM Studio
    answered 200 with the partial content and ``finish_reason: null`` (an unload or a JIT
    auto-evict mid-generation). Never retried: the generation had run."""


class ServerStreamError(StreamInterrupted):
    """The server reported a failure inside the open stream (``event: error``)."""


class ContextOverflow(ServerRejected, ServerStreamError):
    """The prompt does not fit the loaded context. LM Studio says so three ways: a 400 (0.3.x),
    an ``event: error`` frame in a 200 stream (0.4.21), or an empty reply (GGUF; that one is
    ``EmptyAnswer``, since an empty reply alone does not prove the cause). ``status`` is 400 or
    200; ``partial`` holds what a stream delivered before the frame."""

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("reason", "context_overflow")
        super().__init__(message, **kw)


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


class UnusableAnswer(LMStudioError):
    """The answer is complete on the wire (a ``finish_reason``, ``[DONE]``) but is not an
    answer. ``partial`` holds all of it, so a caller that wants it anyway still has it."""

    def __init__(self, message: str, *, partial: PartialOutput | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.partial = partial or PartialOutput()


class ReasoningOnly(UnusableAnswer):
    """Reasoning arrived, then an empty answer (no text, no tool call): LM Studio BT#1602, and
    structured output swallowed into ``reasoning_content`` (BT#1698)."""


class EmptyAnswer(UnusableAnswer):
    """No text, no reasoning, no tool call. LM Studio's GGUF engine answers a prompt that
    overflows the loaded context this way, with no error (BT#2339)."""


class ToolCallsAsText(UnusableAnswer):
    """Tools were offered and the model's call came back as plain ``content`` (LM Studio returns
    the text when it cannot parse a tool call, BT#2115) instead of ``tool_calls``."""


class BlankToolCallId(UnusableAnswer):
    """A tool call arrived with an empty ``id``; echoing it back in the next turn gets
    ``Invalid 'messages' in payload`` (BT#830)."""


class ModelMismatch(LMStudioError):
    """The answer came from another model than the pinned one (LM Studio may substitute)."""

    def __init__(self, message: str, *, answered_by: str, partial: PartialOutput | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.answered_by = answered_by
        self.partial = partial
