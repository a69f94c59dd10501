"""Faults as data: one ``FaultPlan`` applied by both the emulator and the fault proxy.

A plan is a list of rules; a rule matches requests (endpoint glob, method, model glob, the n-th
matching request, a seeded probability, a cap on how often it fires) and names one action. The
first matching rule wins. A single request can also carry an action in the ``X-Harness-Fault``
header, which takes precedence over the plan.

Actions fall in two groups, and this module implements both once:

- *before the response*: ``before_headers(action)`` waits the latency to add and gives the
  status, headers and body to send instead of the real answer (status + Retry-After, HTML error
  page, 200 with an error body), if the action has one;
- *inside a stream*: ``inject_stream(action, frames, on_evict)`` wraps an async iterator of SSE
  frames (complete ``...\\n\\n`` byte strings) and stalls, slows, corrupts, truncates or cuts it,
  or inserts the endpoint's own in-stream error frame (``error_frame``, written in the stream's
  ``Dialect``). A dropped connection is signalled with ``StreamDropped`` so the server closes the
  socket without the terminating chunk, which is what a client sees when a peer dies mid-stream.

A third group is *semantic*: the reply is well-formed but wrong in the ways LM Studio users
report (LMSTUDIO_API.md §8): empty, all in ``reasoning_content``, tool calls dropped, turned into
text or left without ids, ``<think>`` inline. They change what the model "said", so the emulator
applies them to its planned reply (``harness.studio.semantic``) for every endpoint and wire
format; a proxy cannot, and records them as not fired.

``wrong_model``, ``evict`` and ``prefill_pause`` need the server's help (which model answers, how
to unload, which streams share the instance), so the server reads them from the action and
``inject_stream`` calls back for ``evict``.

Truth records a fault only once it has *fired* (``on_fire``): a stream fault whose chunk never
came, or a semantic fault with nothing to change, leaves the request's ``fault`` empty, and a
plan never chooses a stream-only action for a non-stream request (``applies``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import random
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

FAULT_HEADER = "x-harness-fault"
#: No fault waits longer than this (a header or plan with ``stall 1e300`` would otherwise hold a
#: model's slots for ever); ten minutes is longer than any client timeout worth testing.
MAX_FAULT_SECONDS = 600.0
FaultSeconds = Annotated[float, Field(ge=0, le=MAX_FAULT_SECONDS, allow_inf_nan=False)]
DONE_FRAME = b"data: [DONE]\n\n"


class FaultPlanError(ValueError):
    """A fault plan file or header could not be read or is not a valid plan."""


class StreamDropped(Exception):
    """The stream must end by closing the connection without completing the HTTP response."""


Scope = Literal["any", "stream", "reply"]


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    #: ``stream``: only acts inside a streamed response; ``reply``: rewrites the planned reply
    #: (the emulator; the proxy rewrites chat completions alike); ``any``: before the headers or
    #: on any request.
    scope: ClassVar[Scope] = "any"


class StatusFault(_Action):
    """Answer with an error status (429 by default) and optional ``Retry-After``."""

    kind: Literal["status"] = "status"
    status: int = Field(default=429, ge=400, le=599)
    retry_after: float | str | None = None
    retry_after_format: Literal["seconds", "http_date"] = "seconds"
    body: dict[str, Any] | str | None = None
    delay_s: FaultSeconds = 0.0


class HtmlErrorFault(_Action):
    """A gateway's HTML error page instead of JSON (what nginx or a tunnel sends)."""

    kind: Literal["html_error"] = "html_error"
    status: int = Field(default=502, ge=400, le=599)


class ErrorBody200Fault(_Action):
    """HTTP 200 whose JSON body is ``{"error": "<message>"}`` (LM Studio's shape A)."""

    kind: Literal["error_body_200"] = "error_body_200"
    message: str = "Unexpected endpoint or method. (POST /v1/chat/completions)"


class LatencyFault(_Action):
    """Extra latency before the response headers and/or before every stream chunk."""

    kind: Literal["latency"] = "latency"
    before_headers_s: FaultSeconds = 0.0
    between_chunks_s: FaultSeconds = 0.0


class DisconnectFault(_Action):
    """Close the connection after N chunks (0: right after the headers)."""

    scope: ClassVar[Scope] = "stream"

    kind: Literal["disconnect"] = "disconnect"
    after_chunks: int = Field(default=0, ge=0)


