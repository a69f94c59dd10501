"""The sans-IO protocol core: request bodies in, typed results and errors out, no I/O.

``Client``, ``AsyncClient`` and the Locust users only move bytes and read clocks; every rule about
what LM Studio's answers mean lives here once:

- ``error_from_response``: LM Studio's four error body shapes (string ``error``, OpenAI object,
  native object, HTML pages from proxies) and its status quirks mapped to the error tree;
- ``json_body``: a 200 is only a success if it is JSON and carries no ``error`` (LM Studio answers
  unknown endpoints with 200 ``{"error": "Unexpected endpoint or method. ..."}``);
- ``ChatStreamAssembler``: OpenAI-style chunks to typed deltas and one ``ChatResult``; complete
  only with a ``finish_reason`` *and* ``[DONE]`` (llama.cpp sends ``[DONE]`` after cutting a
  stream off, so ``[DONE]`` alone proves nothing);
- ``NativeChatAssembler``: the same for ``/api/v1/chat``'s named events, complete on ``chat.end``;
- ``chat_result``: a non-streamed answer is complete only with a ``finish_reason`` (LM Studio
  answers 200 with the partial text and ``finish_reason: null`` when a model is unloaded or
  JIT-evicted mid-generation);
- ``check_answer``: the semantic failures LM Studio users report (reasoning-only or empty replies,
  tool calls returned as text or without ids), and ``InlineThink``, which moves an inline
  ``<think>...</think>`` out of ``content`` into reasoning;
- ``rejection_reason``: which 4xx/5xx bodies are deterministic (template errors, tool JSON,
  context overflow) and so must never be retried.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any, NoReturn

from harness.client.errors import (
    AuthenticationError,
    BadResponse,
    BlankToolCallId,
    ContextOverflow,
    EmptyAnswer,
    HTTPStatusError,
    IncompleteAnswer,
    LMStudioError,
    ModelMismatch,
    ModelNotFound,
    PartialOutput,
    RateLimited,
    ReasoningOnly,
    RequestContext,
    ServerRejected,
    ServerStreamError,
    StreamInterrupted,
    ToolCallsAsText,
)
from harness.client.models import (
    ChatResult,
    ProgressEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Timings,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from harness.client.sse import SSEEvent
from harness.client.validation import same_model
from harness.untrusted import scrub_data

try:  # orjson parses a stream chunk about twice as fast (benchmarks/bench_streaming.py)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; json stays the fallback
    _loads = json.loads  # type: ignore[assignment]



def _lenient_loads(data: str | bytes) -> Any:
    """What orjson refused, read by the stdlib: a lone-surrogate escape (``"\\ud800"``, sent by a
    broken tokenizer) is valid JSON text, so the chunk is kept with U+FFFD in its place; so are
    NaN and integers over 64 bits. None when the stdlib refuses it too."""
    try:
        return scrub_data(json.loads(data))
    except (ValueError, RecursionError):
        return None


_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)

# Bodies that say the same request will fail the same way again (LMSTUDIO_API.md §2.2, §8 #7-9,
# #20): retrying them only multiplies the load.
_REJECTIONS = (
    ("context_overflow", re.compile(
        r"does not fit in context|context length (?:only supports|exceeded)|context size has "
        r"been exceeded|tokens to keep from the initial prompt is greater|context the overflows|"
        r"context overflow|exceeds? (?:the )?(?:model'?s? )?context|maximum context length",
        re.IGNORECASE)),
    ("template", re.compile(
        r"jinja|chat template|prompt template|error rendering prompt|template error",
        re.IGNORECASE)),
    ("tool_json", re.compile(
        r"json\.parse|tool[ _-]?call[^.]{0,60}(?:json|pars)|failed to parse tool|"
        r"invalid tool[ _-]?call|unexpected token .{0,40} in json", re.IGNORECASE)),
)


def rejection_reason(message: str | None) -> str | None:
    """``context_overflow``, ``template`` or ``tool_json`` when a server message says the request
    itself is at fault, else None."""
    if not message:
        return None
    for reason, pattern in _REJECTIONS:
        if pattern.search(message):
            return reason
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns None when absent or unparseable (the policy then uses its own backoff); a date in the
    past gives 0. Capping is the policy's job, not the parser's.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _server_message(body: bytes) -> tuple[str | None, str | None, Any]:
    """(message, code, parsed JSON or None) from any of LM Studio's error body shapes."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(parsed, Mapping):
        return None, None, parsed
    err = parsed.get("error")
    if isinstance(err, str):
        return err, None, parsed
    if isinstance(err, Mapping):
        message = err.get("message")
        code = err.get("code") or err.get("type")
        return (str(message) if message is not None else json.dumps(err)), code, parsed
    if isinstance(parsed.get("message"), str):
        return parsed["message"], None, parsed
    return None, None, parsed


