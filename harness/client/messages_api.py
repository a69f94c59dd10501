"""``POST /v1/messages``: LM Studio's Anthropic-compatible endpoint, read by the same call layer.

Claude Code and other Anthropic clients talk to LM Studio here, so the suites must be able to
judge streams on this endpoint as on ``/v1/chat/completions``. The request is Anthropic's
(``max_tokens`` is required there, so it has a default); the answer becomes the same
``ChatResult``: ``text`` blocks are the text, ``thinking`` blocks the reasoning, ``tool_use``
blocks the tool calls, and ``stop_reason`` maps to OpenAI's finish reasons (``end_turn`` ->
``stop``, ``max_tokens`` -> ``length``, ``tool_use`` -> ``tool_calls``). A stream is complete
only with ``message_stop`` after a ``message_delta`` that carries a ``stop_reason``; an
``error`` event raises at once, with the partial output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.client import protocol
from harness.client.errors import (
    ContextOverflow,
    PartialOutput,
    RequestContext,
    ServerStreamError,
    StreamInterrupted,
    ValidationError,
)
from harness.client.models import (
    ChatResult,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Timings,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from harness.client.request import Call, prepare
from harness.client.sse import SSEEvent

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "stop"}
DEFAULT_MAX_TOKENS = 1024


def messages_call(base_url: str, messages: Any, model: str | None, params: dict[str, Any], *,
                  stream: bool) -> Call:
    """``POST /v1/messages`` with Anthropic's body; ``max_tokens`` defaults to 1024."""
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages", "must be a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise ValidationError(f"messages[{i}]", "needs role 'user' or 'assistant'")
    payload = {"max_tokens": DEFAULT_MAX_TOKENS, **params, "messages": messages}
    return prepare(base_url, "POST", "/v1/messages", payload=payload, model=model,
                   needs_model=True, stream="messages" if stream else None)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    prompt, completion = int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)


def messages_result(ctx: RequestContext, body: dict[str, Any], timings: Timings, *,
                    tools_offered: bool = False) -> ChatResult:
    """A non-streamed ``message`` object as a ``ChatResult`` (then the answer checks)."""
    text, reasoning, calls = [], [], []
    for block in body.get("content") or ():
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            calls.append(ToolCall(id=str(block.get("id") or ""), name=str(block.get("name") or ""),
                                  arguments=json.dumps(block.get("input") or {})))
    model = str(body.get("model") or "")
    protocol.check_model(ctx, model)
    stop = body.get("stop_reason")
    result = ChatResult(text="".join(text), reasoning="".join(reasoning), model=model,
                        finish_reason=FINISH_REASONS.get(stop, stop) if stop else None,
                        usage=_usage(body.get("usage")), tool_calls=calls, timings=timings,
                        id=body.get("id"))
    if result.finish_reason is None:
        raise StreamInterrupted("message has no stop_reason (cut off)", context=ctx,
                                partial=PartialOutput(text=result.text,
                                                      reasoning=result.reasoning, model=model))
    protocol.check_answer(ctx, result, tools_offered=tools_offered)
    return result


class MessagesAssembler(protocol._Assembler):
    """Anthropic SSE events to typed deltas; complete on ``message_stop``."""

    def __init__(self, ctx: RequestContext, started: float) -> None:
        super().__init__(ctx, started)
        self.message_id: str | None = None

    def feed(self, event: SSEEvent, now: float) -> list[StreamEvent]:
        try:
            data = json.loads(event.data) if event.data else {}
        except ValueError:
            raise StreamInterrupted(f"malformed stream data: {event.data[:80]!r}",
                                    context=self._ctx(now), partial=self.partial()) from None
        if not isinstance(data, dict):
            raise StreamInterrupted(f"stream data is not an object: {event.data[:80]!r}",
                                    context=self._ctx(now), partial=self.partial())
        kind = event.event if event.event != "message" else str(data.get("type", ""))
        acc = self.acc
        acc.chunks += 1
        out: list[StreamEvent] = []
        if kind == "message_start":
            message = data.get("message") or {}
            acc.model = message.get("model")
            self.message_id = message.get("id")
            acc.usage = _usage(message.get("usage"))
            protocol.check_model(self._ctx(now), acc.model, self.partial())
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = int(data.get("index") or 0)
                acc.add_call_fragment(index, block.get("id"), block.get("name"), "")
                out.append(ToolCallDelta(index, block.get("id"), block.get("name"), ""))
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                acc._text.append(delta["text"])
                out.append(TextDelta(delta["text"]))
            elif dtype == "thinking_delta" and delta.get("thinking"):
                acc._reasoning.append(delta["thinking"])
                out.append(ReasoningDelta(delta["thinking"]))
            elif dtype == "input_json_delta":
                index = int(data.get("index") or 0)
                piece = str(delta.get("partial_json") or "")
                acc.add_call_fragment(index, None, None, piece)
                out.append(ToolCallDelta(index, None, None, piece))
        elif kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                acc.finish_reason = FINISH_REASONS.get(stop, stop)
            usage = data.get("usage") or {}
            if acc.usage is not None and isinstance(usage.get("output_tokens"), int):
                acc.usage.completion_tokens = usage["output_tokens"]
                acc.usage.total_tokens = acc.usage.prompt_tokens + usage["output_tokens"]
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = data.get("error")
            message = (err.get("message") if isinstance(err, Mapping) else None) or str(data)
            text = f"server reported an error inside the stream: {message}"
            if protocol.rejection_reason(message) == "context_overflow":
                raise ContextOverflow(text, context=self._ctx(now), status=200,
                                      server_message=message, partial=self.partial())
            raise ServerStreamError(text, context=self._ctx(now), server_message=message,
                                    partial=self.partial())
        if out:
            acc.mark(now)
        return out

    def finish(self, now: float, *, eof_with_partial_event: bool = False) -> ChatResult:
        acc = self.acc
        if self.done and acc.finish_reason:
            # Arguments arrive as JSON text pieces; the ids come with the block start.
            result = acc.result(now)
            result.id = self.message_id
            return result
        why = ("stream ended with message_stop but no stop_reason" if self.done else
               "stream ended in the middle of an event" if eof_with_partial_event else
               "stream ended before message_stop")
        raise StreamInterrupted(why, context=self._ctx(now), partial=acc.partial())
