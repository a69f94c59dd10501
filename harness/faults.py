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
  frames (complete ``...\\n\\n`` byte strings) and stalls, slows, corrupts, truncates or cuts it.
  A dropped connection is signalled with ``StreamDropped`` so the server closes the socket
  without the terminating chunk, which is what a client sees when a peer dies mid-stream.

``wrong_model`` and ``evict`` need the server's help (which model answers, how to unload), so the
server reads them from the action and ``inject_stream`` calls back for ``evict``.
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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

FAULT_HEADER = "x-harness-fault"
DONE_FRAME = b"data: [DONE]\n\n"


class FaultPlanError(ValueError):
    """A fault plan file or header could not be read or is not a valid plan."""


class StreamDropped(Exception):
    """The stream must end by closing the connection without completing the HTTP response."""


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StatusFault(_Action):
    """Answer with an error status (429 by default) and optional ``Retry-After``."""

    kind: Literal["status"] = "status"
    status: int = Field(default=429, ge=400, le=599)
    retry_after: float | str | None = None
    retry_after_format: Literal["seconds", "http_date"] = "seconds"
    body: dict[str, Any] | str | None = None
    delay_s: float = Field(default=0.0, ge=0)


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
    before_headers_s: float = Field(default=0.0, ge=0)
    between_chunks_s: float = Field(default=0.0, ge=0)


class DisconnectFault(_Action):
    """Close the connection after N chunks (0: right after the headers)."""

    kind: Literal["disconnect"] = "disconnect"
    after_chunks: int = Field(default=0, ge=0)


class StallFault(_Action):
    """Stop sending for ``seconds`` after N chunks, then carry on."""

    kind: Literal["stall"] = "stall"
    after_chunks: int = Field(default=1, ge=0)
    seconds: float = Field(default=5.0, ge=0)


class MalformedSseFault(_Action):
    """Insert a line that is not valid SSE/JSON after N chunks."""

    kind: Literal["malformed_sse"] = "malformed_sse"
    after_chunks: int = Field(default=1, ge=0)
    line: str = 'data: {"choices": [ {"delta": oops\n\n'


class TruncatedJsonFault(_Action):
    """Send chunk N with its JSON cut in half; then continue or close the connection."""

    kind: Literal["truncated_json"] = "truncated_json"
    after_chunks: int = Field(default=1, ge=0)
    then: Literal["continue", "close"] = "close"


class MissingDoneFault(_Action):
    """End the stream cleanly but without ``data: [DONE]``."""

    kind: Literal["missing_done"] = "missing_done"


class EarlyEndFault(_Action):
    """After N chunks send ``[DONE]`` with no ``finish_reason`` ever sent (llama.cpp cut-off)."""

    kind: Literal["early_end"] = "early_end"
    after_chunks: int = Field(default=2, ge=0)


class EvictFault(_Action):
    """Unload the answering model after N chunks (the server decides how the stream ends)."""

    kind: Literal["evict"] = "evict"
    after_chunks: int = Field(default=2, ge=0)


class WrongModelFault(_Action):
    """Answer with a different model than requested (``model``, or any other one)."""

    kind: Literal["wrong_model"] = "wrong_model"
    model: str | None = None


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
    | WrongModelFault,
    Field(discriminator="kind"),
]
_ACTION_ADAPTER: TypeAdapter[FaultAction] = TypeAdapter(FaultAction)


class FaultMatch(BaseModel):
    """Which requests a rule applies to. Every given condition must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = "*"
    method: str | None = None
    model: str | None = None
    nth: tuple[int, ...] | None = None
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    times: int | None = Field(default=None, ge=0)


class FaultRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    match: FaultMatch = Field(default_factory=FaultMatch)
    action: FaultAction


class FaultPlan(BaseModel):
    """An ordered list of fault rules plus the seed of their probability draws."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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


class FaultInjector:
    """A plan plus its running state: per-rule ordinals, fire counts and a seeded RNG."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._rng = random.Random(plan.seed)
        self._seen = [0] * len(plan.rules)
        self._fired = [0] * len(plan.rules)

    def select(self, endpoint: str, method: str, model: str | None) -> FaultAction | None:
        """The action for this request, advancing ordinals of every rule it matches."""
        chosen: FaultAction | None = None
        for i, rule in enumerate(self.plan.rules):
            m = rule.match
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


def pre_response(action: FaultAction) -> PreparedResponse | None:
    """The response that replaces the real one, for faults that answer before any generation."""
    json_type = (b"content-type", b"application/json; charset=utf-8")
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
                  method: str, model: str | None) -> FaultAction | None:
    """The request's own ``X-Harness-Fault`` action if it carries one, else the plan's."""
    if header is not None:
        return parse_action(header)
    if injector is None:
        return None
    return injector.select(endpoint, method, model)


async def before_headers(action: FaultAction) -> PreparedResponse | None:
    """Wait out the action's latency before the headers; then the response that replaces the
    real one, or ``None`` when the real response follows (possibly with a stream fault)."""
    delay = delay_before_headers(action)
    if delay > 0:
        await asyncio.sleep(delay)
    return pre_response(action)


def _has_finish_reason(frame: bytes) -> bool:
    return b'"finish_reason":"' in frame or b'"finish_reason": "' in frame


def _truncate(frame: bytes) -> bytes:
    body = frame.rstrip(b"\n")
    return body[: max(7, len(body) // 2)] + b"\n\n"


async def inject_stream(
    action: FaultAction | None,
    frames: AsyncIterator[bytes],
    on_evict: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """Apply a stream fault to SSE frames; unrelated actions pass frames through untouched."""
    count = 0
    async for frame in frames:
        if isinstance(action, LatencyFault) and action.between_chunks_s > 0:
            await asyncio.sleep(action.between_chunks_s)
        elif isinstance(action, DisconnectFault) and count >= action.after_chunks:
            raise StreamDropped(f"disconnect fault after {count} chunks")
        elif isinstance(action, StallFault) and count == action.after_chunks:
            await asyncio.sleep(action.seconds)
        elif isinstance(action, MalformedSseFault) and count == action.after_chunks:
            yield action.line.encode()
        elif isinstance(action, TruncatedJsonFault) and count == action.after_chunks:
            if frame != DONE_FRAME:
                count += 1
                yield _truncate(frame)
                if action.then == "close":
                    raise StreamDropped(f"truncated JSON fault at chunk {count}")
                continue
        elif isinstance(action, MissingDoneFault) and frame == DONE_FRAME:
            continue
        elif isinstance(action, EarlyEndFault) and (
            count >= action.after_chunks or _has_finish_reason(frame) or frame == DONE_FRAME
        ):
            yield DONE_FRAME
            return
        elif (
            isinstance(action, EvictFault)
            and count == action.after_chunks
            and on_evict is not None
        ):
            await on_evict()
        count += 1
        yield frame
    if isinstance(action, DisconnectFault):
        raise StreamDropped(f"disconnect fault after {count} chunks (stream was shorter)")
