"""What the sync and async shells share: options, call preparation, in-flight registry, and the
mapping of httpx's exceptions onto the error tree.

Nothing here performs I/O. A call is prepared (validated, model resolved, body encoded) into a
``Call`` before any socket is touched, so bad input fails fast and the model a call runs on is
fixed at that moment, whatever happens to the client's default afterwards.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from harness import __version__
from harness.client import protocol
from harness.client.catalog import ModelCatalog
from harness.client.errors import (
    BadResponse,
    ConnectError,
    LMStudioError,
    LMStudioTimeout,
    ModelNotFound,
    ModelSwitched,
    RequestContext,
    StreamInterrupted,
    StreamStalled,
    TransportError,
    ValidationError,
    redact,
)
from harness.client.models import Timings
from harness.client.retry import RetryBudget, RetryPolicy
from harness.client.validation import (
    normalize_base_url,
    validate_messages,
    validate_model_id,
    validate_params,
)
from harness.secrets import register

logger = logging.getLogger("harness.client")
_PROCESS = f"{os.getpid():x}"

InflightPolicy = Literal["finish", "cancel"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``read`` waits for headers or a non-streamed body (JIT loads take tens of
    seconds); ``stream_idle`` is the longest silence tolerated between stream chunks;
    ``deadline`` bounds a whole call, retries and backoff included."""

    connect: float = 5.0
    read: float = 120.0
    write: float = 30.0
    stream_idle: float = 60.0
    deadline: float = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "stream_idle", "deadline"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValidationError(f"timeout.{name}", f"must be positive, got {value!r}")

    @classmethod
    def coerce(cls, value: Timeouts | float | int | None) -> Timeouts:
        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValidationError("timeout", f"must be positive seconds or Timeouts, got {value!r}")
        seconds = float(value)
        return cls(connect=min(5.0, seconds), read=seconds, write=seconds, stream_idle=seconds,
                   deadline=max(seconds, 600.0))

    def httpx(self, remaining: float | None = None) -> httpx.Timeout:
        read = self.read if remaining is None else max(0.001, min(self.read, remaining))
        return httpx.Timeout(connect=self.connect, read=read, write=self.write, pool=self.connect)


def default_limits() -> httpx.Limits:
    # Expire idle connections before LM Studio's 5 s keep-alive does, so reuse rarely races a close.
    return httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=4.0)


@dataclass(frozen=True, slots=True)
class Call:
    """One prepared call: immutable, so a retry or a model switch can never change its model."""

    method: str
    url: str
    model: str | None
    body: bytes | None
    headers: Mapping[str, str]
    request_id: str

    def context(self, attempt: int, max_attempts: int, elapsed: float) -> RequestContext:
        return RequestContext(self.method, self.url, self.model, attempt, max_attempts, elapsed,
                              self.request_id)


class Inflight:
    """A running call as seen by ``switch_model``: its pinned model and how to cut it off."""

    __slots__ = ("cancel_hook", "cancelled", "model")

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.cancelled = False
        self.cancel_hook: Callable[[], None] | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.cancel_hook is not None:
            try:
                self.cancel_hook()
            except Exception:  # the call reports ModelSwitched itself either way
                logger.debug("cancel hook failed", exc_info=True)


@dataclass
class SharedState:
    """State shared by a client and every view made with ``with_options``: pool, budget,
    default model, in-flight calls, catalog."""

    default_model: str | None
    budget: RetryBudget
    catalog: ModelCatalog
    lock: threading.Lock = field(default_factory=threading.Lock)
    inflight: set[Inflight] = field(default_factory=set)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def register(self, model: str | None) -> Inflight:
        entry = Inflight(model)
        with self.lock:
            self.inflight.add(entry)
        return entry

    def unregister(self, entry: Inflight) -> None:
        with self.lock:
            self.inflight.discard(entry)

    def switch(self, model: str, inflight: InflightPolicy) -> int:
        """Make ``model`` the default; with ``cancel``, cut off calls pinned to another model.
        Returns how many calls were cancelled."""
        validate_model_id(model)
        if inflight not in ("finish", "cancel"):
            raise ValidationError("inflight", "must be 'finish' or 'cancel'")
        with self.lock:
            self.default_model = model
            victims = [e for e in self.inflight if inflight == "cancel" and e.model != model]
        for entry in victims:
            entry.cancel()
        logger.info("default model switched", extra={"model": model, "inflight": inflight,
                                                      "cancelled": len(victims)})
        return len(victims)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    base_url: str
    model: str | None
    api_token: str | None
    timeouts: Timeouts
    retry: RetryPolicy

    def without_model(self) -> ClientOptions:
        """The root client keeps its default model in ``SharedState`` (so ``switch_model`` can
        change it); only views made by ``with_options`` pin a model in their options."""
        return replace(self, model=None)


