"""The semantic failures LM Studio users report (issue 11, item 3; LMSTUDIO_API.md §3.8, §3.9,
§8): answers complete on the wire that are not answers. Each is typed, with what arrived kept,
on both shells, streamed and not; against a scripted server (exact bytes) and against the
emulator's own fault actions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import AsyncClient, Client
from harness.client.errors import (
    BlankToolCallId,
    ContextOverflow,
    EmptyAnswer,
    ReasoningOnly,
    ServerStreamError,
    ToolCallsAsText,
    UnusableAnswer,
)
from harness.client.models import ReasoningDelta, TextDelta
from harness.client.protocol import InlineThink, split_inline_think
from harness.faults import (
    BlankToolIdFault,
    ContentToReasoningFault,
    EmptyReplyFault,
    ErrorFrameFault,
    FaultPlan,
    FaultRule,
    InlineThinkFault,
    ToolCallsAsTextFault,
)
from harness.studio.testing import StudioHandle, running_studio
from tests.client.scripted import Reply, ScriptedServer, chunk, completion, json_reply, sse
from tests.client.test_call_layer import SHELLS, call

CHAT = "/v1/chat/completions"
MODEL = "qwen/qwen3-4b"
THINKER = "qwen/qwen3-4b-thinking-2507"
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}]
MODES = [(shell, stream) for shell in SHELLS for stream in (False, True)]
MODE_IDS = [f"{shell}-{'stream' if stream else 'plain'}" for shell, stream in MODES]


def reply(stream: bool, *, text: str = "", reasoning: str = "",
          tool_calls: list[dict[str, Any]] | None = None, finish: str = "stop") -> Reply:
    """The same answer as a stream or as one body."""
    if stream:
        frames = []
        if reasoning:
            frames.append(chunk(reasoning=reasoning))
        if text:
            frames.append(chunk(text))
        if tool_calls:
            frames.append(chunk(tool_calls=[{"index": i, **c} for i, c in enumerate(tool_calls)]))
        frames.append(chunk(finish=finish))
        return sse(*frames)
    body = completion(text, finish=finish)
    message = body["choices"][0]["message"]
    message["reasoning_content"] = reasoning
    message["tool_calls"] = tool_calls or []
    return json_reply(body)


@pytest.mark.parametrize(("shell", "stream"), MODES, ids=MODE_IDS)
def test_reasoning_then_an_empty_answer_is_reasoning_only(server: ScriptedServer, shell: str,
                                                          stream: bool) -> None:
    server.script(CHAT, reply(stream, reasoning='The user wants JSON: {"a": 1}'))
    with pytest.raises(ReasoningOnly) as info:
        call(shell, server.url, stream=stream)
    assert info.value.partial.reasoning == 'The user wants JSON: {"a": 1}'
    assert info.value.partial.text == "" and "reasoning only" in str(info.value)


@pytest.mark.parametrize(("shell", "stream"), MODES, ids=MODE_IDS)
def test_reasoning_cut_by_max_tokens_is_left_to_finish_reason(server: ScriptedServer,
                                                              shell: str, stream: bool) -> None:
    server.script(CHAT, reply(stream, reasoning="Let me think", finish="length"))
    result = call(shell, server.url, stream=stream)
    assert result.finish_reason == "length" and result.reasoning == "Let me think"


@pytest.mark.parametrize(("shell", "stream"), MODES, ids=MODE_IDS)
def test_an_empty_reply_is_an_empty_answer(server: ScriptedServer, shell: str,
                                           stream: bool) -> None:
    server.script(CHAT, reply(stream))
    with pytest.raises(EmptyAnswer) as info:
        call(shell, server.url, stream=stream)
    assert "context" in str(info.value)  # names the likely cause (GGUF overflow, BT#2339)


@pytest.mark.parametrize("shell", SHELLS)
def test_overflow_error_frame_in_a_200_stream_is_context_overflow(server: ScriptedServer,
                                                                  shell: str) -> None:
    message = ("Input does not fit in context length. The input has 31430 tokens, but the "
               "context length only supports 30000 tokens.")
    frame = b"event: error\ndata: " + json.dumps({"error": {"message": message},
                                                  "message": message}).encode() + b"\n\n"
    server.script(CHAT, sse(frame, done=False), json_reply(completion("never")))
    with pytest.raises(ContextOverflow) as info:
        call(shell, server.url, stream=True)
    err = info.value
    assert isinstance(err, ServerStreamError) and err.status == 200
    assert err.reason == "context_overflow" and err.server_message == message
    assert server.hits(CHAT) == 1


@pytest.mark.parametrize(("shell", "stream"), MODES, ids=MODE_IDS)
def test_inline_think_is_moved_to_reasoning(server: ScriptedServer, shell: str,
                                            stream: bool) -> None:
    if stream:  # the tags split across deltas, as a tokenizer would
        server.script(CHAT, sse(chunk("<thi"), chunk("nk>Two plus"), chunk(" two</th"),
                                chunk("ink>\n\n"), chunk("Four."), chunk(finish="stop")))
    else:
        server.script(CHAT, json_reply(completion("<think>Two plus two</think>\n\nFour.")))
    result = call(shell, server.url, stream=stream)
    assert (result.text, result.reasoning) == ("Four.", "Two plus two")


def test_inline_think_deltas_are_typed(server: ScriptedServer) -> None:
    server.script(CHAT, sse(chunk("<think>a"), chunk("b</think>"), chunk("c"),
                            chunk(finish="stop")))
    with Client(server.url, model=MODEL) as c, c.stream_chat([{"role": "user", "content": "x"}]
                                                             ) as s:
        events = list(s)
    assert [(type(e), e.text) for e in events] == [(ReasoningDelta, "a"), (ReasoningDelta, "b"),
                                                   (TextDelta, "c")]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab <>/thinkT\n", max_size=40), st.lists(st.integers(0, 40)))
def test_inline_think_any_split_matches_the_whole(text: str, cuts: list[int]) -> None:
    router = InlineThink()
    pieces: list[tuple[bool, str]] = []
    last = 0
    for cut in [*sorted({c % (len(text) + 1) for c in cuts}), len(text)]:
        pieces += router.feed(text[last:cut])
        last = cut
    pieces += router.flush()
    content = "".join(p for r, p in pieces if not r)
    reasoning = "".join(p for r, p in pieces if r)
    whole_content, whole_reasoning = split_inline_think(text)
    assert reasoning == whole_reasoning
    if text.lstrip().startswith("<think>"):
        assert content == whole_content
    else:  # no leading tag: content passes through untouched
        assert content == text or (not text.strip() and content == "")


TOOL_TEXTS = [
    '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
    '{"name": "add", "arguments": {"a": 1, "b": 2}}',
    '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}]',
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("text", TOOL_TEXTS, ids=["xml", "json", "mistral"])
def test_tool_call_returned_as_text_is_flagged(server: ScriptedServer, shell: str,
                                               text: str) -> None:
    server.script(CHAT, reply(False, text=text))
    with pytest.raises(ToolCallsAsText) as info:
        _chat_with_tools(shell, server.url)
    assert info.value.partial.text == text


def test_tool_like_text_without_tools_offered_is_an_answer(server: ScriptedServer) -> None:
    server.script(CHAT, reply(False, text=TOOL_TEXTS[1]))
    assert call("sync", server.url).text == TOOL_TEXTS[1]


@pytest.mark.parametrize(("shell", "stream"), MODES, ids=MODE_IDS)
def test_blank_tool_call_id_is_flagged(server: ScriptedServer, shell: str, stream: bool) -> None:
    calls = [{"id": "", "type": "function",
              "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]
    server.script(CHAT, reply(stream, tool_calls=calls, finish="tool_calls"))
    with pytest.raises(BlankToolCallId) as info:
        call(shell, server.url, stream=stream)
    assert info.value.partial.tool_calls and "'add'" in str(info.value)


def _chat_with_tools(shell: str, url: str, stream: bool = False,
                     content: str = "Add 1 and 2.") -> Any:
    messages = [{"role": "user", "content": content}]
    if shell == "sync":
        with Client(url, model=MODEL) as c:
            if not stream:
                return c.chat(messages, tools=TOOLS)
            with c.stream_chat(messages, tools=TOOLS) as s:
                return s.result()
    import asyncio

    async def run() -> Any:
        async with AsyncClient(url, model=MODEL) as c:
            if not stream:
                return await c.chat(messages, tools=TOOLS)
            async with c.stream_chat(messages, tools=TOOLS) as s:
                return await s.result()

    return asyncio.run(run())


# -- the same failures from the emulator's own fault actions -----------------------------------
@pytest.fixture(scope="module")
def studio() -> Iterator[StudioHandle]:
    with running_studio(preload=(MODEL, THINKER)) as handle:
        yield handle


@pytest.fixture
def faulty(studio: StudioHandle) -> Iterator[StudioHandle]:
    yield studio
    studio.clear_faults()


EMULATED: list[tuple[Any, type[UnusableAnswer] | type[ContextOverflow]]] = [
    (EmptyReplyFault(), EmptyAnswer),
    (ContentToReasoningFault(), ReasoningOnly),
]
SCRIPTED_TOOL = 'Use it. [[tools: [[{"name": "add", "arguments": {"a": 1, "b": 2}}]]]]'


@pytest.mark.parametrize(("shell", "stream"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize(("action", "kind"), EMULATED, ids=["empty_reply", "content_to_reasoning"])
def test_emulated_semantic_faults_are_typed(faulty: StudioHandle, shell: str, stream: bool,
                                            action: Any, kind: type[Exception]) -> None:
    faulty.set_faults(FaultPlan(rules=(FaultRule(action=action),)))
    with pytest.raises(kind):
        call(shell, faulty.base_url, stream=stream, timeout=30)


@pytest.mark.parametrize(("shell", "stream"), MODES, ids=MODE_IDS)
def test_emulated_inline_think_is_moved(faulty: StudioHandle, shell: str, stream: bool) -> None:
    clean = call(shell, faulty.base_url, stream=stream, timeout=30, model=THINKER)
    assert clean.reasoning
    faulty.set_faults(FaultPlan(rules=(FaultRule(action=InlineThinkFault()),)))
    moved = call(shell, faulty.base_url, stream=stream, timeout=30, model=THINKER)
    assert "<think>" not in moved.text
    assert (moved.text.strip(), moved.reasoning) == (clean.text.strip(), clean.reasoning)


@pytest.mark.parametrize(("shell", "stream"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize(("action", "kind"), [(ToolCallsAsTextFault(), ToolCallsAsText),
                                              (BlankToolIdFault(), BlankToolCallId)],
                         ids=["tool_calls_as_text", "blank_tool_id"])
def test_emulated_tool_call_faults_are_flagged(faulty: StudioHandle, shell: str, stream: bool,
                                               action: Any, kind: type[Exception]) -> None:
    assert _chat_with_tools(shell, faulty.base_url, stream, SCRIPTED_TOOL).tool_calls
    faulty.set_faults(FaultPlan(rules=(FaultRule(action=action),)))
    with pytest.raises(kind):
        _chat_with_tools(shell, faulty.base_url, stream, SCRIPTED_TOOL)


@pytest.mark.parametrize("shell", SHELLS)
def test_emulated_overflow_frame_is_context_overflow(faulty: StudioHandle, shell: str) -> None:
    message = ("Input does not fit in context length. The input has 31430 tokens, but the "
               "context length only supports 30000 tokens.")
    faulty.set_faults(FaultPlan(rules=(FaultRule(action=ErrorFrameFault(message=message)),)))
    with pytest.raises(ContextOverflow) as info:
        call(shell, faulty.base_url, stream=True, timeout=30)
    assert info.value.status == 200 and info.value.partial.chunks == 0
