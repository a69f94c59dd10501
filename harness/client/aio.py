"""``AsyncClient``: the asyncio shell. It moves bytes, reads the clock and sleeps; every rule lives
in ``protocol``, ``retry`` and ``base``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import httpx

from harness.client import protocol
from harness.client.base import (
    Call,
    ClientCore,
    StreamCore,
    Timeouts,
    base_headers,
    default_limits,
    derive_options,
    json_answer,
    log_attempt,
    not_a_stream,
    now,
    transport_error,
)
from harness.client.catalog import ModelCatalog
from harness.client.errors import (
    LMStudioError,
    LMStudioTimeout,
    ModelSwitched,
    RequestContext,
)
from harness.client.models import (
    ChatResult,
    Embeddings,
    ModelInfo,
    ResponseResult,
    StreamEvent,
    Timings,
)
from harness.client.retry import RetryPolicy
from harness.client.sse import SSEDecoder
from harness.client.wire import embeddings_result, parse_model_list, response_result


def _cancel_soon(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` from any thread (``switch_model`` may be called from another one)."""
    loop.call_soon_threadsafe(task.cancel)


class AsyncClient(ClientCore):
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
        self._http = httpx.AsyncClient(
            headers=base_headers(options), limits=limits or default_limits(),
            timeout=options.timeouts.httpx(), transport=transport,
        )
        self._sleep = sleep
        self._owner = True

    def with_options(self, *, model: str | None = None, timeout: Timeouts | float | None = None,
                     retry: RetryPolicy | None = None) -> AsyncClient:
        """A view pinned to ``model`` (and/or other timeouts) sharing this client's pool."""
        view = AsyncClient.__new__(AsyncClient)
        view._options = derive_options(self._options, model=model, timeout=timeout, retry=retry)
        view._shared, view._http, view._sleep, view._owner = (
            self._shared, self._http, self._sleep, False)
        return view

    async def aclose(self) -> None:
        if self._owner:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the one retry loop ----------------------------------------------------------------------
    async def _run(self, call: Call, attempt: Callable[[RequestContext, float], Any]) -> Any:
        policy, timeouts, shared = self._options.retry, self._options.timeouts, self._shared
        started = now()
        waited = 0.0
        shared.budget.record_call()
        entry = shared.register(call.model)
        task = asyncio.current_task()
        if task is not None:
            loop = asyncio.get_running_loop()
            entry.cancel_hook = lambda: _cancel_soon(loop, task)
        number = 1
        try:
            while True:
                ctx = call.context(number, policy.max_attempts, now() - started)
                remaining = timeouts.deadline - (now() - started)
                log_attempt("send", ctx)
                try:
                    try:
                        async with asyncio.timeout(remaining):
                            return await attempt(ctx, remaining)
                    except TimeoutError as exc:
                        if isinstance(exc, LMStudioError):
                            raise
                        raise LMStudioTimeout("call deadline passed", phase="deadline",
                                              limit=timeouts.deadline, context=ctx) from None
                except asyncio.CancelledError:
                    if entry.cancelled and task is not None and task.uncancel() == 0:
                        raise ModelSwitched("cancelled by switch_model before an answer",
                                            context=ctx.at(elapsed=now() - started)) from None
                    raise
                except LMStudioError as err:
                    wait = self._retry_wait(err, ctx, number, started, waited)
                    await self._sleep(wait)
                    waited += wait
                    number += 1
        finally:
            shared.unregister(entry)

    async def _request_json(self, call: Call) -> tuple[dict[str, Any], RequestContext, Timings]:
        timeouts = self._options.timeouts

        async def attempt(ctx: RequestContext, remaining: float
                          ) -> tuple[dict[str, Any], RequestContext, Timings]:
            sent = now()
            try:
                response = await self._http.request(
                    call.method, call.url, content=call.body, headers=dict(call.headers),
                    timeout=timeouts.httpx(remaining))
            except httpx.HTTPError as exc:
                raise transport_error(exc, ctx, timeouts, got_headers=False) from None
            return json_answer(ctx, response, sent, now())

        result: tuple[dict[str, Any], RequestContext, Timings] = await self._run(call, attempt)
        return result

    # -- OpenAI-compatible endpoints ---------------------------------------------------------------
    async def chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                   **params: Any) -> ChatResult:
        body, ctx, timings = await self._request_json(self._chat_call(messages, model, params))
        return protocol.chat_result(ctx, body, timings)

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                    include_usage: bool = True, **params: Any) -> AsyncChatStream:
        """Open with ``async with``; iterate for deltas; ``await stream.result()`` at the end."""
        call = self._chat_call(messages, model, params, stream=True, include_usage=include_usage)
        return AsyncChatStream(self, call, protocol.ChatStreamAssembler)

    async def complete(self, prompt: str, *, model: str | None = None, **params: Any
                       ) -> ChatResult:
        call = self._completion_call(prompt, model, params, stream=False)
        body, ctx, timings = await self._request_json(call)
        return protocol.chat_result(ctx, body, timings)

    def stream_complete(self, prompt: str, *, model: str | None = None, **params: Any
                        ) -> AsyncChatStream:
        call = self._completion_call(prompt, model, params, stream=True)
        return AsyncChatStream(self, call, protocol.ChatStreamAssembler)

    async def embed(self, inputs: str | list[str], *, model: str | None = None) -> Embeddings:
        body, ctx, _ = await self._request_json(self._embed_call(inputs, model))
        return embeddings_result(ctx, body)

    async def respond(self, input: str | list[dict[str, Any]], *, model: str | None = None,
                      previous_response_id: str | None = None, **params: Any) -> ResponseResult:
        """``POST /v1/responses``; pass the returned ``id`` as ``previous_response_id``."""
        call = self._respond_call(input, model, previous_response_id, params)
        body, ctx, _ = await self._request_json(call)
        return response_result(ctx, body)

    async def list_models(self) -> list[ModelInfo]:
        """``GET /v1/models`` (fresh; use ``catalog`` for the cached view)."""
        body, ctx, _ = await self._request_json(self._call("GET", "/v1/models"))
        return parse_model_list(ctx, body)

    # -- native endpoints ------------------------------------------------------------------------
    async def native_models(self) -> list[ModelInfo]:
        """``GET /api/v1/models``: every downloaded model with its loaded instances."""
        body, ctx, _ = await self._request_json(self._call("GET", "/api/v1/models"))
        return parse_model_list(ctx, body)

    async def v0_models(self) -> list[ModelInfo]:
        body, ctx, _ = await self._request_json(self._call("GET", "/api/v0/models"))
        return parse_model_list(ctx, body)

    async def load_model(self, model: str, **config: Any) -> dict[str, Any]:
        body, _, _ = await self._request_json(self._load_call(model, config))
        self.catalog.invalidate()
        return body

    async def unload_model(self, instance_id: str) -> dict[str, Any]:
        body, _, _ = await self._request_json(self._unload_call(instance_id))
        self.catalog.invalidate()
        return body

    async def native_chat(self, input: str | list[dict[str, Any]], *, model: str | None = None,
                          **params: Any) -> ChatResult:
        call = self._native_call(input, model, params, stream=False)
        body, ctx, timings = await self._request_json(call)
        return protocol.native_chat_result(ctx, body, timings)

    def stream_native_chat(self, input: str | list[dict[str, Any]], *,
                           model: str | None = None, **params: Any) -> AsyncChatStream:
        call = self._native_call(input, model, params, stream=True)
        return AsyncChatStream(self, call, protocol.NativeChatAssembler)