def make_options(base_url: str, model: str | None, api_token: str | None,
                 timeout: Timeouts | float | None, retry: RetryPolicy | None) -> ClientOptions:
    root = normalize_base_url(base_url)
    if model is not None:
        validate_model_id(model)
    if api_token is not None and (not isinstance(api_token, str) or not api_token.strip()):
        raise ValidationError("api_token", "must be a non-empty string or None")
    register(api_token)  # harness.secrets: its value is redacted from every error and log
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ValidationError("retry", "must be a RetryPolicy")
    return ClientOptions(root, model, api_token, Timeouts.coerce(timeout), retry or RetryPolicy())


def derive_options(options: ClientOptions, *, model: str | None = None,
                   timeout: Timeouts | float | None = None, retry: RetryPolicy | None = None
                   ) -> ClientOptions:
    if model is not None:
        validate_model_id(model)
    return replace(
        options,
        model=model if model is not None else options.model,
        timeouts=Timeouts.coerce(timeout) if timeout is not None else options.timeouts,
        retry=retry if retry is not None else options.retry,
    )


def base_headers(options: ClientOptions) -> dict[str, str]:
    headers = {"user-agent": f"lmstudio-harness/{__version__}", "accept": "application/json"}
    if options.api_token:
        headers["authorization"] = f"Bearer {options.api_token}"
    return headers


def prepare(shared: SharedState, options: ClientOptions, method: str, path: str, *,
            payload: dict[str, Any] | None = None, model: str | None = None,
            needs_model: bool = False, stream: bool = False) -> Call:
    """Validate and freeze one call. The model is resolved here: explicit argument, then the
    view's pinned model, then the shared default at this instant."""
    if model is not None:
        validate_model_id(model)
    resolved = model or options.model or shared.default_model
    body = None
    if payload is not None:
        if needs_model:
            if resolved is None:
                raise ValidationError("model", "no model given and the client has no default")
            payload = {"model": resolved, **payload}
        if stream:
            payload["stream"] = True
        try:
            body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ValidationError("request", f"not JSON-serialisable: {exc}") from None
    # Sent as X-Request-Id and named in every error, so a failure can be found in the server's
    # log (or the emulator's truth); the same id for every retry of the call.
    request_id = f"harness-{_PROCESS}-{next(shared.ids)}"
    headers = {"x-request-id": request_id}
    if body is not None:
        headers["content-type"] = "application/json"
    if stream:
        headers["accept"] = "text/event-stream"
    return Call(method, options.base_url + path, resolved if needs_model else model, body,
                headers, request_id)


