"""``Client``: the blocking, thread-safe shell (httpx's pool is thread-safe; every per-call value
lives in an immutable ``Call``). Mirrors ``AsyncClient`` method for method.

It only moves bytes, sleeps and plumbs cancellation: requests come from ``request``, every
response is read by a ``stream.ResponseReader``, retries are decided by ``retry.Attempts`` and
httpx's exceptions are mapped by ``_httpx.transport_errors``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from types import TracebackType
from typing import Any

import httpx

from harness.client import protocol, request
from harness.client._httpx import (
    DRAIN_S,
    default_limits,
    parsed_url,
    sync_transport,
    timeout_for,
    transport_errors,
    without_cookies,
)
from harness.client.catalog import ModelCatalog
from harness.client.config import Timeouts, derive_options
from harness.client.endpoints import ClientRules
from harness.client.errors import LMStudioError, ModelSwitched, PartialOutput, RequestContext
from harness.client.messages_api import messages_call, messages_result
from harness.client.models import ChatResult, Embeddings, ModelInfo, ResponseResult, StreamEvent
from harness.client.native_tools import native_chat_result
from harness.client.request import Call
from harness.client.retry import Attempts, RetryPolicy, log_attempt
from harness.client.state import Inflight
from harness.client.stream import ResponseReader
from harness.client.wire import embeddings_result, parse_model_list, response_result

JSONAnswer = tuple[RequestContext, dict[str, Any], Any]  # context, body, timings


class Client(ClientRules):
    """Blocking client for LM Studio, safe to share between threads. See ``AsyncClient``."""

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
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        options = self._setup(base_url, model, api_token, timeout, retry,
                              ModelCatalog(fetch=self.list_models, ttl=catalog_ttl))
        limits = limits or default_limits()
        self._http = httpx.Client(headers=request.base_headers(options.api_token),
                                  transport=transport or sync_transport(limits))
        without_cookies(self._http)
        self._pool_size = limits.max_connections
        self._sleep = sleep
        self._owner = True

    def with_options(self, *, model: str | None = None, timeout: Timeouts | float | None = None,
                     retry: RetryPolicy | None = None) -> Client:
        """A view pinned to ``model`` (and/or other timeouts) sharing this client's pool."""
        view = Client.__new__(Client)
        view._options = derive_options(self._options, model=model, timeout=timeout, retry=retry)
        view._shared, view._http, view._sleep, view._pool_size, view._owner = (
            self._shared, self._http, self._sleep, self._pool_size, False)
        return view

    def close(self) -> None:
        if self._owner:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- moving bytes ----------------------------------------------------------------------------
    def _run(self, call: Call, attempt: Callable[[RequestContext, Attempts, Inflight], Any],
             entry: Inflight) -> Any:
        """The retry loop: ``Attempts`` decides, this only sleeps."""
        shared = self._shared
        attempts = Attempts(call, self._options.retry, self._options.timeouts.deadline,
                            shared.budget, on_model_not_found=shared.catalog.invalidate)
        while True:
            ctx = attempts.begin()
            log_attempt("send", ctx)
            try:
                return attempt(ctx, attempts, entry)
            except ModelSwitched:
                raise
            except LMStudioError as err:
                if entry.cancelled:
                    raise ModelSwitched("cancelled by switch_model before an answer",
                                        context=err.context or ctx) from err
                self._sleep(attempts.failed(err))

    def _open(self, call: Call, ctx: RequestContext, attempts: Attempts, entry: Inflight
              ) -> tuple[ResponseReader, httpx.Response]:
        """Send one attempt and read its head."""
        reader = ResponseReader(call, ctx, self._options.timeouts,
                                deadline_at=attempts.deadline_at, started=attempts.started,
                                cancelled=lambda: entry.cancelled, pool_size=self._pool_size)
        req = self._http.build_request(call.method, parsed_url(call.url), content=call.body,
                                       headers=call.headers, timeout=timeout_for(reader))
        with transport_errors(reader):
            response = self._http.send(req, stream=True, follow_redirects=call.method == "GET")
        try:
            reader.head(response.status_code, dict(response.headers.items()))
        except BaseException:
            response.close()
            raise
        return reader, response

    def _read(self, reader: ResponseReader, response: httpx.Response
              ) -> Iterator[list[StreamEvent]]:
        """The body through the reader, each read bounded by the reader's limit; yields the
        events of each read as one list (one hop per read, not per event, on the hot path)."""
        raw = response.iter_raw()
        timeout = response.request.extensions["timeout"]
        while not reader.done:
            timeout["read"] = reader.timeout() or 0.001
            with transport_errors(reader):
                data = next(raw, None)
            if data is None:
                break
            events = reader.feed(data)
            if events:
                yield events
        events = reader.eof()
        if reader.streaming_ended:
            # The end signal arrived: read the body's own end too (briefly), so the server sees a
            # finished response, not a disconnect, and the connection goes back to the pool.
            timeout["read"] = DRAIN_S
            with suppress(Exception), transport_errors(reader):
                while next(raw, None) is not None:
                    pass
        if events:
            yield events

    def _json(self, call: Call) -> JSONAnswer:
        def attempt(ctx: RequestContext, attempts: Attempts, entry: Inflight) -> JSONAnswer:
            reader, response = self._open(call, ctx, attempts, entry)
            try:
                for _ in self._read(reader, response):
                    pass
            finally:
                response.close()
            answer: JSONAnswer = reader.result
            return answer

        entry = self._shared.register(call.model)
        try:
            answer: JSONAnswer = self._run(call, attempt, entry)
            if entry.cancelled:
                # A blocking exchange cannot be interrupted midway; its answer is kept on the
                # error rather than returned as if nothing had happened.
                raise ModelSwitched("answer arrived after switch_model(inflight='cancel')",
                                    context=answer[0], partial=_partial_from(answer[1]))
            return answer
        finally:
            self._shared.unregister(entry)

    # -- OpenAI-compatible endpoints ---------------------------------------------------------------
    def chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
             **params: Any) -> ChatResult:
        call = request.chat(self.base_url, messages, self._model(model), params)
        return protocol.chat_result(*self._json(call), tools_offered=call.tools_offered)

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                    include_usage: bool = True, **params: Any) -> ChatStream:
        """Use as ``with client.stream_chat(...) as stream:``; iterate; ``stream.result()``."""
        return ChatStream(self, request.chat(self.base_url, messages, self._model(model), params,
                                             stream=True, include_usage=include_usage))

    def complete(self, prompt: str, *, model: str | None = None, **params: Any) -> ChatResult:
        call = request.completion(self.base_url, prompt, self._model(model), params, False)
        return protocol.chat_result(*self._json(call))

    def stream_complete(self, prompt: str, *, model: str | None = None, **params: Any
                        ) -> ChatStream:
        return ChatStream(self, request.completion(self.base_url, prompt, self._model(model),
                                                   params, True))

    def embed(self, inputs: str | list[str], *, model: str | None = None) -> Embeddings:
        ctx, body, _ = self._json(request.embeddings(self.base_url, inputs, self._model(model)))
        return embeddings_result(ctx, body)

    def respond(self, input: str | list[dict[str, Any]], *, model: str | None = None,
                previous_response_id: str | None = None, **params: Any) -> ResponseResult:
        """``POST /v1/responses``; pass the returned ``id`` as ``previous_response_id``."""
        ctx, body, _ = self._json(request.responses(self.base_url, input, self._model(model),
                                                    previous_response_id, params))
        return response_result(ctx, body)

    def list_models(self) -> list[ModelInfo]:
        """``GET /v1/models`` (fresh; use ``catalog`` for the cached view)."""
        return parse_model_list(*self._json(request.get(self.base_url, "/v1/models"))[:2])

    # -- native endpoints ------------------------------------------------------------------------
    def native_models(self) -> list[ModelInfo]:
        """``GET /api/v1/models``: every downloaded model with its loaded instances."""
        return parse_model_list(*self._json(request.get(self.base_url, "/api/v1/models"))[:2])

    def v0_models(self) -> list[ModelInfo]:
        return parse_model_list(*self._json(request.get(self.base_url, "/api/v0/models"))[:2])

    def load_model(self, model: str, **config: Any) -> dict[str, Any]:
        _, body, _ = self._json(request.load_model(self.base_url, model, config))
        self.catalog.invalidate()
        return body

    def unload_model(self, instance_id: str) -> dict[str, Any]:
        _, body, _ = self._json(request.unload_model(self.base_url, instance_id))
        self.catalog.invalidate()
        return body

    def native_chat(self, input: str | list[dict[str, Any]], *, model: str | None = None,
                    **params: Any) -> ChatResult:
        call = request.native_chat(self.base_url, input, self._model(model), params, False)
        return native_chat_result(*self._json(call))

    def stream_native_chat(self, input: str | list[dict[str, Any]], *,
                           model: str | None = None, **params: Any) -> ChatStream:
        return ChatStream(self, request.native_chat(self.base_url, input, self._model(model),
                                                    params, True))

    # -- Anthropic-compatible endpoint -----------------------------------------------------------
    def messages(self, messages: list[dict[str, Any]], *, model: str | None = None,
                 **params: Any) -> ChatResult:
        """``POST /v1/messages`` (Anthropic's format; ``max_tokens`` defaults to 1024)."""
        call = messages_call(self.base_url, messages, self._model(model), params, stream=False)
        return messages_result(*self._json(call), tools_offered=call.tools_offered)

    def stream_messages(self, messages: list[dict[str, Any]], *, model: str | None = None,
                        **params: Any) -> ChatStream:
        """``/v1/messages`` streamed: Anthropic's SSE events as the same typed deltas."""
        return ChatStream(self, messages_call(self.base_url, messages, self._model(model),
                                              params, stream=True))