def _looks_html(body: bytes, content_type: str) -> bool:
    head = body[:512].lstrip().lower()
    return "text/html" in content_type or head.startswith((b"<!doctype html", b"<html"))


def _html_summary(body: bytes) -> str:
    match = _HTML_TITLE.search(body[:4096])
    title = match.group(1).decode("utf-8", "replace").strip() if match else ""
    return f"HTML page instead of JSON{': ' + title if title else ''}"


def error_from_response(
    ctx: RequestContext,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
) -> LMStudioError:
    """The typed error for a non-2xx response."""
    content_type = headers.get("content-type", "")
    message, code, _ = _server_message(body)
    if message is None and _looks_html(body, content_type):
        message = _html_summary(body)
    elif message is None:
        snippet = body[:200].decode("utf-8", "replace").strip()
        message = snippet or "empty body"
    kw: dict[str, Any] = {"context": ctx, "status": status, "server_message": message,
                          "retry_after": parse_retry_after(headers.get("retry-after"), now)}
    if status == 429:
        return RateLimited("rate limited (429)", **kw)
    if status == 401:
        return AuthenticationError("authentication required or refused (401)", **kw)
    lowered = message.lower()
    if code == "model_not_found" or (status in (400, 404) and "no models loaded" in lowered):
        return ModelNotFound(f"model not found ({status})", available=_listed_models(message), **kw)
    reason = rejection_reason(message)
    if reason == "context_overflow":
        return ContextOverflow(f"prompt does not fit the model's context ({status})", **kw)
    if reason is not None:
        what = "chat template error" if reason == "template" else "tool-call JSON rejected"
        return ServerRejected(f"{what} ({status}); the same request fails again, not retried",
                              reason=reason, **kw)
    kind = "client error" if status < 500 else "server error"
    return HTTPStatusError(f"{kind} ({status})", **kw)


def _listed_models(message: str) -> tuple[str, ...]:
    """LM Studio's 404 lists "Your models:" one per line; keep them for the error."""
    _, sep, tail = message.partition("Your models:")
    if not sep:
        return ()
    return tuple(line.strip(" -\t") for line in tail.splitlines() if line.strip(" -\t"))[:10]


def _not_json(ctx: RequestContext, headers: Mapping[str, str], body: bytes) -> NoReturn:
    if _looks_html(body, headers.get("content-type", "")):
        raise BadResponse(_html_summary(body), context=ctx, status=200)
    snippet = body[:120].decode("utf-8", "replace")
    raise BadResponse(f"response is not JSON: {snippet!r}", context=ctx, status=200)


