"""The client shells, one code in two files: ``AsyncClient`` (asyncio) in ``aio.py`` and the
blocking ``Client`` in ``sync.py``.

``aio.py`` is the source. ``sync.py`` is ``aio.py`` with ``async``/``await`` removed and names
renamed (``AsyncClient`` -> ``Client``, ``aclose`` -> ``close``, ...; the table is in
``_generate.py``), written by ``python -m harness.client._generate``. Edit ``aio.py``, then
regenerate; ``tests/client/test_generated_shells.py`` fails while ``sync.py`` is stale. What
really differs between the shells (sleeping, how ``switch_model`` cuts a call off, the default
transport) lives in ``_backend_async.py`` and ``_backend_sync.py``, imported as ``backend``.
Docstrings and comments are copied as they are, so they speak of both shells.

The shells only move bytes, sleep and plumb cancellation: requests come from ``request``,
every response is read by a ``stream.ResponseReader``, retries are decided by
``retry.Attempts`` and httpx's exceptions are mapped by ``_httpx.transport_errors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import suppress
from types import TracebackType
from typing import Any

import httpx

from harness.client import _backend_async as backend
from harness.client import protocol, request
from harness.client._httpx import (
    DRAIN_S,
    default_limits,
    parsed_url,
    timeout_for,
    transport_errors,
    without_cookies,
)
from harness.client.catalog import ModelCatalog
from harness.client.config import Timeouts, derive_options
from harness.client.endpoints import ClientRules
from harness.client.errors import LMStudioError, ModelSwitched, RequestContext
from harness.client.messages_api import messages_call, messages_result
from harness.client.models import ChatResult, Embeddings, ModelInfo, ResponseResult, StreamEvent
from harness.client.native_tools import native_chat_result
from harness.client.request import Call
from harness.client.retry import Attempts, RetryPolicy, log_attempt
from harness.client.state import Inflight
from harness.client.stream import ResponseReader
from harness.client.wire import embeddings_result, parse_model_list, response_result

JSONAnswer = tuple[RequestContext, dict[str, Any], Any]  # context, body, timings
Opened = tuple[ResponseReader, httpx.Response]

BEFORE_ANSWER = "cancelled by switch_model before an answer"


class AsyncClient(ClientRules):
    """A client for LM Studio. One connection pool per client; ``with_options`` views share it.
    ``Client`` blocks and is safe to share between threads (httpx's pool is thread-safe, and
    every per-call value lives in an immutable ``Call``); ``AsyncClient`` is its asyncio twin.

    ``base_url`` may be given with or without ``/v1``. ``model`` is the default model, read once
    when each call starts (``switch_model`` changes it for later calls only).
    """

    def __init__(
        self,
        base_url: str = "http://localhost:1234",
        *,
        model: str | None = None,
        api_token: str | None = None,
        timeout: Timeouts | float | None = None,
        retry: RetryPolicy | None = None,
        limits: httpx.Limits | None = None,
        catalog_ttl: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: backend.Sleep = backend.sleep,
    ) -> None:
        options = self._setup(base_url, model, api_token, timeout, retry,
                              ModelCatalog(afetch=self.list_models, ttl=catalog_ttl))
        limits = limits or default_limits()
        self._http = httpx.AsyncClient(
            headers=request.base_headers(options.api_token),
            transport=transport or backend.transport(limits))
        without_cookies(self._http)
        self._pool_size = limits.max_connections
        self._sleep = sleep
        self._owner = True

    def with_options(self, *, model: str | None = None, timeout: Timeouts | float | None = None,
                     retry: RetryPolicy | None = None) -> AsyncClient:
        """A view pinned to ``model`` (and/or other timeouts) sharing this client's pool."""
        view = AsyncClient.__new__(AsyncClient)
        view._options = derive_options(self._options, model=model, timeout=timeout, retry=retry)
        view._shared, view._http, view._sleep, view._pool_size, view._owner = (
            self._shared, self._http, self._sleep, self._pool_size, False)
        return view

    async def aclose(self) -> None:
        if self._owner:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- moving bytes ----------------------------------------------------------------------------
    async def _run(self, call: Call, entry: Inflight, stream: bool = False) -> Opened:
        """The retry loop: ``Attempts`` decides, this only sleeps; a ``switch_model`` cut-off
        during it leaves as ``ModelSwitched``."""
        shared = self._shared
        attempts = Attempts(call, self._options.retry, self._options.timeouts.deadline,
                            shared.budget, on_model_not_found=shared.catalog.invalidate)
        ctx = attempts.begin()
        # The lambda reads ``ctx`` when it runs: the context of the attempt it cut off.
        cutoff = backend.Cutoff(entry, lambda: ModelSwitched(BEFORE_ANSWER, context=ctx))
        try:
            while True:
                log_attempt("send", ctx)
                with cutoff:
                    try:
                        return await self._attempt(call, ctx, attempts, entry, cutoff, stream)
                    except ModelSwitched:
                        raise
                    except LMStudioError as err:
                        if entry.cancelled:
                            raise ModelSwitched(BEFORE_ANSWER, context=err.context or ctx
                                                ) from err
                        await self._sleep(attempts.failed(err))
                ctx = attempts.begin()
        finally:
            entry.cancel_hook = None

    async def _attempt(
        self, call: Call, ctx: RequestContext, attempts: Attempts, entry: Inflight,
        cutoff: backend.Cutoff, stream: bool,
    ) -> Opened:
        """Send one attempt and read its head, then its body too unless it is the event stream
        a stream reads itself (an error status or a plain body is read whole: to return it, or
        to raise why it is not an answer)."""
        reader = ResponseReader(call, ctx, self._options.timeouts,
                                deadline_at=attempts.deadline_at, started=attempts.started,
                                cancelled=lambda: entry.cancelled, pool_size=self._pool_size)
        req = self._http.build_request(call.method, parsed_url(call.url), content=call.body,
                                       headers=call.headers, timeout=timeout_for(reader))
        with transport_errors(reader):
            response = await self._http.send(
                req, stream=True, follow_redirects=call.method == "GET")
        events_follow = False
        try:
            reader.head(response.status_code, dict(response.headers.items()))
            events_follow = stream and reader.streaming
            if not events_follow:
                async for _ in self._read(reader, response, cutoff):
                    pass
        finally:
            if not events_follow:
                await response.aclose()
        return reader, response

    async def _read(
        self, reader: ResponseReader, response: httpx.Response, cutoff: backend.Cutoff,
    ) -> AsyncIterator[list[StreamEvent]]:
        """The body through the reader, each read bounded by the reader's limit; yields the
        events of each read as one list (one hop per read, not per event, on the hot path)."""
        raw = response.aiter_raw()
        timeout = response.request.extensions["timeout"]
        try:
            while not reader.done:
                timeout["read"] = reader.timeout() or 0.001
                with transport_errors(reader), cutoff:
                    try:
                        data = await raw.__anext__()
                    except StopAsyncIteration:
                        break
                events = reader.feed(data)
                if events:
                    yield events
                    reader.resumed()
            events = reader.eof()
            if reader.streaming_ended:
                # The end signal arrived: read the body's own end too (briefly), so the server
                # sees a finished response, not a disconnect, and the connection is reused.
                timeout["read"] = DRAIN_S
                with suppress(Exception), transport_errors(reader):
                    async for _ in raw:
                        pass
            if events:
                yield events
        finally:
            await raw.aclose()  # type: ignore[attr-defined]

    async def _json(self, call: Call) -> JSONAnswer:
        entry = self._shared.register(call.model)
        try:
            reader, _ = await self._run(call, entry)
            answer: JSONAnswer = reader.result
            if entry.cancelled:
                # The cut-off came too late to interrupt the exchange (or cannot: a blocking
                # one); its answer is kept on the error rather than returned as if nothing had
                # happened.
                raise ModelSwitched("answer arrived after switch_model(inflight='cancel')",
                                    context=answer[0],
                                    partial=protocol.partial_from_body(answer[1]))
            return answer
        finally:
            self._shared.unregister(entry)

    # -- OpenAI-compatible endpoints ---------------------------------------------------------------
    async def chat(
        self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any,
    ) -> ChatResult:
        call = request.chat(self.base_url, messages, self._model(model), params)
        return protocol.chat_result(*await self._json(call), tools_offered=call.tools_offered)

    def stream_chat(
        self, messages: list[dict[str, Any]], *, model: str | None = None,
        include_usage: bool = True, **params: Any,
    ) -> AsyncChatStream:
        """Open it as a context manager (``with`` or ``async with``), iterate it for the deltas,
        then ``result()`` for the whole answer."""
        call = request.chat(self.base_url, messages, self._model(model), params, stream=True,
                            include_usage=include_usage)
        return AsyncChatStream(self, call)

    async def complete(
        self, prompt: str, *, model: str | None = None, **params: Any,
    ) -> ChatResult:
        call = request.completion(self.base_url, prompt, self._model(model), params, False)
        return protocol.chat_result(*await self._json(call))

    def stream_complete(
        self, prompt: str, *, model: str | None = None, **params: Any,
    ) -> AsyncChatStream:
        call = request.completion(self.base_url, prompt, self._model(model), params, True)
        return AsyncChatStream(self, call)

    async def embed(self, inputs: str | list[str], *, model: str | None = None) -> Embeddings:
        call = request.embeddings(self.base_url, inputs, self._model(model))
        ctx, body, _ = await self._json(call)
        return embeddings_result(ctx, body)

    async def respond(
        self, input: str | list[dict[str, Any]], *, model: str | None = None,
        previous_response_id: str | None = None, **params: Any,
    ) -> ResponseResult:
        """``POST /v1/responses``; pass the returned ``id`` as ``previous_response_id``."""
        call = request.responses(self.base_url, input, self._model(model), previous_response_id,
                                 params)
        ctx, body, _ = await self._json(call)
        return response_result(ctx, body)

    async def list_models(self) -> list[ModelInfo]:
        """``GET /v1/models`` (fresh; use ``catalog`` for the cached view)."""
        ctx, body, _ = await self._json(request.get(self.base_url, "/v1/models"))
        return parse_model_list(ctx, body)

    # -- native endpoints ------------------------------------------------------------------------
    async def native_models(self) -> list[ModelInfo]:
        """``GET /api/v1/models``: every downloaded model with its loaded instances."""
        ctx, body, _ = await self._json(request.get(self.base_url, "/api/v1/models"))
        return parse_model_list(ctx, body)

    async def v0_models(self) -> list[ModelInfo]:
        ctx, body, _ = await self._json(request.get(self.base_url, "/api/v0/models"))
        return parse_model_list(ctx, body)

    async def load_model(self, model: str, **config: Any) -> dict[str, Any]:
        _, body, _ = await self._json(request.load_model(self.base_url, model, config))
        self.catalog.invalidate()
        return body

    async def unload_model(self, instance_id: str) -> dict[str, Any]:
        _, body, _ = await self._json(request.unload_model(self.base_url, instance_id))
        self.catalog.invalidate()
        return body

    async def native_chat(
        self, input: str | list[dict[str, Any]], *, model: str | None = None, **params: Any,
    ) -> ChatResult:
        call = request.native_chat(self.base_url, input, self._model(model), params, False)
        return native_chat_result(*await self._json(call))

    def stream_native_chat(
        self, input: str | list[dict[str, Any]], *, model: str | None = None, **params: Any,
    ) -> AsyncChatStream:
        call = request.native_chat(self.base_url, input, self._model(model), params, True)
        return AsyncChatStream(self, call)

    # -- Anthropic-compatible endpoint -----------------------------------------------------------
    async def messages(
        self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any,
    ) -> ChatResult:
        """``POST /v1/messages`` (Anthropic's format; ``max_tokens`` defaults to 1024)."""
        call = messages_call(self.base_url, messages, self._model(model), params, stream=False)
        return messages_result(*await self._json(call), tools_offered=call.tools_offered)

    def stream_messages(
        self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any,
    ) -> AsyncChatStream:
        """``/v1/messages`` streamed: Anthropic's SSE events as the same typed deltas."""
        call = messages_call(self.base_url, messages, self._model(model), params, stream=True)
        return AsyncChatStream(self, call)


