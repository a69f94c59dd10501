"""``harness proxy``: a streaming reverse proxy that applies a ``FaultPlan`` in front of any server.

The same suites that break the emulator can break a live LM Studio: requests are forwarded with
``httpx.AsyncClient``; responses come back chunk by chunk (SSE streams frame by frame, never
buffered beyond one frame) through ``harness.faults.inject_stream``, the single implementation
the emulator also uses. The proxy keeps its own ground truth and the same ``/_harness/``
control endpoints.

Fault actions that need the server's cooperation are done the way a client could do them:
``wrong_model`` rewrites the request's ``model`` field to another model the upstream has (a
loaded one first, from its ``/api/v1/models``, else any it lists), ``evict`` posts the answering
model's instance id to the upstream's ``/api/v1/models/unload`` mid-stream. Semantic actions
(``empty_reply``, ``drop_tool_calls``...) rewrite ``/v1/chat/completions`` answers in flight
(``harness.semantic_wire``); elsewhere, and for ``prefill_pause`` (which needs the model), the
proxy forwards the request untouched and its truth records no fault. A fault is recorded only once
it fired, as in the emulator: ``wrong_model`` only when the upstream really answered with a
model other than the one requested.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httpx
from starlette.applications import Starlette

from harness.faults import (
    FAULT_HEADER,
    FaultInjector,
    FaultPlan,
    FaultPlanError,
    LatencyFault,
    StreamDropped,
    WrongModelFault,
    before_headers,
    choose_action,
    delay_before_headers,
    dialect_for,
    inject_stream,
)
from harness.secrets import redact, redact_url
from harness.semantic_wire import ChatRewriter, applies_on_wire
from harness.studio.app import header_value, read_body, send_response
from harness.studio.requests import BadRequest
from harness.studio.streaming import watch_disconnect
from harness.studio.truth import RequestLedger, RequestTruth

log = logging.getLogger("harness.proxy")

HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailers", b"transfer-encoding", b"upgrade", b"content-length", b"host", b"date",
    b"server",
}


class _ProxyEngine(RequestLedger):
    """The proxy's bookkeeping, shaped like the emulator's engine for the control routes."""

    def state(self) -> dict[str, Any]:
        return {"proxy": True}


class ProxyState:
    def __init__(self, upstream: str, faults: FaultPlan | None, max_body_bytes: int,
                 truth_limit: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.engine = _ProxyEngine(truth_limit)
        self.injector: FaultInjector | None = FaultInjector(faults) if faults else None
        self.max_body_bytes = max_body_bytes
        self.client: httpx.AsyncClient | None = None
        self.control = True

    def set_faults(self, plan: FaultPlan | None) -> None:
        self.injector = FaultInjector(plan) if plan is not None and plan.rules else None

    async def reset(self) -> None:
        self.set_faults(None)
        self.engine.truth.clear()
        self.engine.counters.clear()


def _model_of(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    try:
        value = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, None
    if isinstance(value, dict):
        model = value.get("model")
        return value, model if isinstance(model, str) else None
    return None, None


class ProxyApp:
    """ASGI callable that forwards every non-control request upstream."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state = self.state
        method, path = scope["method"], scope["path"]
        try:
            body = await read_body(receive, state.max_body_bytes)
        except BadRequest:
            await _send_error(send, 413, f"Request body exceeds the proxy's limit of "
                                         f"{state.max_body_bytes} bytes")
            return
        parsed, model = _model_of(body)
        record = state.engine.new_truth(path, method, bool(parsed and parsed.get("stream")))
        record.model_requested = model
        record.client_request_id = header_value(scope, b"x-request-id")
        status = 502
        watcher = asyncio.create_task(watch_disconnect(receive, record))
        try:
            status = await self._forward(scope, send, body, parsed, model, record)
        except FaultPlanError as exc:
            status = 400
            await _send_error(send, 400, str(exc))
        finally:
            watcher.cancel()
            state.engine.close_truth(record, status)

    async def _forward(self, scope: dict[str, Any], send: Any, body: bytes,
                       parsed: dict[str, Any] | None, model: str | None,
                       record: RequestTruth) -> int:
        state = self.state
        wrong_model: str | None = None
        # The per-request fault header is a control feature: obeyed only with control on.
        header = header_value(scope, FAULT_HEADER.encode()) if state.control else None
        fault = choose_action(header, state.injector,
                              scope["path"], scope["method"], model, record.stream)

        def fired() -> None:
            if fault is not None:
                record.fault = fault.kind

        if fault is not None:
            if delay_before_headers(fault) > 0:
                fired()
            prepared = await before_headers(fault)
            if prepared is not None:
                fired()
                await send_response(send, prepared.status, prepared.headers, prepared.body)
                return prepared.status
            if isinstance(fault, WrongModelFault) and parsed is not None:
                other = fault.model or await self._other_model(scope, model)
                if other is not None and other != model:
                    parsed["model"] = other
                    body = json.dumps(parsed).encode()
                    wrong_model = other
        stream_fault = fault if fault is not None and fault.scope == "stream" else None
        rewriter = ChatRewriter(fault) if fault is not None and applies_on_wire(
            fault, scope["path"]) else None
        query = scope.get("query_string", b"").decode("latin-1")
        url = state.upstream + scope["path"] + (f"?{query}" if query else "")
        headers = [(k, v) for k, v in scope["headers"]
                   if k not in HOP_BY_HOP and k != FAULT_HEADER.encode()]
        assert state.client is not None
        request = state.client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            upstream = await state.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            message = redact(f"proxy could not reach upstream {scope['method']} "
                             f"{redact_url(url)}: {exc!r}")
            log.warning(message)
            await _send_error(send, 502, message)
            return 502
        try:
            out_headers = [(k.lower(), v) for k, v in upstream.headers.raw
                           if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": upstream.status_code,
                        "headers": out_headers})
            sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
            source: AsyncIterator[bytes] = upstream.aiter_raw()
            if sse:
                source = _frames(source)
                instance = {"id": model}

                async def evict() -> None:
                    await state.client.post(  # type: ignore[union-attr]
                        state.upstream + "/api/v1/models/unload",
                        json={"instance_id": instance["id"]})

                if rewriter is not None:
                    source = _rewrite(source, rewriter, fired)
                source = _observe(source, instance, record)
                if stream_fault is not None:
                    source = inject_stream(stream_fault, source, evict,
                                           dialect=dialect_for(scope["path"]), on_fire=fired)
                else:
                    source = inject_stream(fault if isinstance(fault, LatencyFault) else None,
                                           source, on_fire=fired)
            elif rewriter is not None and upstream.status_code == 200:
                source = _rewrite_body(source, rewriter, fired)
            body_seen: list[bytes] = []
            try:
                async for chunk in source:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    record.sent_at.append(time.monotonic())
                    if not sse and sum(map(len, body_seen)) < _OBSERVE_LIMIT:
                        body_seen.append(chunk)
            except StreamDropped:
                return upstream.status_code
            except httpx.HTTPError as exc:
                log.warning("upstream %s broke mid-stream: %r", url, exc)
                return upstream.status_code  # close without the final chunk, like upstream
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if not sse:
                _note_answer(record, b"".join(body_seen))
            if wrong_model is not None and record.instance_id not in (None, model):
                fired()  # the upstream really answered with another model
            return upstream.status_code
        finally:
            await upstream.aclose()

    async def _other_model(self, scope: dict[str, Any], requested: str | None) -> str | None:
        """A model id the upstream has other than ``requested``: a loaded LLM first (answering
        at once, like LM Studio's one-model substitution), else any model it lists."""
        state = self.state
        assert state.client is not None
        headers = [(k, v) for k, v in scope["headers"] if k == b"authorization"]
        candidates: list[str] = []
        try:
            native = (await state.client.get(state.upstream + "/api/v1/models",
                                             headers=headers)).json()
            llms = [m for m in native.get("models", []) if m.get("type") == "llm"]
            candidates += [str(i.get("id")) for m in llms for i in m.get("loaded_instances") or []]
            candidates += [str(m.get("key")) for m in llms]
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        if not candidates:  # not LM Studio's native API: the OpenAI listing
            try:
                listing = (await state.client.get(state.upstream + "/v1/models",
                                                  headers=headers)).json()
                candidates = [str(m.get("id")) for m in listing.get("data", [])]
            except (httpx.HTTPError, ValueError, AttributeError):
                return None
        base = (requested or "").split("@", 1)[0].split(":", 1)[0]
        for candidate in candidates:
            if candidate.split(":", 1)[0] != base:
                return candidate
        return None