def json_body(ctx: RequestContext, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Decode a 2xx body, refusing the 200s that are really errors."""
    try:
        parsed = _loads(body)
    except ValueError:
        parsed = _lenient_loads(body)
        if parsed is None:
            parsed = _not_json(ctx, headers, body)
    if not isinstance(parsed, dict):
        raise BadResponse(f"expected a JSON object, got {type(parsed).__name__}", context=ctx)
    if parsed.get("error"):
        message, code, _ = _server_message(body)
        if code == "model_not_found":
            raise ModelNotFound("model not found (200 with error body)", context=ctx,
                                status=200, server_message=message)
        raise BadResponse("200 response carries an error", context=ctx, status=200,
                          server_message=message)
    return parsed


def check_model(ctx: RequestContext, answered: str | None, partial: PartialOutput | None = None
                ) -> None:
    if ctx.model and answered and not same_model(ctx.model, answered):
        raise ModelMismatch(
            f"pinned model {ctx.model!r} but the answer came from {answered!r}",
            answered_by=answered,
            partial=partial,
            context=ctx,
        )


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    usage = Usage.model_validate(raw)
    details = raw.get("completion_tokens_details")
    if isinstance(details, dict):
        usage.reasoning_tokens = int(details.get("reasoning_tokens") or 0)
    return usage


def _tool_calls(raw: Any) -> list[ToolCall]:
    calls = []
    for item in raw or ():
        fn = item.get("function") or {}
        args = fn.get("arguments", "")
        calls.append(ToolCall(
            id=str(item.get("id") or ""),
            name=fn.get("name") or "",
            arguments=args if isinstance(args, str) else json.dumps(args),
        ))
    return calls


def chat_result(ctx: RequestContext, body: dict[str, Any], timings: Timings, *,
                tools_offered: bool = False) -> ChatResult:
    """A non-streaming ``chat.completion`` (or ``text_completion``) body as a ``ChatResult``.

    Complete only with a ``finish_reason``: without one the answer was cut off (an unload or a
    JIT auto-evict), and ``IncompleteAnswer`` keeps the partial text instead of returning it."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadResponse("response has no choices", context=ctx, status=200)
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, dict):
        text = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        calls = _tool_calls(message.get("tool_calls"))
    else:
        text, reasoning, calls = choice.get("text") or "", "", []
    if not isinstance(text, str) or not isinstance(reasoning, str):
        raise BadResponse("message content is not a string", context=ctx, status=200)
    if "<think>" in text:
        text, inline = split_inline_think(text)
        reasoning += inline
    model = body.get("model") or ""
    finish = choice.get("finish_reason")
    if not finish or (ctx.model and model and not same_model(ctx.model, model)):
        partial = PartialOutput(text=text, reasoning=reasoning,
                                tool_calls=[c.to_message() for c in calls], chunks=1,
                                model=model, finish_reason=finish)
        check_model(ctx, model, partial)
        raise IncompleteAnswer("answer has no finish_reason: cut off mid-generation (a model "
                               "unload or JIT auto-evict)", context=ctx, status=200,
                               partial=partial)
    result = ChatResult(
        text=text,
        reasoning=reasoning,
        model=model,
        finish_reason=finish,
        usage=_usage(body.get("usage")),
        tool_calls=calls,
        timings=timings,
        id=body.get("id"),
        stats=body.get("stats") or None,
        engine_timings=body["timings"] if isinstance(body.get("timings"), dict) else None,
    )
    check_answer(ctx, result, tools_offered=tools_offered)
    return result


_TOOL_TEXT = re.compile(
    r"<tool_call>|<\|tool_call|\[TOOL_CALLS\]|<function[=>]|<\|python_tag\|>|"
    r"^\s*(?:```(?:json)?\s*)?[\[{]\s*\{?\s*\"(?:name|function)\"\s*:\s*\"[^\"]+\"\s*,\s*"
    r"\"(?:arguments|parameters)\"", re.IGNORECASE)


