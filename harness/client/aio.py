"""``AsyncClient``: the asyncio shell, method for method the same as ``Client``.

It only moves bytes, sleeps and plumbs cancellation: requests come from ``request``, every
response is read by a ``stream.ResponseReader``, retries are decided by ``retry.Attempts`` and
httpx's exceptions are mapped by ``_httpx.transport_errors``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from types import TracebackType
from typing import Any

import httpx

from harness.client import protocol, request
from harness.client._httpx import (
    DRAIN_S,
    async_transport,
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


def _cancel_soon(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` from any thread (``switch_model`` may be called from another one)."""
    loop.call_soon_threadsafe(task.cancel)


class _Reading:
    """Whether a task is inside our read (only then may ``switch_model`` cancel it)."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = False


class AsyncClient(ClientRules):
    """Async client for LM Studio. One connection pool per client; ``with_options`` views share it.

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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        options = self._setup(base_url, model, api_token, timeout, retry,
                              ModelCatalog(afetch=self.list_models, ttl=catalog_ttl))
        limits = limits or default_limits()
        self._http = httpx.AsyncClient(headers=request.base_headers(options.api_token),
                                       transport=transport or async_transport(limits))
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
    async def _run(self, call: Call, attempt: Callable[[RequestContext, Attempts, Inflight],
                                                       Awaitable[Any]], entry: Inflight) -> Any:
        """The retry loop: ``Attempts`` decides, this only sleeps and maps cancellation."""
        shared = self._shared
        attempts = Attempts(call, self._options.retry, self._options.timeouts.deadline,
                            shared.budget, on_model_not_found=shared.catalog.invalidate)
        task = asyncio.current_task()
        if task is not None:
            loop = asyncio.get_running_loop()
            entry.cancel_hook = lambda: _cancel_soon(loop, task)
        try:
            while True:
                ctx = attempts.begin()
                log_attempt("send", ctx)
                try:
                    return await attempt(ctx, attempts, entry)
                except asyncio.CancelledError:
                    if entry.cancelled and task is not None and task.uncancel() == 0:
                        raise ModelSwitched("cancelled by switch_model before an answer",
                                            context=ctx) from None
                    raise
                except ModelSwitched:
                    raise
                except LMStudioError as err:
                    await self._sleep(attempts.failed(err))
        finally:
            entry.cancel_hook = None

    async def _open(self, call: Call, ctx: RequestContext, attempts: Attempts, entry: Inflight
                    ) -> tuple[ResponseReader, httpx.Response]:
        """Send one attempt and read its head."""
        reader = ResponseReader(call, ctx, self._options.timeouts,
                                deadline_at=attempts.deadline_at, started=attempts.started,
                                cancelled=lambda: entry.cancelled, pool_size=self._pool_size)
        req = self._http.build_request(call.method, parsed_url(call.url), content=call.body,
                                       headers=call.headers, timeout=timeout_for(reader))
        with transport_errors(reader):
            response = await self._http.send(req, stream=True,
                                             follow_redirects=call.method == "GET")
        try:
            reader.head(response.status_code, dict(response.headers.items()))
        except BaseException:
            await response.aclose()
            raise
        return reader, response

    async def _read(self, reader: ResponseReader, response: httpx.Response,
                    reading: _Reading | None = None) -> AsyncIterator[list[StreamEvent]]:
        """The body through the reader, each read bounded by the reader's limit; yields the
        events of each read as one list (one hop per read, not per event, on the hot path)."""
        raw = response.aiter_raw()
        timeout = response.request.extensions["timeout"]
        try:
            while not reader.done:
                timeout["read"] = reader.timeout() or 0.001
                with transport_errors(reader):
                    if reading is not None:
                        reading.now = True
                    try:
                        data = await raw.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        if reading is not None:
                            reading.now = False
                events = reader.feed(data)
                if events:
                    yield events
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
        async def attempt(ctx: RequestContext, attempts: Attempts, entry: Inflight
                          ) -> JSONAnswer:
            reader, response = await self._open(call, ctx, attempts, entry)
            try:
                async for _ in self._read(reader, response):
                    pass
            finally:
                await response.aclose()
            answer: JSONAnswer = reader.result
            return answer

        entry = self._shared.register(call.model)
        try:
            answer: JSONAnswer = await self._run(call, attempt, entry)
            return answer
        finally:
            self._shared.unregister(entry)

    # -- OpenAI-compatible endpoints ---------------------------------------------------------------
    async def chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                   **params: Any) -> ChatResult:
        call = request.chat(self.base_url, messages, self._model(model), params)
        return protocol.chat_result(*await self._json(call), tools_offered=call.tools_offered)

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                    include_usage: bool = True, **params: Any) -> AsyncChatStream:
        """Open with ``async with``; iterate for deltas; ``await stream.result()`` at the end."""
        return AsyncChatStream(self, request.chat(self.base_url, messages, self._model(model),
                                                  params, stream=True,
                                                  include_usage=include_usage))

    async def complete(self, prompt: str, *, model: str | None = None, **params: Any
                       ) -> ChatResult:
        call = request.completion(self.base_url, prompt, self._model(model), params, False)
        return protocol.chat_result(*await self._json(call))

    def stream_complete(self, prompt: str, *, model: str | None = None, **params: Any
                        ) -> AsyncChatStream:
        return AsyncChatStream(self, request.completion(self.base_url, prompt,
                                                        self._model(model), params, True))

    async def embed(self, inputs: str | list[str], *, model: str | None = None) -> Embeddings:
        ctx, body, _ = await self._json(request.embeddings(self.base_url, inputs,
                                                           self._model(model)))
        return embeddings_result(ctx, body)

    async def respond(self, input: str | list[dict[str, Any]], *, model: str | None = None,
                      previous_response_id: str | None = None, **params: Any) -> ResponseResult:
        """``POST /v1/responses``; pass the returned ``id`` as ``previous_response_id``."""
        ctx, body, _ = await self._json(request.responses(
            self.base_url, input, self._model(model), previous_response_id, params))
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

    async def native_chat(self, input: str | list[dict[str, Any]], *, model: str | None = None,
                          **params: Any) -> ChatResult:
        call = request.native_chat(self.base_url, input, self._model(model), params, False)
        return native_chat_result(*await self._json(call))

    def stream_native_chat(self, input: str | list[dict[str, Any]], *,
                           model: str | None = None, **params: Any) -> AsyncChatStream:
        return AsyncChatStream(self, request.native_chat(self.base_url, input,
                                                         self._model(model), params, True))

    # -- Anthropic-compatible endpoint -----------------------------------------------------------
    async def messages(self, messages: list[dict[str, Any]], *, model: str | None = None,
                       **params: Any) -> ChatResult:
        """``POST /v1/messages`` (Anthropic's format; ``max_tokens`` defaults to 1024)."""
        call = messages_call(self.base_url, messages, self._model(model), params, stream=False)
        return messages_result(*await self._json(call), tools_offered=call.tools_offered)

    def stream_messages(self, messages: list[dict[str, Any]], *, model: str | None = None,
                        **params: Any) -> AsyncChatStream:
        """``/v1/messages`` streamed: Anthropic's SSE events as the same typed deltas."""
        return AsyncChatStream(self, messages_call(self.base_url, messages, self._model(model),
                                                   params, stream=True))