class AsyncChatStream(StreamCore):
    """One streamed call. Complete only on the server's end signal; otherwise it raises
    ``StreamInterrupted`` (or a subclass) with the partial output. Leaving ``async with`` early
    closes the HTTP response, so the server stops generating."""

    def __init__(self, client: AsyncClient, call: Call, assembler_type: type[Any]) -> None:
        super().__init__(call, assembler_type, client._options.timeouts)
        self._client = client
        self._response: httpx.Response | None = None
        self._events: AsyncIterator[StreamEvent] | None = None
        self._reading = False

    async def __aenter__(self) -> AsyncChatStream:
        client, timeouts, call = self._client, self._timeouts, self._call
        self._started = now()

        async def attempt(ctx: RequestContext, remaining: float) -> None:
            request = client._http.build_request(
                call.method, call.url, content=call.body, headers=dict(call.headers),
                timeout=timeouts.httpx(remaining))
            sent = now()
            try:
                response = await client._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise transport_error(exc, ctx, timeouts, got_headers=False) from None
            if response.status_code >= 400 or "text/event-stream" not in response.headers.get(
                    "content-type", ""):
                try:
                    body = await response.aread()
                except httpx.HTTPError as exc:
                    raise transport_error(exc, ctx, timeouts, got_headers=True) from None
                finally:
                    await response.aclose()
                raise not_a_stream(ctx, response.status_code, response.headers, body)
            # From here on a read timeout means the stream went quiet, not the server slow.
            request.extensions["timeout"]["read"] = min(timeouts.stream_idle, remaining)
            self._response = response
            self._assembler = self._assembler_type(ctx, sent)

        await client._run(call, attempt)
        self._entry = client._shared.register(call.model)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._entry is not None:
            self._client._shared.unregister(self._entry)
            self._entry = None
        if self._response is not None:
            await self._response.aclose()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._assembler is None:
            raise RuntimeError("use 'async with client.stream_chat(...) as stream' first")
        if self._events is None:
            self._events = self._iterate()
        return self._events

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        assembler, response, entry = self._assembler, self._response, self._entry
        assert assembler is not None and response is not None
        decoder = SSEDecoder()
        deadline_at = self._started + self._timeouts.deadline
        raw = response.aiter_raw()
        task = asyncio.current_task()
        if entry is not None and task is not None:
            loop = asyncio.get_running_loop()
            def hook() -> None:
                loop.call_soon_threadsafe(self._cancel_read, task)

            entry.cancel_hook = hook
        try:
            while not assembler.done:
                if entry is not None and entry.cancelled:
                    raise self._switched()
                self._reading = True
                try:
                    chunk = await raw.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if entry is not None and entry.cancelled and task is not None \
                            and task.uncancel() == 0:
                        raise self._switched() from None
                    raise
                except httpx.ReadTimeout:
                    raise self._stalled() from None
                except httpx.HTTPError as exc:
                    raise self._interrupted(
                        f"connection lost mid-stream: {type(exc).__name__}: {exc}") from None
                finally:
                    self._reading = False
                t = now()
                for event in decoder.feed(chunk):
                    for delta in assembler.feed(event, t):
                        yield delta
                if t > deadline_at:
                    raise self._stalled(deadline=True)
            if assembler.done:
                self._result = assembler.finish(now())
            else:
                partial_event = decoder.has_partial_event
                for event in decoder.flush():
                    for delta in assembler.feed(event, now()):
                        yield delta
                self._result = assembler.finish(now(), eof_with_partial_event=partial_event)
        except LMStudioError as err:
            self._error = self._timed(err)
            raise
        finally:
            if entry is not None:
                entry.cancel_hook = None
            await raw.aclose()  # type: ignore[attr-defined]
            await response.aclose()

    def _cancel_read(self, task: asyncio.Task[Any]) -> None:
        """Runs on the loop: interrupt the task only while it waits on our read. Elsewhere the
        task is in the caller's own code, which must not see a stray ``CancelledError``; the
        flag is then noticed before the next read."""
        if self._reading:
            task.cancel()

    async def result(self) -> ChatResult:
        """Drain what is left and return the assembled answer (or raise why it is not one)."""
        if self._result is None and self._error is None:
            async for _ in self:
                pass
        if self._error is not None:
            raise self._error
        result: ChatResult = self._result
        return result