def check_answer(ctx: RequestContext, result: ChatResult, *, tools_offered: bool = False,
                 check_ids: bool = True) -> None:
    """Raise the ``UnusableAnswer`` a complete-looking answer really is, if any.

    A ``finish_reason`` of ``length`` is left alone: the caller capped the tokens and the
    answer says so itself."""
    if result.tool_calls:
        if check_ids and any(not call.id for call in result.tool_calls):
            names = ", ".join(repr(c.name) for c in result.tool_calls if not c.id)
            raise BlankToolCallId(f"tool call {names} has a blank id (echoing it back fails)",
                                  context=ctx, status=200, partial=_as_partial(result))
        return
    if result.finish_reason == "length":
        return
    if not result.text.strip():
        if result.reasoning.strip():
            raise ReasoningOnly(
                f"reasoning only ({len(result.reasoning)} chars), then an empty answer",
                context=ctx, status=200, partial=_as_partial(result))
        raise EmptyAnswer("empty answer: no text, reasoning or tool call (LM Studio's GGUF "
                          "engine answers a prompt over the context this way)",
                          context=ctx, status=200, partial=_as_partial(result))
    if tools_offered and _TOOL_TEXT.search(result.text):
        raise ToolCallsAsText("tools were offered and the tool call came back as plain text, "
                              "not tool_calls", context=ctx, status=200,
                              partial=_as_partial(result))


def _as_partial(result: ChatResult) -> PartialOutput:
    return PartialOutput(text=result.text, reasoning=result.reasoning,
                         tool_calls=[c.to_message() for c in result.tool_calls],
                         chunks=result.timings.chunks, model=result.model,
                         finish_reason=result.finish_reason)


def partial_from_body(body: Any) -> PartialOutput:
    """What a plain answer held, for an error that keeps it (an answer that arrived after
    ``switch_model(inflight="cancel")``): read leniently, since it is not returned."""
    if not isinstance(body, dict):
        return PartialOutput()
    try:
        message = body["choices"][0].get("message") or {}
        return PartialOutput(text=message.get("content") or "", chunks=1, model=body.get("model"))
    except (KeyError, IndexError, TypeError, AttributeError):
        return PartialOutput(model=body.get("model"))


_OPEN, _CLOSE = "<think>", "</think>"


def split_inline_think(text: str) -> tuple[str, str]:
    """``(content, reasoning)`` from a content that starts with ``<think>...</think>`` (LM
    Studio without "separate reasoning_content"). An unclosed block is all reasoning."""
    stripped = text.lstrip()
    if not stripped.startswith(_OPEN):
        return text, ""
    inner, sep, rest = stripped[len(_OPEN):].partition(_CLOSE)
    if not sep:
        return "", inner
    return rest.lstrip(), inner


class InlineThink:
    """The streaming form of ``split_inline_think``: content pieces in, ``(is_reasoning, text)``
    pieces out, with a tag split across deltas (``"<thi"``, ``"nk>"``) held back until it is
    decided. Once the content is known not to start with ``<think>`` it passes straight
    through."""

    __slots__ = ("buf", "state")
    UNDECIDED, THINKING, AFTER, CONTENT = 0, 1, 2, 3

    def __init__(self) -> None:
        self.state = self.UNDECIDED
        self.buf = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        state = self.state
        if state == self.CONTENT:
            return [(False, text)]
        if state == self.AFTER:  # drop the whitespace between </think> and the answer
            rest = text.lstrip()
            if not rest:
                return []
            self.state = self.CONTENT
            return [(False, rest)]
        buf = self.buf + text
        if state == self.UNDECIDED:
            head = buf.lstrip()
            if head.startswith(_OPEN):
                self.state, buf = self.THINKING, head[len(_OPEN):]
            elif not head or _OPEN.startswith(head):
                self.buf = buf
                return []
            else:
                self.state, self.buf = self.CONTENT, ""
                return [(False, buf)]
        index = buf.find(_CLOSE)
        if index >= 0:
            self.state, self.buf = self.AFTER, ""
            out = [(True, buf[:index])] if index else []
            out.extend(self.feed(buf[index + len(_CLOSE):]))
            return out
        hold = next((n for n in range(min(len(buf), len(_CLOSE) - 1), 0, -1)
                     if _CLOSE.startswith(buf[-n:])), 0)
        self.buf = buf[len(buf) - hold:]
        emit = buf[:len(buf) - hold]
        return [(True, emit)] if emit else []

    def flush(self) -> list[tuple[bool, str]]:
        buf, self.buf = self.buf, ""
        if not buf:
            return []
        return [(self.state == self.THINKING, buf)] if buf.strip() else []


