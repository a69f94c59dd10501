"""The client on the emulator's new surface: ``/v1/messages`` (plain and streamed, tool use,
errors typed) and ``/api/v1/chat`` streams that keep ``response_id`` and the tool events."""

from __future__ import annotations

import json

import pytest

from harness import AsyncClient, Client
from harness.client.errors import (
    ContextOverflow,
    ReasoningOnly,
    ServerStreamError,
    StreamInterrupted,
    ValidationError,
)
from harness.client.models import TextDelta, ToolCallDelta, ToolEvent
from harness.client.native_tools import NativeChatResult
from harness.faults import FaultPlan
from harness.studio.testing import StudioHandle, running_studio

MODEL = "qwen/qwen3-4b"
THINKER = "qwen/qwen3-4b-thinking-2507"
HELLO = [{"role": "user", "content": "hello"}]
DIRECTIVE = 'Add. [[tools: [[{"name": "add", "arguments": {"a": 1, "b": 2}}]]]]'


def fault(action: dict) -> dict[str, str]:
    return {"X-Harness-Fault": json.dumps(action)}


def test_messages_plain_and_streamed_agree(fresh: StudioHandle) -> None:
    with Client(fresh.base_url, model=THINKER) as client:
        plain = client.messages(HELLO, max_tokens=200)
        with client.stream_messages(HELLO, max_tokens=200) as stream:
            texts = [e.text for e in stream if isinstance(e, TextDelta)]
            streamed = stream.result()
    assert plain.text and plain.reasoning and plain.finish_reason == "stop"
    assert streamed.text == plain.text == "".join(texts)
    assert streamed.reasoning == plain.reasoning and streamed.model == THINKER
    assert streamed.usage is not None and plain.usage is not None
    assert streamed.usage.completion_tokens == plain.usage.completion_tokens
    assert plain.id is not None and plain.id.startswith("msg_")


def test_messages_tool_use(fresh: StudioHandle) -> None:
    tools = [{"name": "add", "input_schema": {"type": "object"}}]
    msgs = [{"role": "user", "content": DIRECTIVE}]
    with Client(fresh.base_url, model=MODEL) as client:
        plain = client.messages(msgs, tools=tools)
        with client.stream_messages(msgs, tools=tools) as stream:
            deltas = [e for e in stream if isinstance(e, ToolCallDelta)]
            streamed = stream.result()
    for result in (plain, streamed):
        assert result.finish_reason == "tool_calls"
        assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
            ("add", {"a": 1, "b": 2})]
    assert deltas[0].name == "add" and deltas[0].id


def plan(action: dict, endpoint: str = "/v1/messages") -> FaultPlan:
    return FaultPlan.model_validate({"rules": [{"match": {"endpoint": endpoint},
                                                "action": action}]})


def test_messages_failures_are_typed(fresh: StudioHandle) -> None:
    with Client(fresh.base_url, model=MODEL) as client:
        with pytest.raises(ContextOverflow):
            client.messages([{"role": "user", "content": "word " * 40_000}])
        with pytest.raises(ValidationError):
            client.messages([{"role": "system", "content": "x"}])
        fresh.set_faults(plan({"kind": "error_frame", "after_chunks": 3,
                               "message": "Compute error."}))
        with pytest.raises(ServerStreamError) as broken, \
                client.stream_messages(HELLO) as stream:
            stream.result()
        assert broken.value.partial is not None and broken.value.partial.text
        fresh.set_faults(plan({"kind": "content_to_reasoning"}))
        with pytest.raises(ReasoningOnly):
            client.messages(HELLO)
        fresh.set_faults(plan({"kind": "early_end", "after_chunks": 4}))
        with pytest.raises(StreamInterrupted), client.stream_messages(HELLO) as stream:
            stream.result()
        fresh.clear_faults()


async def test_native_stream_keeps_response_id_and_tool_events(http_calculator: str) -> None:
    integrations = [{"type": "ephemeral_mcp", "server_label": "calc",
                     "server_url": http_calculator}]
    text = ('Add. [[tools: [[{"name": "add", "arguments": {"a": 1, "b": 2}}], '
            '[{"name": "open_browser", "arguments": {}}]]]]')
    with running_studio(allow_ephemeral_mcp=True, allow_local_mcp=True) as s:
        async with AsyncClient(s.base_url, model=MODEL) as client:
            async with client.stream_native_chat(text, integrations=integrations) as stream:
                events = [e async for e in stream if isinstance(e, ToolEvent)]
                streamed = await stream.result()
            plain = await client.native_chat(text, integrations=integrations)
            follow = await client.native_chat("and then?",
                                              previous_response_id=streamed.id)
    assert [e.type for e in events] == ["tool_call.start", "tool_call.arguments",
                                        "tool_call.success", "tool_call.failure"]
    assert events[2].tool == "add" and json.loads(events[2].output or "")[0]["text"] == "3.0"
    assert events[2].provider_info == {"type": "ephemeral_mcp", "server_label": "calc"}
    assert events[3].tool == "open_browser" and "Cannot find tool" in (events[3].reason or "")
    for result in (streamed, plain):
        assert isinstance(result, NativeChatResult)
        assert result.response_id is not None and result.response_id.startswith("resp_")
        assert result.id == result.response_id
        assert result.text.startswith("Done after 2 round(s)")
    assert [e.type for e in plain.tool_events] == ["tool_call.success", "tool_call.failure"]
    assert plain.tool_events[0].output == events[2].output
    assert isinstance(follow, NativeChatResult) and follow.response_id != streamed.response_id


def test_native_cut_off_is_typed_with_partial_output(fresh: StudioHandle) -> None:
    fresh.set_faults(plan({"kind": "evict", "after_chunks": 8}, "/api/v1/chat"))
    with Client(fresh.base_url, model=MODEL) as client, \
            pytest.raises(ServerStreamError, match="Model is unloaded") as cut, \
            client.stream_native_chat("tell me more") as stream:
        stream.result()
    fresh.clear_faults()
    assert cut.value.partial is not None and cut.value.partial.text
