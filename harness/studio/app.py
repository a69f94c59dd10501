"""The emulator's HTTP surface: LM Studio's routes on a Starlette app.

Every API route is a small ASGI endpoint (``_Api``) so the streaming hot path writes straight to
``send`` without a Response object per chunk. The wrapper does what LM Studio does before any
route logic: Bearer auth, the 200 "Unexpected endpoint or method" body for unknown paths and
methods, JSON body parsing with a size limit, then fault selection (header first, then plan) and
ground-truth bookkeeping. Route logic lives in ``handlers``; control endpoints in ``control``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from harness.faults import (
    FAULT_HEADER,
    FaultAction,
    FaultInjector,
    FaultPlan,
    FaultPlanError,
    before_headers,
    choose_action,
    delay_before_headers,
)
from harness.studio.engine import Engine, EngineError, ModelUnloaded
from harness.studio.generation import SchemaUnsupported
from harness.studio.requests import BadRequest, parse_body
from harness.studio.streaming import Receive, Send
from harness.studio.stress import STRESS_HEADER, Stress, choose_stress
from harness.studio.truth import RequestTruth

log = logging.getLogger("harness.studio")

JSON_HEADERS = [
    (b"content-type", b"application/json; charset=utf-8"),
    (b"x-powered-by", b"Express"),
    (b"keep-alive", b"timeout=5"),
]

AUTH_MISSING = (
    "An LM Studio API token is required to make requests to this server, but none was provided "
    "using the Authorization header using the 'Bearer' scheme (i.e., 'Authorization: Bearer "
    "$LM_API_TOKEN'). Learn more at: https://lmstudio.ai/docs/developer/core/authentication."
)
AUTH_INVALID = "Malformed LM Studio API token provided. Ensure you are using a valid token."


class Ctx:
    """Everything a route handler needs for one request."""

    __slots__ = ("body", "engine", "fault", "method", "path", "path_params", "receive", "record",
                 "send", "started", "state", "stress")

    def fired(self) -> None:
        """The request's fault took effect: only now does the truth name it."""
        if self.record is not None and self.fault is not None:
            self.record.fault = self.fault.kind

    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send,
                 state: StudioState) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.path_params: dict[str, Any] = scope.get("path_params", {})
        self.receive = receive
        self.send = send
        self.state = state
        self.engine = state.engine
        self.body: dict[str, Any] = {}
        self.fault: FaultAction | None = None
        self.stress: Stress | None = None
        self.record: RequestTruth | None = None
        self.started = False

    async def send_json(self, status: int, payload: Any, *, indent: int | None = None,
                        headers: list[tuple[bytes, bytes]] | None = None) -> None:
        if indent is None:
            data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        else:
            data = json.dumps(payload, indent=indent, ensure_ascii=False).encode()
        await self.send_raw(status, JSON_HEADERS + (headers or []), data)

    async def send_raw(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.started = True
        await send_response(self.send, status, headers, body)
        if self.record is not None:
            self.record.status = status


Handler = Callable[[Ctx], Awaitable[int]]


async def send_response(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                        body: bytes) -> None:
    """A whole response (with its Content-Length) in one start and one body message."""
    all_headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class StudioState:
    """Server-wide state: the engine, the active fault plan and the server settings."""

    def __init__(self, engine: Engine, *, api_token: str | None, control: bool,
                 faults: FaultPlan | None, cors: bool = False,
                 stress: Stress | None = None) -> None:
        self.engine = engine
        self.stress = stress  # the run's default; a request's X-Harness-Stress header wins
        self.api_token = api_token
        self.control = control
        self.cors = cors
        self.injector: FaultInjector | None = FaultInjector(faults) if faults else None

    def set_faults(self, plan: FaultPlan | None) -> None:
        self.injector = FaultInjector(plan) if plan is not None and plan.rules else None

    async def reset(self) -> None:
        """Fresh server: no faults, no truth, nothing loaded except preloads."""
        self.set_faults(None)
        await self.engine.reset()


def unexpected_body(method: str, path: str) -> bytes:
    return json.dumps(
        {"error": f"Unexpected endpoint or method. ({method} {path})"}, separators=(",", ":")
    ).encode()


async def read_body(receive: Receive, limit: int, declared: int | None = None) -> bytes:
    """The whole request body; ``BadRequest`` (413) as soon as it is known to exceed ``limit``."""
    if declared is not None and declared > limit:
        too_big = f"Request body of {declared} bytes exceeds the limit of {limit} bytes"
        raise BadRequest(too_big, 413)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"Request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header_value(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def auth_refusal(token: str | None, authorization: str | None,
                 api_key: str | None = None) -> dict[str, Any] | None:
    """LM Studio's 401 body when a token is required and neither ``Authorization: Bearer`` nor
    ``x-api-key`` (DOC 4_anthropic-compat/index.mdx) carries it, else None."""
    if token is None:
        return None
    scheme, _, given = (authorization or "").partition(" ")
    # As bytes: compare_digest refuses non-ASCII str, which made such a header a 500.
    # Header values arrive latin-1-decoded, so encoding back gives the bytes that were sent.
    expected = token.encode()
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"),
                                                          expected):
        return None
    if api_key is not None and hmac.compare_digest(api_key.strip().encode("latin-1"), expected):
        return None
    message = AUTH_MISSING if not (authorization or api_key) else AUTH_INVALID
    return {"error": {"type": "invalid_request", "code": "invalid_api_key", "message": message}}