_CONTENT = InlineThink.CONTENT


class _Accumulator:
    """What a stream has delivered so far, shared by both assemblers."""

    __slots__ = (
        "_calls",
        "_reasoning",
        "_text",
        "chunks",
        "engine_timings",
        "finish_reason",
        "first_at",
        "gaps",
        "last_at",
        "model",
        "started",
        "usage",
    )

    def __init__(self, started: float) -> None:
        self.started = started
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self.chunks = 0
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self.engine_timings: dict[str, Any] | None = None
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.gaps: list[float] = []

    def mark(self, now: float, deltas: int = 1) -> None:
        """``deltas`` deltas arrived at ``now`` (one read): the first is the first token or a
        gap since the last, the others come 0 s after it."""
        if self.first_at is None:
            self.first_at = now
        else:
            self.gaps.append(now - self.last_at)  # type: ignore[operator]
        if deltas > 1:
            self.gaps.extend([0.0] * (deltas - 1))
        self.last_at = now

    def partial(self) -> PartialOutput:
        return PartialOutput(
            text="".join(self._text),
            reasoning="".join(self._reasoning),
            tool_calls=[dict(c) for c in self._calls.values()],
            chunks=self.chunks,
            model=self.model,
            finish_reason=self.finish_reason,
        )

    def timings(self, now: float) -> Timings:
        ttft = None if self.first_at is None else self.first_at - self.started
        return Timings(ttft=ttft, total=now - self.started, gaps=self.gaps, chunks=self.chunks)

    def result(self, now: float, stats: dict[str, Any] | None = None) -> ChatResult:
        calls = [
            ToolCall(id=c["id"] or "", name=c["name"] or "", arguments=c["arguments"])
            for _, c in sorted(self._calls.items())
        ]
        return ChatResult(
            text="".join(self._text),
            reasoning="".join(self._reasoning),
            model=self.model or "",
            finish_reason=self.finish_reason,
            usage=self.usage,
            tool_calls=calls,
            timings=self.timings(now),
            stats=stats,
            engine_timings=self.engine_timings,
        )

    def add_call_fragment(self, index: int, call_id: str | None, name: str | None,
                          arguments: str) -> None:
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = {"index": index, "id": None, "name": None, "arguments": ""}
        if call_id:
            call["id"] = call_id
        if name:
            call["name"] = name
        call["arguments"] += arguments


class _Assembler:
    """A stream being assembled: its context, what arrived so far, and whether it ended."""

    def __init__(self, ctx: RequestContext, started: float) -> None:
        self.ctx = ctx
        self.acc = _Accumulator(started)
        self.done = False

    @property
    def chunks(self) -> int:
        return self.acc.chunks

    def _ctx(self, now: float) -> RequestContext:
        """The context at ``now``: ``ctx.elapsed`` was measured when the request was sent."""
        return self.ctx.at(elapsed=self.ctx.elapsed + (now - self.acc.started))

    def partial(self) -> PartialOutput:
        return self.acc.partial()

    def feed(self, event: SSEEvent, now: float) -> list[StreamEvent]:
        """One SSE event's typed deltas: each assembler's own rules."""
        raise NotImplementedError

    def feed_data(self, data: list[bytes], now: float) -> list[StreamEvent]:
        """The data of unnamed events, still bytes (``SSEDecoder.feed_messages``): the same as
        ``feed`` with each as an ``SSEEvent``."""
        out: list[StreamEvent] = []
        for item in data:
            out.extend(self.feed(SSEEvent(item.decode("utf-8", "replace")), now))
        return out