def _partial_from(body: Any) -> PartialOutput:
    if not isinstance(body, dict):
        return PartialOutput()
    try:
        message = body["choices"][0].get("message") or {}
        return PartialOutput(text=message.get("content") or "", chunks=1, model=body.get("model"))
    except (KeyError, IndexError, TypeError, AttributeError):
        return PartialOutput(model=body.get("model"))


class ChatStream:
    """One streamed call (see ``AsyncChatStream``). Breaking out of the loop or leaving the
    ``with`` block closes the HTTP response, so the server stops generating."""

    def __init__(self, client: Client, call: Call) -> None:
        self._client, self._call = client, call
        self._reader: ResponseReader | None = None
        self._response: httpx.Response | None = None
        self._entry: Inflight | None = None
        self._events: Iterator[StreamEvent] | None = None
        self._result: ChatResult | None = None
        self._error: LMStudioError | None = None

    @property
    def model(self) -> str | None:
        return self._call.model

    def __enter__(self) -> ChatStream:
        client, call = self._client, self._call

        def attempt(ctx: RequestContext, attempts: Attempts, entry: Inflight
                    ) -> tuple[ResponseReader, httpx.Response]:
            reader, response = client._open(call, ctx, attempts, entry)
            if not reader.streaming:  # an error status or a plain body: read why, raise it
                try:
                    for _ in client._read(reader, response):
                        pass
                finally:
                    response.close()
            return reader, response

        entry = self._entry = client._shared.register(call.model)
        try:
            self._reader, self._response = client._run(call, attempt, entry)
        except BaseException:
            self.close()
            raise
        # Closing the socket from the switching thread wakes a reader blocked on the next chunk.
        entry.cancel_hook = self._response.close
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._entry is not None:
            self._client._shared.unregister(self._entry)
            self._entry.cancel_hook = None
            self._entry = None
        if self._response is not None:
            self._response.close()

    def __iter__(self) -> Iterator[StreamEvent]:
        if self._reader is None:
            raise RuntimeError("use 'with client.stream_chat(...) as stream' first")
        if self._events is None:
            self._events = self._iterate()
        return self._events

    def _iterate(self) -> Iterator[StreamEvent]:
        reader, response = self._reader, self._response
        assert reader is not None and response is not None
        try:
            for events in self._client._read(reader, response):
                yield from events
            self._result = reader.result
        except LMStudioError as err:
            self._error = err
            raise
        finally:
            response.close()

    def result(self) -> ChatResult:
        """Drain what is left and return the assembled answer (or raise why it is not one)."""
        if self._result is None and self._error is None:
            for _ in self:
                pass
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
