"""``/api/v1/chat`` results that keep what the native API adds: the ``response_id`` of a
stateful chat and the server-side tool calls (MCP ``integrations``).

LM Studio runs the tools itself and reports them as ``tool_call.start`` / ``.arguments`` /
``.success`` / ``.failure`` events (DOC streaming-events.md) and as ``tool_call`` /
``invalid_tool_call`` output items. A streamed chat's ``ChatResult`` used to drop both the id
(needed to continue the chat with ``previous_response_id``) and the tool outcomes; here the
stream yields a ``ToolEvent`` per event and the result is a ``NativeChatResult`` carrying
``response_id`` and ``tool_events``, streamed or not alike.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from harness.client import protocol
from harness.client.errors import RequestContext
from harness.client.models import ChatResult, StreamEvent, Timings, ToolEvent
from harness.client.sse import SSEEvent


class NativeChatResult(ChatResult):
    """A ``ChatResult`` plus the native chat's ``response_id`` (also in ``id``) and the
    server-side tool calls in order."""

    response_id: str | None = None
    tool_events: list[ToolEvent] = Field(default_factory=list)


def _event(kind: str, data: dict[str, Any]) -> ToolEvent:
    raw = data.get("metadata")
    metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
    arguments = data.get("arguments", metadata.get("arguments"))
    return ToolEvent(type=kind, tool=data.get("tool") or metadata.get("tool_name"),
                     arguments=arguments if isinstance(arguments, dict) else None,
                     output=data.get("output"), reason=data.get("reason"),
                     provider_info=data.get("provider_info"))


class NativeToolAssembler(protocol.NativeChatAssembler):
    """The native assembler, also yielding ``ToolEvent`` and keeping ``response_id``."""

    def __init__(self, ctx: RequestContext, started: float) -> None:
        super().__init__(ctx, started)
        self.tool_events: list[ToolEvent] = []

    def feed(self, event: SSEEvent, now: float) -> list[StreamEvent]:
        out = super().feed(event, now)
        kind = event.event
        if kind.startswith("tool_call."):
            try:
                data = json.loads(event.data) if event.data else {}
            except ValueError:  # the parent already raised for malformed data
                data = {}
            tool_event = _event(kind, data if isinstance(data, dict) else {})
            self.tool_events.append(tool_event)
            out.append(tool_event)
        return out

    def finish(self, now: float, *, eof_with_partial_event: bool = False) -> ChatResult:
        result = super().finish(now, eof_with_partial_event=eof_with_partial_event)
        return _with_native(result, (self.end_result or {}).get("response_id"),
                            self.tool_events)


def _with_native(result: ChatResult, response_id: Any, events: list[ToolEvent]
                 ) -> NativeChatResult:
    values = {k: v for k, v in dict(result).items() if k != "id"}
    rid = response_id if isinstance(response_id, str) else None
    return NativeChatResult(**values, id=rid, response_id=rid, tool_events=events)


def native_chat_result(ctx: RequestContext, body: dict[str, Any], timings: Timings
                       ) -> NativeChatResult:
    """A non-streamed ``/api/v1/chat`` body, with the same ``tool_events`` a stream yields."""
    result = protocol.native_chat_result(ctx, body, timings)
    events: list[ToolEvent] = []
    for item in body.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "tool_call":
            events.append(_event("tool_call.success", item))
        elif item.get("type") == "invalid_tool_call":
            events.append(_event("tool_call.failure", item))
    return _with_native(result, body.get("response_id"), events)