class ClientCore:
    """What both shells share: options, shared state, and the sans-IO builders that turn each
    endpoint's arguments into a validated, frozen ``Call`` (so a bad argument fails before I/O,
    identically in ``Client`` and ``AsyncClient``)."""

    _options: ClientOptions
    _shared: SharedState

    def _setup(self, base_url: str, model: str | None, api_token: str | None,
               timeout: Timeouts | float | None, retry: RetryPolicy | None,
               catalog: ModelCatalog) -> ClientOptions:
        """Validate the constructor's arguments (before any I/O) and create the shared state.
        Returns the full options, whose ``model`` is the initial default."""
        options = make_options(base_url, model, api_token, timeout, retry)
        self._options = options.without_model()
        self._shared = SharedState(options.model, RetryBudget.for_policy(options.retry), catalog)
        return options

    @property
    def base_url(self) -> str:
        return self._options.base_url

    @property
    def model(self) -> str | None:
        """The model a call started now would use."""
        return self._options.model or self._shared.default_model

    @property
    def catalog(self) -> ModelCatalog:
        """The cached model listing, shared with every ``with_options`` view."""
        return self._shared.catalog

    def _retry_wait(self, err: LMStudioError, ctx: RequestContext, number: int,
                    started: float, waited: float) -> float:
        """After failed attempt ``number``: the wait before the next one, or re-raise ``err``
        (with the attempts and total wait on it) when the policy says give up."""
        policy, timeouts = self._options.retry, self._options.timeouts
        elapsed = now() - started
        if isinstance(err, LMStudioTimeout) and elapsed >= timeouts.deadline:
            err.phase, err.limit = "deadline", timeouts.deadline
        if err.context is None or err.context.elapsed == 0.0:
            err.with_context(ctx.at(elapsed=elapsed))
        if isinstance(err, ModelNotFound):
            self.catalog.invalidate()
        wait, reason = policy.decide(number, err, remaining=timeouts.deadline - elapsed,
                                     budget=self._shared.budget)
        if wait is None:
            err.total_waited = waited
            log_attempt("give-up", ctx, reason=reason, error=type(err).__name__)
            raise err
        log_attempt("retry", ctx, wait=round(wait, 3), reason=reason)
        return wait

    def switch_model(self, model: str, *, inflight: InflightPolicy = "finish") -> int:
        """New calls use ``model``. With ``inflight="cancel"`` running calls pinned to another
        model end with ``ModelSwitched`` (partial output kept); with ``finish`` they complete on
        their own model. Returns the number of calls cancelled."""
        return self._shared.switch(model, inflight)

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
              model: str | None = None, needs_model: bool = False, stream: bool = False) -> Call:
        return prepare(self._shared, self._options, method, path, payload=payload, model=model,
                       needs_model=needs_model, stream=stream)

    def _chat_call(self, messages: Any, model: str | None, params: dict[str, Any], *,
                   stream: bool = False, include_usage: bool = True) -> Call:
        msgs = validate_messages(messages)
        validate_params(params)
        params.pop("stream", None)
        payload = {"messages": msgs, **{k: v for k, v in params.items() if v is not None}}
        if stream and include_usage:
            payload.setdefault("stream_options", {"include_usage": True})
        return self._call("POST", "/v1/chat/completions", payload, model=model,
                          needs_model=True, stream=stream)

    def _completion_call(self, prompt: Any, model: str | None, params: dict[str, Any],
                         stream: bool) -> Call:
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError("prompt", "must be a non-empty string")
        validate_params(params)
        payload = {"prompt": prompt, **{k: v for k, v in params.items() if v is not None}}
        return self._call("POST", "/v1/completions", payload, model=model, needs_model=True,
                          stream=stream)

    def _embed_call(self, inputs: Any, model: str | None) -> Call:
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or \
                not all(isinstance(i, str) for i in inputs):
            raise ValidationError("input", "must be a string or a non-empty list of strings")
        return self._call("POST", "/v1/embeddings", {"input": inputs}, model=model,
                          needs_model=True)

    def _respond_call(self, input: Any, model: str | None, previous_response_id: str | None,
                      params: dict[str, Any]) -> Call:
        if not input:
            raise ValidationError("input", "must not be empty")
        validate_params(params)
        payload: dict[str, Any] = {"input": input, **params}
        if previous_response_id is not None:
            if not isinstance(previous_response_id, str) or not previous_response_id:
                raise ValidationError("previous_response_id", "must be a non-empty string")
            payload["previous_response_id"] = previous_response_id
        return self._call("POST", "/v1/responses", payload, model=model, needs_model=True)

    def _native_call(self, input: Any, model: str | None, params: dict[str, Any],
                     stream: bool) -> Call:
        if not input:
            raise ValidationError("input", "must not be empty")
        validate_params(params)
        return self._call("POST", "/api/v1/chat", {"input": input, **params}, model=model,
                          needs_model=True, stream=stream)

    def _load_call(self, model: str, config: dict[str, Any]) -> Call:
        return self._call("POST", "/api/v1/models/load", dict(config), model=model,
                          needs_model=True)

    def _unload_call(self, instance_id: str) -> Call:
        validate_model_id(instance_id, "instance_id")
        return self._call("POST", "/api/v1/models/unload", {"instance_id": instance_id})


