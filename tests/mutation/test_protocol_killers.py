"""Tests that kill the surviving mutants of ``harness/client/protocol.py`` (docs/mutation.md).

protocol.py is the client's pure core (bodies and stream events in, results or typed errors
out), so these call its functions directly: LM Studio's "no models loaded" 404, a JSON body that
is not an object, a cut-off answer keeping its tool calls, an inline ``<think>`` block closed
twice, an in-stream error naming the request, and the native ``/api/v1/chat`` stream (deltas,
an overflow error before ``chat.end``)."""

from __future__ import annotations

import json

import pytest

from harness.client import errors as E
from harness.client import protocol
from harness.client.models import TextDelta, Timings
from harness.client.sse import SSEEvent

URL = "http://127.0.0.1:1/v1/chat/completions"
CTX = E.RequestContext("POST", URL, "qwen/qwen3-4b", 1, 5, 0.25)


def test_no_models_loaded_is_model_not_found() -> None:
    body = json.dumps({"error": {"message": "No models loaded. Please load a model in the "
                                            "developer page or use the `lms load` command."}})
    err = protocol.error_from_response(CTX, 404, {}, body.encode())
    assert type(err) is E.ModelNotFound and err.status == 404
    other = protocol.error_from_response(CTX, 404, {}, b'{"error": {"message": "nope"}}')
    assert type(other) is E.HTTPStatusError


@pytest.mark.parametrize(("body", "kind"), [(b"[1, 2]", "list"), (b'"text"', "str"),
                                            (b"3", "int")])
def test_a_json_body_that_is_not_an_object_says_what_it_was(body: bytes, kind: str) -> None:
    with pytest.raises(E.BadResponse) as caught:
        protocol.json_body(CTX, {"content-type": "application/json"}, body)
    assert caught.value.message == f"expected a JSON object, got {kind}"


def test_an_answer_cut_off_keeps_its_tool_calls_and_says_why() -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "add", "arguments": '{"a": 1}'}}
    body = {"model": "qwen/qwen3-4b", "choices": [{"index": 0, "finish_reason": None, "message": {
        "role": "assistant", "content": "partial", "tool_calls": [call]}}]}
    with pytest.raises(E.IncompleteAnswer) as caught:
        protocol.chat_result(CTX, body, Timings(ttft=0.1, total=0.1), tools_offered=True)
    err = caught.value
    assert err.message == ("answer has no finish_reason: cut off mid-generation (a model unload "
                           "or JIT auto-evict)")
    assert err.partial is not None and err.partial.text == "partial"
    [kept] = err.partial.tool_calls
    assert kept["id"] == "call_1" and kept["function"]["name"] == "add"


def test_inline_think_ends_at_its_first_closing_tag() -> None:
    assert protocol.split_inline_think("<think>a</think>b</think>c") == ("b</think>c", "a")


def test_an_error_event_inside_a_stream_names_the_request() -> None:
    assembler = protocol.ChatStreamAssembler(CTX, 100.0)
    with pytest.raises(E.ServerStreamError) as caught:
        assembler.feed(SSEEvent('{"error": {"message": "engine crashed"}}', "error"), 100.5)
    err = caught.value
    assert err.url == URL and err.elapsed == pytest.approx(0.75)
    assert str(err).startswith(f"POST {URL} (model=qwen/qwen3-4b, attempt 1/5")
    assert err.server_message == "engine crashed"


def native(kind: str, **data: object) -> SSEEvent:
    return SSEEvent(json.dumps({"type": kind, **data}), kind)


def test_native_stream_delivers_its_text() -> None:
    assembler = protocol.NativeChatAssembler(CTX, 100.0)
    assert assembler.feed(native("chat.start", model_instance_id="qwen/qwen3-4b"), 100.1) == []
    assert assembler.feed(native("message.delta", content="Hé"), 100.2) == [TextDelta("Hé")]
    assert assembler.feed(native("message.delta", content="llo"), 100.3) == [TextDelta("llo")]
    assembler.feed(native("chat.end", result={"stats": {"tokens_per_second": 9.0}}), 100.4)
    assert assembler.finish(100.5).text == "Héllo"


@pytest.mark.parametrize(("message", "kind"), [
    ("The number of tokens to keep from the initial prompt is greater than the context length",
     E.ContextOverflow),
    ("the engine stopped", E.ServerStreamError),
])
def test_native_error_before_chat_end_is_typed(message: str, kind: type[E.LMStudioError]
                                               ) -> None:
    assembler = protocol.NativeChatAssembler(CTX, 100.0)
    assembler.feed(native("message.delta", content="so far"), 100.1)
    assembler.feed(native("error", error={"message": message}), 100.2)
    assembler.feed(native("chat.end", result={}), 100.3)
    with pytest.raises(kind) as caught:
        assembler.finish(100.4)
    assert type(caught.value) is kind and caught.value.partial is not None
    assert caught.value.partial.text == "so far" and caught.value.server_message == message


def test_a_body_that_is_not_json_without_a_content_type_is_a_bad_response() -> None:
    with pytest.raises(E.BadResponse) as caught:
        protocol.json_body(CTX, {}, b"not json at all")
    assert caught.value.message == "response is not JSON: 'not json at all'"


def test_an_unpinned_stream_takes_its_model_from_the_chunks() -> None:
    unpinned = E.RequestContext("POST", URL, None, 1, 1, 0.0)
    assembler = protocol.ChatStreamAssembler(unpinned, 100.0)
    chunk = {"model": "qwen/qwen3-4b", "choices": [{"index": 0, "delta": {"content": "hi"},
                                                    "finish_reason": "stop"}]}
    assembler.feed(SSEEvent(json.dumps(chunk)), 100.1)
    assembler.feed(SSEEvent("[DONE]"), 100.2)
    result = assembler.finish(100.3)
    assert result.model == "qwen/qwen3-4b" and result.text == "hi"


def test_tool_calls_as_text_say_so() -> None:
    body = {"model": "qwen/qwen3-4b", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '<tool_call>{"name": "add"}</tool_call>'}}]}
    with pytest.raises(E.ToolCallsAsText) as caught:
        protocol.chat_result(CTX, body, Timings(ttft=0.1, total=0.1), tools_offered=True)
    assert caught.value.message == ("tools were offered and the tool call came back as plain "
                                    "text, not tool_calls")