class ChatStreamAssembler(_Assembler):
    """Feed SSE events of ``/v1/chat/completions`` or ``/v1/completions``; get typed deltas.

    ``finish(now)`` returns the ``ChatResult`` only when the server's end signal arrived (a
    ``finish_reason`` and ``[DONE]``); otherwise it raises ``StreamInterrupted`` with everything
    received kept on the exception. Whether a complete answer is usable is ``check_answer``'s
    question (asked by ``stream.ResponseReader``; a load test measures such answers all the same).
    Content that opens with ``<think>`` is routed to reasoning until ``</think>``.
    """

    def __init__(self, ctx: RequestContext, started: float) -> None:
        super().__init__(ctx, started)
        self._model_checked = ctx.model is None
        self._think = InlineThink()

    def feed(self, event: SSEEvent, now: float) -> list[StreamEvent]:
        data = event.data
        if event.event == "error":
            self._raise_server_error(data, now)
        if data == "[DONE]":
            self.done = True
            return []
        if self.done:
            return []
        return self._chunk(self._parse(data, now), data, now)

    def feed_data(self, data: list[bytes], now: float) -> list[StreamEvent]:
        """``feed`` for the data of unnamed events, still bytes (``SSEDecoder.feed_messages``).

        The per-chunk cost of a stream is this loop, so the common chunk (one piece of content
        and nothing else, model already checked) is handled inline: no ``SSEEvent``, no
        decoding (orjson reads the bytes), no call per chunk. Anything else goes through
        ``_chunk``, the same rules as ``feed``; the counts kept locally are settled first, so
        an error raised there carries everything received."""
        out: list[StreamEvent] = []
        if self.done:
            return out
        acc, loads, append = self.acc, _loads, out.append
        text_parts, reasoning_parts = acc._text, acc._reasoning
        # Inline only once the model is checked; content only once it is known not to open
        # <think> (until then it goes through ``InlineThink``).
        settled, plain = self._settled()
        hot = 0  # inline deltas not yet counted in ``acc``
        for raw in data:
            try:
                chunk = loads(raw)
            except ValueError:
                if raw == b"[DONE]":  # not JSON: looked for only when orjson refuses a chunk
                    self.done = True
                    break
                chunk = None
            if settled and chunk.__class__ is dict and not chunk.get("error") \
                    and not chunk.get("usage"):
                engine_timings = chunk.get("timings")  # as in ``_chunk``
                if engine_timings.__class__ is dict:
                    acc.engine_timings = engine_timings
                choices = chunk.get("choices")
                if choices.__class__ is list and choices:
                    choice = choices[0]
                    if choice.__class__ is dict and choice.get("finish_reason") is None:
                        delta = choice.get("delta")
                        if delta is None:  # a text_completion chunk
                            text = choice.get("text")
                            if text.__class__ is str and text and plain:
                                text_parts.append(text)
                                append(TextDelta(text))
                                hot += 1
                                continue
                        elif delta.__class__ is dict and len(delta) == 1:
                            text = delta.get("content")
                            if text is not None:
                                if text.__class__ is str and text and plain:
                                    text_parts.append(text)
                                    append(TextDelta(text))
                                    hot += 1
                                    continue
                            else:  # a reasoning model's thinking, as long as its answer
                                text = delta.get("reasoning_content") or delta.get("reasoning")
                                if text.__class__ is str and text:
                                    reasoning_parts.append(text)
                                    append(ReasoningDelta(text))
                                    hot += 1
                                    continue
            if hot:
                acc.chunks += hot
                acc.mark(now, hot)
                hot = 0
            decoded = raw.decode("utf-8", "replace")
            if chunk is None:
                chunk = self._parse(decoded, now)
            out.extend(self._chunk(chunk, decoded, now))
            settled, plain = self._settled()
        if hot:
            acc.chunks += hot
            acc.mark(now, hot)
        return out

    def _settled(self) -> tuple[bool, bool]:
        """(model checked, content known not to open <think>): ``feed_data``'s inline cases."""
        return (self._model_checked and self.acc.model is not None,
                self._think.state == _CONTENT)

    def _parse(self, data: str, now: float) -> Any:
        try:
            return _loads(data)
        except ValueError:
            chunk = _lenient_loads(data)
            if chunk is None:
                raise StreamInterrupted(f"malformed stream data: {data[:80]!r}",
                                        context=self._ctx(now), partial=self.partial()) from None
            return chunk

    def _chunk(self, chunk: Any, data: str, now: float) -> list[StreamEvent]:
        """One parsed chunk of the stream (``data`` is its text, for errors)."""
        if not isinstance(chunk, dict):
            raise StreamInterrupted(f"stream frame is not an object: {data[:80]!r}",
                                    context=self._ctx(now), partial=self.partial())
        if chunk.get("error"):
            self._raise_server_error(data, now)
        acc = self.acc
        acc.chunks += 1
        if not self._model_checked and chunk.get("model"):
            acc.model = chunk["model"]
            self._model_checked = True
            check_model(self._ctx(now), acc.model, self.partial())
        elif acc.model is None:
            acc.model = chunk.get("model")
        usage = chunk.get("usage")
        if usage:
            acc.usage = _usage(usage)
        engine_timings = chunk.get("timings")  # llama.cpp's server, on its last chunk
        if engine_timings.__class__ is dict:
            acc.engine_timings = engine_timings
        choices = chunk.get("choices")
        if not choices:
            return []
        choice = choices[0]
        delta = choice.get("delta")
        out: list[StreamEvent] = []
        if delta is None:  # text_completion chunk
            text = choice.get("text")
            if text:
                self._content(text, out)
        elif delta:
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                acc._reasoning.append(reasoning)
                out.append(ReasoningDelta(reasoning))
            text = delta.get("content")
            if text:
                self._content(text, out)
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    fn = call.get("function") or {}
                    index = call.get("index")
                    if index is None:  # no index: an id starts a new call, else continue the last
                        index = len(acc._calls) if call.get("id") else max(len(acc._calls) - 1, 0)
                    args = fn.get("arguments") or ""
                    if not isinstance(args, str):
                        args = json.dumps(args)
                    acc.add_call_fragment(index, call.get("id"), fn.get("name"), args)
                    out.append(ToolCallDelta(index, call.get("id"), fn.get("name"), args))
        finish = choice.get("finish_reason")
        if finish:
            acc.finish_reason = finish
        if out:
            acc.mark(now)
        return out

    def _content(self, text: str, out: list[StreamEvent]) -> None:
        acc = self.acc
        if self._think.state == InlineThink.CONTENT:  # the hot path: no tag to look for
            acc._text.append(text)
            out.append(TextDelta(text))
            return
        for is_reasoning, piece in self._think.feed(text):
            if is_reasoning:
                acc._reasoning.append(piece)
                out.append(ReasoningDelta(piece))
            else:
                acc._text.append(piece)
                out.append(TextDelta(piece))

    def _raise_server_error(self, data: str, now: float) -> None:
        message, _, _ = _server_message(data.encode())
        text = f"server reported an error inside the stream: {message or data[:200]}"
        if rejection_reason(message) == "context_overflow":
            raise ContextOverflow(text, context=self._ctx(now), status=200, server_message=message,
                                  partial=self.partial())
        raise ServerStreamError(text, context=self._ctx(now), server_message=message,
                                partial=self.partial())

    def finish(self, now: float, *, eof_with_partial_event: bool = False) -> ChatResult:
        acc = self.acc
        for is_reasoning, piece in self._think.flush():
            (acc._reasoning if is_reasoning else acc._text).append(piece)
        if self.done and acc.finish_reason:
            return acc.result(now)
        if self.done:
            why = "stream sent [DONE] but no chunk carried a finish_reason (cut off)"
        elif acc.finish_reason:
            why = f"stream ended after finish_reason={acc.finish_reason!r} but without [DONE]"
        elif eof_with_partial_event:
            why = "stream ended in the middle of an event"
        else:
            why = "stream ended before the server's end signal"
        raise StreamInterrupted(why, context=self._ctx(now), partial=acc.partial())