class AsyncChatStream:
    """One streamed call. Complete only on the server's end signal; otherwise it raises
    ``StreamInterrupted`` (or a subclass) with the partial output. Breaking out of the loop or
    leaving the ``with`` block early closes the HTTP response, so the server stops generating."""

    def __init__(self, client: AsyncClient, call: Call) -> None:
        self._client, self._call = client, call
        self._reader: ResponseReader | None = None
        self._response: httpx.Response | None = None
        self._entry: Inflight | None = None
        self._cutoff: backend.Cutoff | None = None
        self._events: AsyncIterator[StreamEvent] | None = None
        self._result: ChatResult | None = None
        self._error: LMStudioError | None = None

    @property
    def model(self) -> str | None:
        return self._call.model

    async def __aenter__(self) -> AsyncChatStream:
        client, call = self._client, self._call
        entry = self._entry = client._shared.register(call.model)
        try:
            reader, response = await client._run(call, entry, stream=True)
        except BaseException:
            await self.aclose()
            raise
        self._reader, self._response = reader, response
        self._cutoff = backend.Cutoff(entry, reader.switched, response)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._entry is not None:
            self._client._shared.unregister(self._entry)
            self._entry.cancel_hook = None
            self._entry = None
        if self._response is not None:
            await self._response.aclose()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._reader is None:
            raise RuntimeError("open the stream first: use client.stream_chat(...) in a with "
                               "(or async with) block")
        if self._events is None:
            self._events = self._iterate()
        return self._events

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        reader, response, cutoff = self._reader, self._response, self._cutoff
        assert reader is not None and response is not None and cutoff is not None
        try:
            async for events in self._client._read(reader, response, cutoff):
                for event in events:
                    yield event
            self._result = reader.result
        except LMStudioError as err:
            self._error = err
            raise
        finally:
            await response.aclose()

    async def result(self) -> ChatResult:
        """Drain what is left and return the assembled answer (or raise why it is not one)."""
        if self._result is None and self._error is None:
            async for _ in self:
                pass
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