async def _rewrite(frames: AsyncIterator[bytes], rewriter: ChatRewriter,
                   fired: Callable[[], None]) -> AsyncIterator[bytes]:
    """A semantic fault applied to each frame; the truth names it once something changed."""
    async for frame in frames:
        out = rewriter.frame(frame)
        if rewriter.fired:
            fired()
        yield out


async def _rewrite_body(chunks: AsyncIterator[bytes], rewriter: ChatRewriter,
                        fired: Callable[[], None]) -> AsyncIterator[bytes]:
    """A plain answer, read whole, then rewritten (it is one JSON document)."""
    body = b"".join([chunk async for chunk in chunks])
    out = rewriter.body(body)
    if rewriter.fired:
        fired()
    yield out


async def _frames(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Whole SSE frames, byte for byte as the upstream sent them (not decoded events: the client
    must see exactly what came, faults included). Bytes wait only until their frame is complete,
    so a stream passes frame by frame as fast as the upstream produces it."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while (cut := buffer.find(b"\n\n")) >= 0:
            yield buffer[: cut + 2]
            buffer = buffer[cut + 2 :]
    if buffer:
        yield buffer


_OBSERVE_LIMIT = 1 << 20  # non-stream bodies larger than this are passed on unobserved


async def _observe(frames: AsyncIterator[bytes], instance: dict[str, Any],
                   record: RequestTruth) -> AsyncIterator[bytes]:
    """Note in the truth what the upstream's stream said: which instance answered (also the
    target of the ``evict`` action), the finish reason and the completion token count."""
    async for frame in frames:
        if frame.startswith(b"data: {"):
            try:
                data = json.loads(frame[6:])
            except json.JSONDecodeError:
                data = None
            if isinstance(data, dict):
                if record.instance_id is None and isinstance(data.get("model"), str):
                    instance["id"] = record.instance_id = data["model"]
                _note_choice_and_usage(record, data)
        yield frame


def _note_answer(record: RequestTruth, body: bytes) -> None:
    """The same observations for a non-streamed JSON answer."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return
    if isinstance(data, dict):
        model = data.get("model") or data.get("model_instance_id")
        if isinstance(model, str):
            record.instance_id = model
        _note_choice_and_usage(record, data)


def _note_choice_and_usage(record: RequestTruth, data: dict[str, Any]) -> None:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        finish = choices[0].get("finish_reason")
        if isinstance(finish, str):
            record.finish_reason = finish
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        record.completion_tokens = usage["completion_tokens"]


async def _send_error(send: Any, status: int, message: str) -> None:
    """The proxy's own errors: ``{"error": "<message>"}`` (LM Studio's shape A)."""
    await send_response(send, status, [(b"content-type", b"application/json; charset=utf-8")],
                        json.dumps({"error": message}).encode())


def create_proxy_app(upstream: str, *, faults: FaultPlan | None = None, control: bool = True,
                     max_body_bytes: int = 16 * 1024 * 1024, truth_limit: int = 50_000,
                     api_token: str | None = None) -> Starlette:
    """The proxy app; ``app.state.proxy`` is its ``ProxyState``.

    ``control`` mounts ``/_harness/`` and obeys ``X-Harness-Fault`` (the CLI turns it on only with
    ``--control``); with ``api_token`` the control endpoints require it. Credentials in
    ``upstream`` are refused: they would reach logs and error bodies.
    """
    import contextlib

    from starlette.routing import Mount

    from harness.studio import control as control_routes

    if redact_url(upstream) != upstream:
        raise ValueError("the proxy's upstream URL must not contain credentials (user:pass@)")
    state = ProxyState(upstream, faults, max_body_bytes, truth_limit)
    state.control = control

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
        timeout = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=None)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            state.client = client
            yield
        state.client = None

    routes: list[Any] = control_routes.routes(state, api_token=api_token) if control else []
    routes.append(Mount("/", app=cast(Any, ProxyApp(state))))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.proxy = state
    return app


__all__ = ["ProxyState", "create_proxy_app"]