class StreamCore:
    """What both stream shells share: the call, the assembler, and how failures are worded."""

    _assembler: Any
    _started: float
    _timeouts: Timeouts

    def __init__(self, call: Call, assembler_type: type[Any], timeouts: Timeouts) -> None:
        self._call = call
        self._assembler_type = assembler_type
        self._timeouts = timeouts
        self._assembler = None
        self._result: Any = None
        self._error: LMStudioError | None = None
        self._started = 0.0
        self._entry: Inflight | None = None

    @property
    def model(self) -> str | None:
        return self._call.model

    def _ctx(self) -> RequestContext:
        ctx: RequestContext = self._assembler.ctx
        return ctx.at(elapsed=now() - self._started)

    def _timed(self, err: LMStudioError) -> LMStudioError:
        """Stamp an error raised while streaming with the call's elapsed time so far."""
        if err.context is not None:
            err.context = err.context.at(elapsed=now() - self._started)
        return err

    def _interrupted(self, why: str) -> LMStudioError:
        return StreamInterrupted(why, context=self._ctx(), partial=self._assembler.partial())

    def _switched(self) -> LMStudioError:
        return ModelSwitched("cut off by switch_model(inflight='cancel')", context=self._ctx(),
                             partial=self._assembler.partial())

    def _stalled(self, *, deadline: bool | None = None) -> LMStudioError:
        timeouts = self._timeouts
        if deadline is None:
            deadline = now() >= self._started + timeouts.deadline
        phase = "deadline" if deadline else "stream-idle"
        limit = timeouts.deadline if deadline else timeouts.stream_idle
        message = ("call deadline passed mid-stream" if deadline
                   else f"no stream data for {limit:g}s")
        return StreamStalled(message, phase=phase, limit=limit, context=self._ctx(),
                             partial=self._assembler.partial())


def json_answer(ctx: RequestContext, response: httpx.Response, sent: float, done: float
                ) -> tuple[dict[str, Any], RequestContext, Timings]:
    """A non-streamed answer: the typed error for a 4xx/5xx, else the checked JSON body."""
    if response.status_code >= 400:
        raise protocol.error_from_response(ctx, response.status_code, response.headers,
                                           response.content)
    body = protocol.json_body(ctx, response.headers, response.content)
    return body, ctx, Timings(ttft=done - sent, total=done - sent)


def not_a_stream(ctx: RequestContext, status: int, headers: Mapping[str, str], body: bytes
                 ) -> LMStudioError:
    """Why a response that should have been an event stream is not one."""
    if status >= 400:
        return protocol.error_from_response(ctx, status, headers, body)
    try:
        protocol.json_body(ctx, headers, body)  # raises on 200-with-error bodies
    except LMStudioError as err:
        return err
    return BadResponse("expected an event stream, got a plain body", context=ctx, status=status)


def transport_error(exc: httpx.HTTPError, ctx: RequestContext, timeouts: Timeouts, *,
                    got_headers: bool) -> LMStudioError:
    """httpx's exception as ours, naming host:port and which phase timed out."""
    parts = urlsplit(ctx.url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    text = redact(str(exc)) or type(exc).__name__
    err: LMStudioError
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        err = LMStudioTimeout(f"connect to {where} timed out", phase="connect",
                              limit=timeouts.connect, context=ctx)
    elif isinstance(exc, httpx.ReadTimeout):
        phase = "stream-idle" if got_headers else "read"
        limit = timeouts.stream_idle if got_headers else timeouts.read
        what = "no stream data" if got_headers else "no response"
        err = LMStudioTimeout(f"{what} from {where}", phase=phase, limit=limit, context=ctx)
    elif isinstance(exc, httpx.TimeoutException):
        err = LMStudioTimeout(f"{type(exc).__name__} talking to {where}", phase="read",
                              limit=timeouts.read, context=ctx)
    elif isinstance(exc, httpx.ConnectError):
        lowered = text.lower()
        if "name or service not known" in lowered or "nodename nor servname" in lowered or \
                "temporary failure in name resolution" in lowered or "getaddrinfo" in lowered:
            err = ConnectError(f"cannot resolve host {parts.hostname!r} ({text})", context=ctx)
        elif "refused" in lowered:
            err = ConnectError(f"connection refused by {where}", context=ctx)
        else:
            err = ConnectError(f"cannot connect to {where}: {text}", context=ctx)
    elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError) \
            and not got_headers:
        # Typically LM Studio closing an idle keep-alive connection just as we reused it.
        err = ConnectError(f"connection to {where} reset before a response: {text}", context=ctx)
    else:
        err = TransportError(f"transport failure with {where}: {text}", context=ctx)
    return err


def log_attempt(event: str, ctx: RequestContext, **fields: Any) -> None:
    level = logging.WARNING if event in ("retry", "give-up") else logging.DEBUG
    if logger.isEnabledFor(level):
        logger.log(level, "%s %s %s (model=%s, attempt %d/%d)%s", event, ctx.method, ctx.url,
                   ctx.model or "-", ctx.attempt, ctx.max_attempts,
                   "".join(f" {k}={v}" for k, v in fields.items()),
                   extra={"event": event, "method": ctx.method, "url": ctx.url,
                          "model": ctx.model, "attempt": ctx.attempt, **fields})


now = time.perf_counter