class NativeChatAssembler(_Assembler):
    """``/api/v1/chat`` named events to typed deltas; complete only on ``chat.end``.

    LM Studio sends ``error`` and then still ``chat.end`` with what was generated; that is a
    failure with partial output, not a success.
    """

    def __init__(self, ctx: RequestContext, started: float) -> None:
        super().__init__(ctx, started)
        self.error: str | None = None
        self.end_result: dict[str, Any] | None = None

    def feed(self, event: SSEEvent, now: float) -> list[StreamEvent]:
        try:
            data = json.loads(event.data) if event.data else {}
        except ValueError:
            raise StreamInterrupted(f"malformed stream data: {event.data[:80]!r}",
                                    context=self._ctx(now), partial=self.partial()) from None
        kind = event.event if event.event != "message" else data.get("type", "message")
        acc = self.acc
        acc.chunks += 1
        out: list[StreamEvent] = []
        if kind == "chat.start":
            acc.model = data.get("model_instance_id")
            check_model(self._ctx(now), acc.model, self.partial())
        elif kind == "message.delta":
            text = data.get("content") or ""
            if text:
                acc._text.append(text)
                out.append(TextDelta(text))
        elif kind == "reasoning.delta":
            text = data.get("content") or ""
            if text:
                acc._reasoning.append(text)
                out.append(ReasoningDelta(text))
        elif kind == "tool_call.arguments":
            args = json.dumps(data.get("arguments") or {})
            index = len(acc._calls)
            acc.add_call_fragment(index, data.get("id"), data.get("tool"), args)
            out.append(ToolCallDelta(index, data.get("id"), data.get("tool"), args))
        elif kind.endswith(".progress"):
            return [ProgressEvent(kind, float(data.get("progress") or 0.0), data)]
        elif kind == "error":
            err = data.get("error")
            self.error = (err.get("message") if isinstance(err, Mapping) else str(err)) or "error"
        elif kind == "chat.end":
            self.done = True
            result = data.get("result")
            self.end_result = result if isinstance(result, dict) else {}
            acc.finish_reason = "stop"
        if out:
            acc.mark(now)
        return out

    def finish(self, now: float, *, eof_with_partial_event: bool = False) -> ChatResult:
        if self.error is not None:
            kind = (ContextOverflow if rejection_reason(self.error) == "context_overflow"
                    else ServerStreamError)
            raise kind(
                f"server reported an error inside the stream: {self.error}",
                context=self._ctx(now), server_message=self.error, partial=self.partial(),
            )
        if not self.done:
            raise StreamInterrupted("stream ended before chat.end", context=self._ctx(now),
                                    partial=self.partial())
        stats = (self.end_result or {}).get("stats")
        return self.acc.result(now, stats=stats if isinstance(stats, dict) else None)


def native_chat_result(ctx: RequestContext, body: dict[str, Any], timings: Timings) -> ChatResult:
    """A non-streaming ``/api/v1/chat`` body as a ``ChatResult``."""
    text, reasoning, calls = [], [], []
    for item in body.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            text.append(item.get("content") or "")
        elif kind == "reasoning":
            reasoning.append(item.get("content") or "")
        elif kind == "tool_call":
            calls.append(ToolCall(name=item.get("tool") or "",
                                  arguments=json.dumps(item.get("arguments") or {})))
    model = body.get("model_instance_id") or ""
    check_model(ctx, model)
    result = ChatResult(text="".join(text), reasoning="".join(reasoning), model=model,
                        finish_reason="stop", tool_calls=calls, timings=timings,
                        id=body.get("response_id"), stats=body.get("stats"))
    check_answer(ctx, result, check_ids=False)
    return result