def request_refusal(token: str | None, scope: dict[str, Any]) -> dict[str, Any] | None:
    return auth_refusal(token, header_value(scope, b"authorization"),
                        header_value(scope, b"x-api-key"))


ErrorShape = Callable[[int, str, str], dict[str, Any]]
"""An endpoint's error body for (status, message, native error type)."""

CORS_HEADERS = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-headers", b"*")]
CORS_METHODS = (b"access-control-allow-methods", b"GET,HEAD,PUT,PATCH,POST,DELETE")


def with_cors(send: Send) -> Send:
    """``send`` adding the headers LM Studio sends with CORS on (0.4.21, goose#11318); never
    ``Access-Control-Allow-Private-Network`` (BT#392)."""

    async def cors_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *CORS_HEADERS]}
        await send(message)

    return cors_send


async def preflight(send: Send) -> None:
    """A CORS preflight answered as Express's ``cors()`` does: 204, no body."""
    await send_response(send, 204, [*CORS_HEADERS, CORS_METHODS], b"")


class _Api:
    """ASGI endpoint for one path: method dispatch, auth, body, faults, truth, error mapping."""

    def __init__(self, state: StudioState, handlers: dict[str, Handler],
                 errors: ErrorShape | None = None) -> None:
        self.state = state
        self.handlers = handlers
        self.errors = errors

    def _error(self, status: int, message: str, kind: str = "invalid_request",
               body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The error body this endpoint sends: its own shape, else LM Studio's (``body``, or
        the string error of shape A)."""
        if self.errors is not None:
            return self.errors(status, message, kind)
        return body if body is not None else {"error": message}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if self.state.cors:
            if scope["method"] == "OPTIONS":
                await preflight(send)
                return
            send = with_cors(send)
        ctx = Ctx(scope, receive, send, self.state)
        refusal = request_refusal(self.state.api_token, scope)
        if refusal is not None:
            await ctx.send_json(401, refusal)
            return
        handler = self.handlers.get(ctx.method)
        if handler is None:
            await ctx.send_raw(200, JSON_HEADERS, unexpected_body(ctx.method, ctx.path))
            return
        engine = self.state.engine
        try:
            if ctx.method == "POST":
                declared = header_value(scope, b"content-length")
                raw = await read_body(receive, engine.options.max_body_bytes,
                                       int(declared) if declared and declared.isdigit() else None)
                ctx.body = parse_body(raw)
        except BadRequest as exc:
            await ctx.send_json(exc.status, self._error(exc.status, exc.message))
            return
        stream = ctx.body.get("stream") is True
        record = ctx.record = engine.new_truth(ctx.path, ctx.method, stream)
        # A client's own request id lets it pair its measurements with this truth exactly.
        record.client_request_id = header_value(scope, b"x-request-id")
        model = ctx.body.get("model")
        record.model_requested = model if isinstance(model, str) else None
        status = 500
        try:
            # The per-request fault header is a control feature: obeyed only with --control.
            header = header_value(scope, FAULT_HEADER.encode()) if self.state.control else None
            ctx.fault = choose_action(header,
                                      self.state.injector, ctx.path, ctx.method,
                                      record.model_requested, stream)
            ctx.stress = choose_stress(header_value(scope, STRESS_HEADER.encode()),
                                       self.state.stress)
            if ctx.fault is not None:
                if delay_before_headers(ctx.fault) > 0:
                    ctx.fired()
                prepared = await before_headers(ctx.fault)
                if prepared is not None:
                    ctx.fired()
                    await ctx.send_raw(prepared.status, prepared.headers, prepared.body)
                    status = prepared.status
                    return
            status = await handler(ctx)
        except (FaultPlanError, SchemaUnsupported) as exc:
            status = 400
            await ctx.send_json(400, self._error(400, str(exc)))
        except RecursionError:  # a schema or message structure too deep to walk
            status = 400
            await ctx.send_json(400, self._error(400, "Request is nested too deeply"))
        except BadRequest as exc:
            status = exc.status
            indent = 4 if exc.body is not None else None
            await ctx.send_json(exc.status, self._error(exc.status, exc.message, body=exc.body),
                                indent=indent)
        except EngineError as exc:
            status = exc.status
            indent = 4 if isinstance(exc.body.get("error"), dict) else None
            kind = "model_not_found" if status == 404 else "invalid_request"
            await ctx.send_json(exc.status, self._error(status, str(exc), kind, exc.body),
                                indent=indent)
        except ModelUnloaded as exc:
            status = 500
            if not ctx.started:
                await ctx.send_json(500, self._error(500, "Model is unloaded.", "unknown",
                                                     {"error": {"message": "Model is unloaded."}}))
            log.info("request %s: %s", record.id, exc)
        except Exception as exc:
            log.exception("emulator bug while serving %s %s", ctx.method, ctx.path)
            if not ctx.started:
                await ctx.send_json(500, {"error": f"Internal emulator error: {exc!r}"})
        finally:
            engine.close_truth(record, status)


class StudioApp:
    """The emulator's ASGI callable: exact API paths go straight to their ``_Api``.

    Starlette's middleware stack wraps ``send`` in two closures per request, so every streamed
    chunk paid for two extra coroutine layers; with 20,000 chunks a second that was measurable.
    The fixed LM Studio paths are therefore dispatched here by a dict lookup, and everything else
    (lifespan, control routes, path parameters, trailing-slash redirects, 404/405 bodies) still
    goes through the Starlette app, which keeps the same routes as a fallback.
    """

    def __init__(self, fallback: Starlette, fast: dict[str, _Api]) -> None:
        self.fallback = fallback
        self.fast = fast

    @property
    def state(self) -> Any:
        return self.fallback.state

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            api = self.fast.get(scope["path"])
            if api is not None:
                await api(scope, receive, send)
                return
        await self.fallback(scope, receive, send)  # type: ignore[arg-type]


def create_app(engine: Engine, *, api_token: str | None = None, control: bool = False,
               faults: FaultPlan | None = None, cors: bool = False,
               stress: Stress | None = None) -> StudioApp:
    """The emulator app. ``app.state.studio`` holds the ``StudioState`` (for the test handle).
    ``cors``: LM Studio's "Enable CORS" (``lms server start --cors``)."""
    from harness.studio import control as control_routes
    from harness.studio import handlers as h
    from harness.studio import messages as m
    from harness.studio import native as n

    state = StudioState(engine, api_token=api_token, control=control, faults=faults,
                        cors=cors, stress=stress)

    def api(errors: ErrorShape | None = None, **methods: Handler) -> _Api:
        return _Api(state, methods, errors)

    native = h.native_error

    routes: list[BaseRoute] = [
        Route("/v1/models", api(GET=h.openai_models)),
        Route("/v1/chat/completions", api(POST=h.chat_completions)),
        Route("/v1/completions", api(POST=h.completions)),
        Route("/v1/embeddings", api(POST=h.embeddings)),
        Route("/v1/responses", api(POST=h.responses)),
        Route("/api/v0/models", api(GET=h.v0_models)),
        Route("/api/v0/models/{model_id:path}", api(GET=h.v0_model)),
        Route("/api/v0/chat/completions", api(POST=h.v0_chat_completions)),
        Route("/api/v0/completions", api(POST=h.completions)),
        Route("/api/v0/embeddings", api(POST=h.embeddings)),
        Route("/v1/messages", api(m.anthropic_error, POST=m.messages)),
        Route("/api/v1/models", api(native, GET=n.v1_models)),
        Route("/api/v1/models/load", api(native, POST=n.v1_load)),
        Route("/api/v1/models/unload", api(native, POST=n.v1_unload)),
        Route("/api/v1/models/download", api(native, POST=n.v1_download)),
        Route("/api/v1/models/download/status/{job_id}", api(native, GET=n.v1_download_status)),
        Route("/api/v1/chat", api(native, POST=n.v1_chat)),
    ]
    if control:
        routes += control_routes.routes(state, api_token=api_token)

    async def unexpected(request: Request, exc: Exception) -> Response:
        if state.cors and request.method == "OPTIONS":
            return Response(status_code=204, headers={k.decode(): v.decode() for k, v in
                                                      [*CORS_HEADERS, CORS_METHODS]})
        refusal = auth_refusal(state.api_token, request.headers.get("authorization"),
                               request.headers.get("x-api-key"))
        if refusal is not None:
            return Response(json.dumps(refusal), 401, media_type="application/json; charset=utf-8")
        return Response(unexpected_body(request.method, request.url.path), 200,
                        media_type="application/json; charset=utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = Starlette(routes=routes, exception_handlers={404: unexpected, 405: unexpected},
                    lifespan=lifespan)
    app.state.studio = state
    fast = {route.path: route.app for route in routes if isinstance(route, Route)
            and isinstance(route.app, _Api) and not route.param_convertors}
    return StudioApp(app, fast)