class AsyncChatStream:
    """One streamed call. Complete only on the server's end signal; otherwise it raises
    ``StreamInterrupted`` (or a subclass) with the partial output. Leaving ``async with`` early
    closes the HTTP response, so the server stops generating."""

    def __init__(self, client: AsyncClient, call: Call) -> None:
        self._client, self._call = client, call
        self._reader: ResponseReader | None = None
        self._response: httpx.Response | None = None
        self._entry: Inflight | None = None
        self._events: AsyncIterator[StreamEvent] | None = None
        self._result: ChatResult | None = None
        self._error: LMStudioError | None = None
        self._reading = _Reading()

    @property
    def model(self) -> str | None:
        return self._call.model

    async def __aenter__(self) -> AsyncChatStream:
        client, call = self._client, self._call

        async def attempt(ctx: RequestContext, attempts: Attempts, entry: Inflight
                          ) -> tuple[ResponseReader, httpx.Response]:
            reader, response = await client._open(call, ctx, attempts, entry)
            if not reader.streaming:  # an error status or a plain body: read why, raise it
                try:
                    async for _ in client._read(reader, response):
                        pass
                finally:
                    await response.aclose()
            return reader, response

        entry = self._entry = client._shared.register(call.model)
        try:
            self._reader, self._response = await client._run(call, attempt, entry)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
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
            raise RuntimeError("use 'async with client.stream_chat(...) as stream' first")
        if self._events is None:
            self._events = self._iterate()
        return self._events

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        reader, response, entry = self._reader, self._response, self._entry
        assert reader is not None and response is not None
        task = asyncio.current_task()
        if entry is not None and task is not None:
            loop = asyncio.get_running_loop()

            def hook() -> None:
                loop.call_soon_threadsafe(self._cancel_read, task)

            entry.cancel_hook = hook
        try:
            try:
                async for events in self._client._read(reader, response, self._reading):
                    for event in events:
                        yield event
            except asyncio.CancelledError:
                if entry is not None and entry.cancelled and task is not None \
                        and task.uncancel() == 0:
                    raise reader.switched() from None
                raise
            self._result = reader.result
        except LMStudioError as err:
            self._error = err
            raise
        finally:
            if entry is not None:
                entry.cancel_hook = None
            await response.aclose()

    def _cancel_read(self, task: asyncio.Task[Any]) -> None:
        """Runs on the loop: interrupt the task only while it waits on our read. Elsewhere the
        task is in the caller's own code, which must not see a stray ``CancelledError``; the
        flag is then noticed before the next read."""
        if self._reading.now:
            task.cancel()

    async def result(self) -> ChatResult:
        """Drain what is left and return the assembled answer (or raise why it is not one)."""
        if self._result is None and self._error is None:
            async for _ in self:
                pass
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