class StallFault(_Action):
    """Stop sending for ``seconds`` after N chunks, then carry on."""

    scope: ClassVar[Scope] = "stream"

    kind: Literal["stall"] = "stall"
    after_chunks: int = Field(default=1, ge=0)
    seconds: FaultSeconds = 5.0


class MalformedSseFault(_Action):
    """Insert a line that is not valid SSE/JSON after N chunks."""

    scope: ClassVar[Scope] = "stream"

    kind: Literal["malformed_sse"] = "malformed_sse"
    after_chunks: int = Field(default=1, ge=0)
    line: str = 'data: {"choices": [ {"delta": oops\n\n'


class TruncatedJsonFault(_Action):
    """Send chunk N with its JSON cut in half; then continue or close the connection."""

    scope: ClassVar[Scope] = "stream"

    kind: Literal["truncated_json"] = "truncated_json"
    after_chunks: int = Field(default=1, ge=0)
    then: Literal["continue", "close"] = "close"


class MissingDoneFault(_Action):
    """End the stream cleanly but without ``data: [DONE]``."""

    scope: ClassVar[Scope] = "stream"

    kind: Literal["missing_done"] = "missing_done"


class EarlyEndFault(_Action):
    """After N chunks send ``[DONE]`` with no ``finish_reason`` ever sent (llama.cpp cut-off)."""

    scope: ClassVar[Scope] = "stream"

    kind: Literal["early_end"] = "early_end"
    after_chunks: int = Field(default=2, ge=0)


class EvictFault(_Action):
    """Unload the answering model after N chunks (the server decides how the stream ends)."""

    scope: ClassVar[Scope] = "stream"

    kind: Literal["evict"] = "evict"
    after_chunks: int = Field(default=2, ge=0)


class WrongModelFault(_Action):
    """Answer with a different model than requested (``model``, or any other one)."""

    kind: Literal["wrong_model"] = "wrong_model"
    model: str | None = None


class ErrorFrameFault(_Action):
    """The endpoint's in-stream error frame after N chunks (LM Studio's ``event: error``, shape D
    on OpenAI-compatible streams); then end the stream (``stop``), go on as if nothing happened
    (``continue``) or send ``[DONE]`` and end (``done``; like ``stop`` where there is no
    ``[DONE]``)."""

    kind: Literal["error_frame"] = "error_frame"
    scope: ClassVar[Scope] = "stream"
    after_chunks: int = Field(default=0, ge=0)
    message: str = "Compute error."
    then: Literal["stop", "continue", "done"] = "stop"


class EmptyReplyFault(_Action):
    """A well-formed reply with no text, reasoning or tool calls, ``finish_reason: stop``, usage
    still counted (the GGUF context-overflow answer, BT#2339)."""

    kind: Literal["empty_reply"] = "empty_reply"
    scope: ClassVar[Scope] = "reply"


class ContentToReasoningFault(_Action):
    """The whole answer lands in ``reasoning_content``; ``content`` is empty and the finish
    reason ``stop`` (BT#1602, #1698, #1779: structured output swallowed into reasoning)."""

    kind: Literal["content_to_reasoning"] = "content_to_reasoning"
    scope: ClassVar[Scope] = "reply"


class DropToolCallsFault(_Action):
    """The model's tool calls are omitted: no ``tool_calls``, ``finish_reason: stop`` (BT#942)."""

    kind: Literal["drop_tool_calls"] = "drop_tool_calls"
    scope: ClassVar[Scope] = "reply"


class ToolCallsAsTextFault(_Action):
    """Tool calls arrive as pseudo tool-call XML in ``content`` instead of ``tool_calls``
    (BT#2115; LM Studio's documented fallback when it cannot parse a call)."""

    kind: Literal["tool_calls_as_text"] = "tool_calls_as_text"
    scope: ClassVar[Scope] = "reply"


class BlankToolIdFault(_Action):
    """Tool calls with an empty ``id`` (BT#830)."""

    kind: Literal["blank_tool_id"] = "blank_tool_id"
    scope: ClassVar[Scope] = "reply"


class InlineThinkFault(_Action):
    """Reasoning left inline as ``<think>...</think>`` at the start of ``content`` (no separate
    reasoning field: BT#863, or the "separate reasoning_content" setting off)."""

    kind: Literal["inline_think"] = "inline_think"
    scope: ClassVar[Scope] = "reply"


