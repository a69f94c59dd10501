"""``Client``: the blocking, thread-safe shell (httpx's pool is thread-safe; every per-call value
lives in an immutable ``Call``). Mirrors ``AsyncClient`` method for method."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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
    PartialOutput,
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


class Client(ClientCore):
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
        self._http = httpx.Client(
            headers=base_headers(options), limits=limits or default_limits(),
            timeout=options.timeouts.httpx(), transport=transport,
        )
        self._sleep = sleep
        self._owner = True

    def with_options(self, *, model: str | None = None, timeout: Timeouts | float | None = None,
                     retry: RetryPolicy | None = None) -> Client:
        """A view pinned to ``model`` (and/or other timeouts) sharing this client's pool."""
        view = Client.__new__(Client)
        view._options = derive_options(self._options, model=model, timeout=timeout, retry=retry)
        view._shared, view._http, view._sleep, view._owner = (
            self._shared, self._http, self._sleep, False)
        return view

    def close(self) -> None:
        if self._owner:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one retry loop ----------------------------------------------------------------------
    def _run(self, call: Call, attempt: Callable[[RequestContext, float], Any]) -> Any:
        policy, timeouts, shared = self._options.retry, self._options.timeouts, self._shared
        started = now()
        waited = 0.0
        shared.budget.record_call()
        entry = shared.register(call.model)
        number = 1
        try:
            while True:
                ctx = call.context(number, policy.max_attempts, now() - started)
                remaining = timeouts.deadline - (now() - started)
                log_attempt("send", ctx)
                try:
                    if remaining <= 0:
                        raise LMStudioTimeout("call deadline passed", phase="deadline",
                                              limit=timeouts.deadline, context=ctx)
                    result = attempt(ctx, remaining)
                    if entry.cancelled:
                        # A blocking exchange cannot be interrupted midway; its answer is kept
                        # on the error rather than returned as if nothing had happened.
                        raise ModelSwitched(
                            "answer arrived after switch_model(inflight='cancel')",
                            context=ctx.at(elapsed=now() - started),
                            partial=_partial_from(result))
                    return result
                except ModelSwitched:
                    raise
                except LMStudioError as err:
                    elapsed = now() - started
                    if entry.cancelled:
                        raise ModelSwitched("cancelled by switch_model before an answer",
                                            context=ctx.at(elapsed=elapsed)) from err
                    wait = self._retry_wait(err, ctx, number, started, waited)
                    self._sleep(wait)
                    waited += wait
                    number += 1
        finally:
            shared.unregister(entry)

    def _request_json(self, call: Call) -> tuple[dict[str, Any], RequestContext, Timings]:
        timeouts = self._options.timeouts

        def attempt(ctx: RequestContext, remaining: float
                    ) -> tuple[dict[str, Any], RequestContext, Timings]:
            sent = now()
            try:
                response = self._http.request(
                    call.method, call.url, content=call.body, headers=dict(call.headers),
                    timeout=timeouts.httpx(remaining))
            except httpx.HTTPError as exc:
                raise transport_error(exc, ctx, timeouts, got_headers=False) from None
            return json_answer(ctx, response, sent, now())

        result: tuple[dict[str, Any], RequestContext, Timings] = self._run(call, attempt)
        return result

    # -- OpenAI-compatible endpoints ---------------------------------------------------------------
    def chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
             **params: Any) -> ChatResult:
        body, ctx, timings = self._request_json(self._chat_call(messages, model, params))
        return protocol.chat_result(ctx, body, timings)

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str | None = None,
                    include_usage: bool = True, **params: Any) -> ChatStream:
        """Use as ``with client.stream_chat(...) as stream:``; iterate; ``stream.result()``."""
        call = self._chat_call(messages, model, params, stream=True, include_usage=include_usage)
        return ChatStream(self, call, protocol.ChatStreamAssembler)

    def complete(self, prompt: str, *, model: str | None = None, **params: Any) -> ChatResult:
        call = self._completion_call(prompt, model, params, stream=False)
        body, ctx, timings = self._request_json(call)
        return protocol.chat_result(ctx, body, timings)

    def stream_complete(self, prompt: str, *, model: str | None = None, **params: Any
                        ) -> ChatStream:
        call = self._completion_call(prompt, model, params, stream=True)
        return ChatStream(self, call, protocol.ChatStreamAssembler)

    def embed(self, inputs: str | list[str], *, model: str | None = None) -> Embeddings:
        body, ctx, _ = self._request_json(self._embed_call(inputs, model))
        return embeddings_result(ctx, body)

    def respond(self, input: str | list[dict[str, Any]], *, model: str | None = None,
                previous_response_id: str | None = None, **params: Any) -> ResponseResult:
        """``POST /v1/responses``; pass the returned ``id`` as ``previous_response_id``."""
        call = self._respond_call(input, model, previous_response_id, params)
        body, ctx, _ = self._request_json(call)
        return response_result(ctx, body)

    def list_models(self) -> list[ModelInfo]:
        """``GET /v1/models`` (fresh; use ``catalog`` for the cached view)."""
        body, ctx, _ = self._request_json(self._call("GET", "/v1/models"))
        return parse_model_list(ctx, body)

    # -- native endpoints ------------------------------------------------------------------------
    def native_models(self) -> list[ModelInfo]:
        """``GET /api/v1/models``: every downloaded model with its loaded instances."""
        body, ctx, _ = self._request_json(self._call("GET", "/api/v1/models"))
        return parse_model_list(ctx, body)

    def v0_models(self) -> list[ModelInfo]:
        body, ctx, _ = self._request_json(self._call("GET", "/api/v0/models"))
        return parse_model_list(ctx, body)

    def load_model(self, model: str, **config: Any) -> dict[str, Any]:
        body, _, _ = self._request_json(self._load_call(model, config))
        self.catalog.invalidate()
        return body

    def unload_model(self, instance_id: str) -> dict[str, Any]:
        body, _, _ = self._request_json(self._unload_call(instance_id))
        self.catalog.invalidate()
        return body

    def native_chat(self, input: str | list[dict[str, Any]], *, model: str | None = None,
                    **params: Any) -> ChatResult:
        call = self._native_call(input, model, params, stream=False)
        body, ctx, timings = self._request_json(call)
        return protocol.native_chat_result(ctx, body, timings)

    def stream_native_chat(self, input: str | list[dict[str, Any]], *,
                           model: str | None = None, **params: Any) -> ChatStream:
        call = self._native_call(input, model, params, stream=True)
        return ChatStream(self, call, protocol.NativeChatAssembler)