JINJA_MESSAGE = (
    "Jinja Exception: After the optional system message, conversation roles must alternate "
    "user and assistant roles except for tool calls and results."
)


class TemplateErrorFault(_Action):
    """A deterministic HTTP 500 from the prompt template, in LM Studio's body (BT#2218, 0.4.20):
    ``{"error":{"message":"Engine protocol predict request returned 500: {...}"}}``."""

    kind: Literal["template_error"] = "template_error"
    message: str = JINJA_MESSAGE


class PrefillPauseFault(_Action):
    """This request's prompt takes ``seconds`` to process, and every stream already generating
    on the same model instance pauses meanwhile (BT#1709, BT#1487)."""

    kind: Literal["prefill_pause"] = "prefill_pause"
    seconds: float = Field(default=0.5, ge=0, le=60)


FaultAction = Annotated[
    StatusFault
    | HtmlErrorFault
    | ErrorBody200Fault
    | LatencyFault
    | DisconnectFault
    | StallFault
    | MalformedSseFault
    | TruncatedJsonFault
    | MissingDoneFault
    | EarlyEndFault
    | EvictFault
    | WrongModelFault
    | ErrorFrameFault
    | EmptyReplyFault
    | ContentToReasoningFault
    | DropToolCallsFault
    | ToolCallsAsTextFault
    | BlankToolIdFault
    | InlineThinkFault
    | TemplateErrorFault
    | PrefillPauseFault,
    Field(discriminator="kind"),
]
# Built on first use, not at import: 21 action models made ``import harness.faults`` cost
# ~100 ms of the emulator's start-up (target < 1 s), paid again by every CLI command.
_ACTION_ADAPTER: TypeAdapter[FaultAction] = TypeAdapter(
    FaultAction, config=ConfigDict(defer_build=True))


class FaultMatch(BaseModel):
    """Which requests a rule applies to. Every given condition must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    endpoint: str = "*"
    method: str | None = None
    model: str | None = None
    nth: tuple[int, ...] | None = None
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    times: int | None = Field(default=None, ge=0)


class FaultRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str | None = None
    match: FaultMatch = Field(default_factory=FaultMatch)
    action: FaultAction


class FaultPlan(BaseModel):
    """An ordered list of fault rules plus the seed of their probability draws."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    seed: int = 0
    rules: tuple[FaultRule, ...] = ()

    @classmethod
    def load(cls, path: Path | str) -> FaultPlan:
        """Read a plan from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise FaultPlanError(f"cannot read fault plan {path}: {exc}") from exc
        try:
            data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            kind = path.suffix[1:]
            raise FaultPlanError(f"fault plan {path} is not valid {kind}: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise FaultPlanError(f"fault plan {path} is invalid: {exc}") from exc

    @classmethod
    def single(cls, action: FaultAction, **match: Any) -> FaultPlan:
        """A plan with one rule (handy in tests)."""
        return cls(rules=(FaultRule(match=FaultMatch(**match), action=action),))


def parse_action(text: str) -> FaultAction:
    """Parse the ``X-Harness-Fault`` header: a JSON action object such as ``{"kind":"stall"}``."""
    try:
        return _ACTION_ADAPTER.validate_json(text)
    except ValidationError as exc:
        raise FaultPlanError(f"invalid {FAULT_HEADER} header: {exc}") from exc


def applies(action: FaultAction, stream: bool) -> bool:
    """Whether ``action`` can act on a request at all: stream faults need a stream."""
    return stream or action.scope != "stream"


class FaultInjector:
    """A plan plus its running state: per-rule ordinals, fire counts and a seeded RNG."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._rng = random.Random(plan.seed)
        self._seen = [0] * len(plan.rules)
        self._fired = [0] * len(plan.rules)

    def select(self, endpoint: str, method: str, model: str | None,
               stream: bool = True) -> FaultAction | None:
        """The action for this request, advancing ordinals of every rule it matches.

        A rule whose action cannot act on this request (a stream fault on a non-stream
        request) does not match it: it neither counts the request nor uses up ``times``.
        """
        chosen: FaultAction | None = None
        for i, rule in enumerate(self.plan.rules):
            m = rule.match
            if not applies(rule.action, stream):
                continue
            if not fnmatch.fnmatchcase(endpoint, m.endpoint):
                continue
            if m.method is not None and m.method.upper() != method.upper():
                continue
            if m.model is not None and (model is None or not fnmatch.fnmatchcase(model, m.model)):
                continue
            self._seen[i] += 1
            if chosen is not None:
                continue
            if m.nth is not None and self._seen[i] not in m.nth:
                continue
            if m.times is not None and self._fired[i] >= m.times:
                continue
            if m.probability < 1.0 and self._rng.random() >= m.probability:
                continue
            self._fired[i] += 1
            chosen = rule.action
        return chosen

    def stats(self) -> list[dict[str, Any]]:
        return [
            {"rule": rule.name or f"#{i}", "kind": rule.action.kind, "matched": s, "fired": f}
            for i, (rule, s, f) in enumerate(
                zip(self.plan.rules, self._seen, self._fired, strict=True)
            )
        ]