def _partial_from(result: Any) -> PartialOutput:
    body = result[0] if isinstance(result, tuple) and result else None
    if not isinstance(body, dict):
        return PartialOutput()
    try:
        message = body["choices"][0].get("message") or {}
        return PartialOutput(text=message.get("content") or "", chunks=1, model=body.get("model"))
    except (KeyError, IndexError, TypeError, AttributeError):
        return PartialOutput(model=body.get("model"))


class ChatStream(StreamCore):
    """One streamed call (see ``AsyncChatStream``). Breaking out of the loop or leaving the
    ``with`` block closes the HTTP response, so the server stops generating."""

    def __init__(self, client: Client, call: Call, assembler_type: type[Any]) -> None:
        super().__init__(call, assembler_type, client._options.timeouts)
        self._client = client
        self._response: httpx.Response | None = None
        self._events: Iterator[StreamEvent] | None = None

    def __enter__(self) -> ChatStream:
        client, timeouts, call = self._client, self._timeouts, self._call
        self._started = now()

        def attempt(ctx: RequestContext, remaining: float) -> None:
            request = client._http.build_request(
                call.method, call.url, content=call.body, headers=dict(call.headers),
                timeout=timeouts.httpx(remaining))
            sent = now()
            try:
                response = client._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise transport_error(exc, ctx, timeouts, got_headers=False) from None
            if response.status_code >= 400 or "text/event-stream" not in response.headers.get(
                    "content-type", ""):
                try:
                    body = response.read()
                except httpx.HTTPError as exc:
                    raise transport_error(exc, ctx, timeouts, got_headers=True) from None
                finally:
                    response.close()
                raise not_a_stream(ctx, response.status_code, response.headers, body)
            # From here on a read timeout means the stream went quiet, not the server slow.
            request.extensions["timeout"]["read"] = min(timeouts.stream_idle, remaining)
            self._response = response
            self._assembler = self._assembler_type(ctx, sent)

        client._run(call, attempt)
        entry = self._entry = client._shared.register(call.model)
        # Closing the socket from the switching thread wakes a reader blocked on the next chunk.
        entry.cancel_hook = self._response.close if self._response is not None else None
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._entry is not None:
            self._client._shared.unregister(self._entry)
            self._entry = None
        if self._response is not None:
            self._response.close()

    def __iter__(self) -> Iterator[StreamEvent]:
        if self._assembler is None:
            raise RuntimeError("use 'with client.stream_chat(...) as stream' first")
        if self._events is None:
            self._events = self._iterate()
        return self._events

    def _iterate(self) -> Iterator[StreamEvent]:
        assembler, response, entry = self._assembler, self._response, self._entry
        assert assembler is not None and response is not None
        decoder = SSEDecoder()
        deadline_at = self._started + self._timeouts.deadline
        raw = response.iter_raw()
        try:
            while not assembler.done:
                try:
                    chunk = next(raw)
                except StopIteration:
                    break
                except httpx.ReadTimeout:
                    raise self._stalled() from None
                except (httpx.HTTPError, OSError, RuntimeError) as exc:
                    if entry is not None and entry.cancelled:
                        raise self._switched() from None
                    raise self._interrupted(
                        f"connection lost mid-stream: {type(exc).__name__}: {exc}") from None
                if entry is not None and entry.cancelled:
                    raise self._switched()
                t = now()
                for event in decoder.feed(chunk):
                    for delta in assembler.feed(event, t):
                        yield delta
                if t > deadline_at:
                    raise self._stalled(deadline=True)
            if entry is not None and entry.cancelled:  # the close woke the reader as an EOF
                raise self._switched()
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
            response.close()

    def result(self) -> ChatResult:
        """Drain what is left and return the assembled answer (or raise why it is not one)."""
        if self._result is None and self._error is None:
            for _ in self:
                pass
        if self._error is not None:
            raise self._error
        result: ChatResult = self._result
        return result