@dataclass(frozen=True)
class PreparedResponse:
    """A complete response to send instead of the real one."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _retry_after_value(action: StatusFault) -> str | None:
    if action.retry_after is None:
        return None
    if isinstance(action.retry_after, str):
        return action.retry_after
    if action.retry_after_format == "http_date":
        return formatdate(time.time() + action.retry_after, usegmt=True)
    seconds = action.retry_after
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


_DEFAULT_MESSAGES = {
    429: ("Rate limit exceeded. Please retry later.", "rate_limit_error"),
    500: ("Internal server error (injected fault)", "server_error"),
    502: ("Bad gateway (injected fault)", "server_error"),
    503: ("Service unavailable (injected fault)", "server_error"),
    504: ("Gateway timeout (injected fault)", "server_error"),
}


def template_error_body(message: str) -> dict[str, Any]:
    """LM Studio's 500 when the engine cannot render the prompt template (BT#2218): the engine's
    own JSON error, quoted inside the message."""
    inner = json.dumps({"error": {"code": 500, "message": message, "type": "server_error"}},
                       separators=(",", ":"))
    return {"error": {"message": f"Engine protocol predict request returned 500: {inner}"}}


def pre_response(action: FaultAction) -> PreparedResponse | None:
    """The response that replaces the real one, for faults that answer before any generation."""
    json_type = (b"content-type", b"application/json; charset=utf-8")
    if isinstance(action, TemplateErrorFault):
        body = json.dumps(template_error_body(action.message), indent=4).encode()
        return PreparedResponse(500, [json_type], body)
    if isinstance(action, StatusFault):
        if isinstance(action.body, str):
            body = action.body.encode()
        else:
            message, kind = _DEFAULT_MESSAGES.get(
                action.status, (f"Injected fault: HTTP {action.status}", "invalid_request_error")
            )
            payload = action.body or {"error": {"message": message, "type": kind, "code": None}}
            body = json.dumps(payload).encode()
        headers = [json_type]
        retry_after = _retry_after_value(action)
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode("latin-1")))
        return PreparedResponse(action.status, headers, body)
    if isinstance(action, HtmlErrorFault):
        title = f"{action.status} Injected Gateway Error"
        html = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return PreparedResponse(
            action.status, [(b"content-type", b"text/html; charset=utf-8")], html.encode()
        )
    if isinstance(action, ErrorBody200Fault):
        body = json.dumps({"error": action.message}, separators=(",", ":")).encode()
        return PreparedResponse(200, [json_type], body)
    return None


def delay_before_headers(action: FaultAction | None) -> float:
    if isinstance(action, LatencyFault):
        return action.before_headers_s
    if isinstance(action, StatusFault):
        return action.delay_s
    return 0.0


def choose_action(header: str | None, injector: FaultInjector | None, endpoint: str,
                  method: str, model: str | None, stream: bool = True) -> FaultAction | None:
    """The request's own ``X-Harness-Fault`` action if it carries one, else the plan's."""
    if header is not None:
        return parse_action(header)
    if injector is None:
        return None
    return injector.select(endpoint, method, model, stream)


async def before_headers(action: FaultAction) -> PreparedResponse | None:
    """Wait out the action's latency before the headers; then the response that replaces the
    real one, or ``None`` when the real response follows (possibly with a stream fault)."""
    delay = delay_before_headers(action)
    if delay > 0:
        await asyncio.sleep(delay)
    return pre_response(action)


@dataclass(frozen=True)
class Dialect:
    """How one endpoint's stream ends and reports an error in-band."""

    name: str
    error: Callable[[str], bytes]
    done: bytes | None = None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _named(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _json(data) + b"\n\n"


def openai_error_frame(message: str) -> bytes:
    """LM Studio's in-stream error on OpenAI-compatible streams (shape D): a named ``error``
    event with both a nested and a top-level message (BT#2322, goose#11318)."""
    return _named("error", {"error": {"message": message}, "message": message})


def native_error_frame(message: str, kind: str = "unknown") -> bytes:
    """``/api/v1/chat``'s ``error`` event (DOC streaming-events.md)."""
    return _named("error", {"type": "error", "error": {"type": kind, "message": message}})


def anthropic_error_frame(message: str, kind: str = "api_error") -> bytes:
    """Anthropic's in-stream ``error`` event (what Anthropic clients parse on ``/v1/messages``)."""
    return _named("error", {"type": "error", "error": {"type": kind, "message": message}})


def responses_error_frame(message: str) -> bytes:
    """OpenAI Responses' ``error`` stream event."""
    return _named("error", {"type": "error", "code": None, "message": message, "param": None})


OPENAI = Dialect("openai", openai_error_frame, DONE_FRAME)
NATIVE = Dialect("native", native_error_frame)
ANTHROPIC = Dialect("anthropic", anthropic_error_frame)
RESPONSES = Dialect("responses", responses_error_frame)


def dialect_for(endpoint: str) -> Dialect:
    """The stream dialect of an LM Studio endpoint path (what a proxy knows of a request)."""
    if endpoint.startswith("/api/v1/chat"):
        return NATIVE
    if endpoint.endswith("/messages"):
        return ANTHROPIC
    if endpoint.endswith("/responses"):
        return RESPONSES
    return OPENAI


def _has_finish_reason(frame: bytes) -> bool:
    return b'"finish_reason":"' in frame or b'"finish_reason": "' in frame


def _truncate(frame: bytes) -> bytes:
    body = frame.rstrip(b"\n")
    return body[: max(7, len(body) // 2)] + b"\n\n"


def _never() -> None:
    return None


async def inject_stream(
    action: FaultAction | None,
    frames: AsyncIterator[bytes],
    on_evict: Callable[[], Awaitable[None]] | None = None,
    *,
    dialect: Dialect = OPENAI,
    on_fire: Callable[[], object] = _never,
) -> AsyncIterator[bytes]:
    """Apply a stream fault to SSE frames; unrelated actions pass frames through untouched.

    ``on_fire`` is called once, when the fault takes effect (a fault whose chunk never comes
    never fires; a latency fault fires with its first delay).
    """
    count = 0
    fired = False

    def fire() -> None:
        nonlocal fired
        if not fired:
            fired = True
            on_fire()

    async for frame in frames:
        if isinstance(action, LatencyFault) and action.between_chunks_s > 0:
            fire()
            await asyncio.sleep(action.between_chunks_s)
        elif isinstance(action, DisconnectFault) and count >= action.after_chunks:
            fire()
            raise StreamDropped(f"disconnect fault after {count} chunks")
        elif isinstance(action, StallFault) and count == action.after_chunks:
            fire()
            await asyncio.sleep(action.seconds)
        elif isinstance(action, MalformedSseFault) and count == action.after_chunks:
            fire()
            yield action.line.encode()
        elif isinstance(action, ErrorFrameFault) and count == action.after_chunks:
            fire()
            yield dialect.error(action.message)
            if action.then != "continue":
                if action.then == "done" and dialect.done is not None:
                    yield dialect.done
                return
        elif isinstance(action, TruncatedJsonFault) and count == action.after_chunks:
            if frame != DONE_FRAME:
                fire()
                count += 1
                yield _truncate(frame)
                if action.then == "close":
                    raise StreamDropped(f"truncated JSON fault at chunk {count}")
                continue
        elif isinstance(action, MissingDoneFault) and frame == DONE_FRAME:
            fire()
            continue
        elif isinstance(action, EarlyEndFault) and (
            count >= action.after_chunks or _has_finish_reason(frame) or frame == DONE_FRAME
        ):
            fire()
            yield DONE_FRAME
            return
        elif (
            isinstance(action, EvictFault)
            and count == action.after_chunks
            and on_evict is not None
        ):
            fire()
            await on_evict()
        count += 1
        yield frame
    if isinstance(action, DisconnectFault):
        fire()
        raise StreamDropped(f"disconnect fault after {count} chunks (stream was shorter)")
