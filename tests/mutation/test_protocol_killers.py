"""Tests that kill the surviving mutants of ``harness/client/protocol.py`` (docs/mutation.md).

protocol.py is the client's pure core (bodies and stream events in, results or typed errors
out), so these call its functions directly: LM Studio's "no models loaded" 404, a JSON body that
is not an object, a cut-off answer keeping its tool calls, an inline ``<think>`` block closed
twice, an in-stream error naming the request, HTML and plain-text error pages, tool calls
without an ``index``, and the native ``/api/v1/chat`` stream and body (every event, the whole
``ChatResult``, an overflow error before ``chat.end``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.client import errors as E
from harness.client import protocol
from harness.client.models import (
    ChatResult,
    ProgressEvent,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCall,
    ToolCallDelta,
)
from harness.client.sse import SSEEvent
from tests.client import scripted

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
    assert assembler.feed(native("reasoning.delta", content="hm"), 100.35) == [
        ReasoningDelta("hm")]
    assembler.feed(native("chat.end", result={"stats": {"tokens_per_second": 9.0}}), 100.4)
    result = assembler.finish(100.5)
    assert result.text == "Héllo" and result.reasoning == "hm"


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
    err = caught.value
    assert type(err) is kind and isinstance(err, E.ServerStreamError)
    assert err.partial.text == "so far" and err.server_message == message


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


def test_the_not_json_error_keeps_the_status() -> None:
    with pytest.raises(E.BadResponse) as caught:
        protocol.json_body(CTX, {}, b"<<garbage>>")
    assert caught.value.status == 200


def test_a_result_keeps_the_completion_id() -> None:
    body = {"id": "chatcmpl-42", "model": "qwen/qwen3-4b", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]}
    assert protocol.chat_result(CTX, body, Timings(ttft=0.1, total=0.1)).id == "chatcmpl-42"


def test_native_stream_malformed_data_names_the_request() -> None:
    assembler = protocol.NativeChatAssembler(CTX, 100.0)
    with pytest.raises(E.StreamInterrupted) as caught:
        assembler.feed(SSEEvent("{torn", "message.delta"), 100.5)
    assert caught.value.url == URL and caught.value.elapsed == pytest.approx(0.75)


def test_native_unnamed_events_are_typed_by_their_type_field() -> None:
    assembler = protocol.NativeChatAssembler(CTX, 100.0)
    unnamed = SSEEvent(json.dumps({"type": "message.delta", "content": "x"}))  # event: message
    assert assembler.feed(unnamed, 100.1) == [TextDelta("x")]
    named = SSEEvent(json.dumps({"content": "y"}), "message.delta")  # no type field
    assert assembler.feed(named, 100.2) == [TextDelta("y")]


def test_native_error_given_as_a_string_is_kept() -> None:
    assembler = protocol.NativeChatAssembler(CTX, 100.0)
    assembler.feed(native("error", error="engine crashed"), 100.1)
    with pytest.raises(E.ServerStreamError) as caught:
        assembler.finish(100.2)
    assert caught.value.server_message == "engine crashed"


def test_inline_think_closed_at_the_start_of_a_delta_emits_no_empty_reasoning() -> None:
    think = protocol.InlineThink()
    assert think.feed("<think>plan") == [(True, "plan")]
    assert think.feed("</think>answer") == [(False, "answer")]


@pytest.mark.parametrize(("body", "content_type", "summary"), [
    (b"<html><head><title> 502 Bad Gateway </title></head><body>nginx</body></html>", "",
     "HTML page instead of JSON: 502 Bad Gateway"),
    (b"  <!DOCTYPE html><html><body>oops</body></html>", "", "HTML page instead of JSON"),
    (b"<h1>Bad Gateway</h1>", "text/html; charset=utf-8", "HTML page instead of JSON"),
])
def test_html_pages_are_summarised_by_their_title(body: bytes, content_type: str, summary: str
                                                  ) -> None:
    err = protocol.error_from_response(CTX, 502, {"content-type": content_type}, body)
    assert type(err) is E.HTTPStatusError and err.message == "server error (502)"
    assert err.server_message == summary and err.status == 502
    with pytest.raises(E.BadResponse) as caught:
        protocol.json_body(CTX, {"content-type": content_type}, body)
    bad = caught.value
    assert type(bad) is E.BadResponse and bad.message == summary
    assert bad.status == 200 and bad.context == CTX and bad.server_message is None


@pytest.mark.parametrize(("body", "server_message"), [
    (b"upstream timed out\n", "upstream timed out"),
    (b"\xffbad gateway", "\ufffdbad gateway"),
    (b"", "empty body"),
    (b'{"message": "engine crashed"}', "engine crashed"),
])
def test_plain_error_bodies_keep_their_text(body: bytes, server_message: str) -> None:
    err = protocol.error_from_response(CTX, 503, {}, body)
    assert type(err) is E.HTTPStatusError and err.message == "server error (503)"
    assert err.server_message == server_message and err.retry_after is None


def test_a_body_that_is_not_utf8_is_quoted_with_replacement_characters() -> None:
    with pytest.raises(E.BadResponse) as caught:
        protocol.json_body(CTX, {}, b"\xff\xfenot json")
    assert caught.value.message == "response is not JSON: '\ufffd\ufffdnot json'"
    assert caught.value.status == 200 and caught.value.context == CTX


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    err = protocol.error_from_response(CTX, 503, headers, b"busy", now=1445412450.0)
    assert type(err) is E.HTTPStatusError and err.retry_after == 30.0


def test_model_not_found_lists_the_models_as_named() -> None:
    message = ("Model 'qwen/qwen3-8b' not found. Your models:\n - qwen/qwen3-4b\n"
               "\t- phi-4-mini-MLX\n")
    body = json.dumps({"error": {"message": message, "code": "model_not_found"}}).encode()
    err = protocol.error_from_response(CTX, 404, {}, body)
    assert type(err) is E.ModelNotFound and err.message == "model not found (404)"
    assert err.available == ("qwen/qwen3-4b", "phi-4-mini-MLX")


def test_a_200_carrying_an_error_is_a_bad_response() -> None:
    body = b'{"error": "Unexpected endpoint or method. (GET /v1/nothing)"}'
    with pytest.raises(E.BadResponse) as caught:
        protocol.json_body(CTX, {"content-type": "application/json"}, body)
    err = caught.value
    assert type(err) is E.BadResponse and err.message == "200 response carries an error"
    assert err.status == 200 and err.context == CTX
    assert err.server_message == "Unexpected endpoint or method. (GET /v1/nothing)"


def test_a_result_keeps_its_tool_calls_arguments() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "add",
                                                              "arguments": '{"a": 1}'}},
             {"id": "call_2", "type": "function", "function": {"name": "mul",
                                                              "arguments": {"b": 2}}}]
    body = {"model": "qwen/qwen3-4b", "choices": [{"index": 0, "finish_reason": "tool_calls",
                                                   "message": {"role": "assistant",
                                                               "content": None,
                                                               "tool_calls": calls}}]}
    result = protocol.chat_result(CTX, body, Timings(ttft=0.1, total=0.1), tools_offered=True)
    assert result.tool_calls == [ToolCall(id="call_1", name="add", arguments='{"a": 1}'),
                                 ToolCall(id="call_2", name="mul", arguments='{"b": 2}')]


def test_tool_calls_as_text_keep_the_status_and_the_answer() -> None:
    text = '<tool_call>{"name": "add"}</tool_call>'
    body = {"model": "qwen/qwen3-4b", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": text}}]}
    with pytest.raises(E.ToolCallsAsText) as caught:
        protocol.chat_result(CTX, body, Timings(ttft=0.1, total=0.1, chunks=1),
                             tools_offered=True)
    assert caught.value.status == 200 and caught.value.context == CTX
    assert caught.value.partial == E.PartialOutput(text=text, chunks=1, model="qwen/qwen3-4b",
                                                   finish_reason="stop")


def test_an_empty_answer_keeps_the_model_that_gave_it() -> None:
    body = {"model": "qwen/qwen3-4b", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": ""}}]}
    with pytest.raises(E.EmptyAnswer) as caught:
        protocol.chat_result(CTX, body, Timings(ttft=0.1, total=0.1, chunks=1))
    assert caught.value.partial == E.PartialOutput(chunks=1, model="qwen/qwen3-4b",
                                                   finish_reason="stop")


def test_native_body_gives_the_whole_result() -> None:
    body = {"model_instance_id": "qwen/qwen3-4b", "response_id": "resp_7",
            "stats": {"tokens_per_second": 9.5, "input_tokens": 12},
            "output": [{"type": "reasoning", "content": "plan"},
                       {"type": "message", "content": "Hi"},
                       {"type": "tool_call", "tool": "add", "arguments": {"a": 1},
                        "output": "2"}]}
    timings = Timings(ttft=0.1, total=0.2)
    result = protocol.native_chat_result(CTX, body, timings)
    assert result == ChatResult(text="Hi", reasoning="plan", model="qwen/qwen3-4b",
                                finish_reason="stop",
                                tool_calls=[ToolCall(name="add", arguments='{"a": 1}')],
                                timings=timings, id="resp_7",
                                stats={"tokens_per_second": 9.5, "input_tokens": 12})


def test_native_stream_gives_every_event_and_the_whole_result() -> None:
    assembler = protocol.NativeChatAssembler(CTX, 100.0)
    events = [
        native("chat.start", model_instance_id="qwen/qwen3-4b"),
        native("model_load.progress", progress=0.5),
        native("prompt_processing.progress", progress=1),
        native("reasoning.delta", content="plan"),
        native("message.delta", content="Hi"),
        native("tool_call.arguments", tool="add", arguments={"a": 1}),
        native("chat.end", result={"response_id": "resp_7", "stats": {"tokens_per_second": 9.5}}),
    ]
    got = [assembler.feed(event, 100.0 + 0.125 * n) for n, event in enumerate(events, 1)]
    assert got == [
        [],
        [ProgressEvent("model_load.progress", 0.5, {"type": "model_load.progress",
                                                    "progress": 0.5})],
        [ProgressEvent("prompt_processing.progress", 1.0, {"type": "prompt_processing.progress",
                                                           "progress": 1})],
        [ReasoningDelta("plan")],
        [TextDelta("Hi")],
        [ToolCallDelta(0, None, "add", '{"a": 1}')],
        [],
    ]
    assert assembler.finish(101.0) == ChatResult(
        text="Hi", reasoning="plan", model="qwen/qwen3-4b", finish_reason="stop",
        tool_calls=[ToolCall(name="add", arguments='{"a": 1}')],
        timings=Timings(ttft=0.5, total=1.0, gaps=[0.125, 0.125], chunks=7),
        stats={"tokens_per_second": 9.5})


def test_native_stream_from_another_model_keeps_what_arrived() -> None:
    assembler = protocol.NativeChatAssembler(CTX, 100.0)
    with pytest.raises(E.ModelMismatch) as caught:
        assembler.feed(native("chat.start", model_instance_id="google/gemma-3-4b"), 100.5)
    assert caught.value.answered_by == "google/gemma-3-4b"
    assert caught.value.partial == E.PartialOutput(chunks=1, model="google/gemma-3-4b")


def test_native_stream_broken_or_cut_off_keeps_its_text() -> None:
    torn = protocol.NativeChatAssembler(CTX, 100.0)
    torn.feed(native("message.delta", content="so far"), 100.25)
    with pytest.raises(E.StreamInterrupted) as caught:
        torn.feed(SSEEvent("{torn", "message.delta"), 100.5)
    assert caught.value.message == "malformed stream data: '{torn'"
    assert caught.value.partial == E.PartialOutput(text="so far", chunks=1)
    cut = protocol.NativeChatAssembler(CTX, 100.0)
    cut.feed(native("message.delta", content="so far"), 100.25)
    with pytest.raises(E.StreamInterrupted) as caught:
        cut.finish(100.5)
    err = caught.value
    assert type(err) is E.StreamInterrupted and err.message == "stream ended before chat.end"
    assert err.elapsed == pytest.approx(0.75) and err.url == URL
    assert err.partial == E.PartialOutput(text="so far", chunks=1)


def chunk(**fields: Any) -> SSEEvent:
    """One streamed chunk (``tests.client.scripted.chunk``'s fields) as the decoder hands it."""
    return SSEEvent(json.dumps(scripted.chunk(**fields)))


def tool_call_stream(assembler: protocol.ChatStreamAssembler) -> list[list[object]]:
    """Two tool calls without ``index`` (an id starts one, no id continues the last)."""
    return [
        list(assembler.feed(chunk(tool_calls=[{"id": "call_a", "type": "function",
                                                "function": {"name": "add",
                                                             "arguments": ""}}]), 100.25)),
        list(assembler.feed(chunk(tool_calls=[{"function": {"arguments": '{"a": 1}'}}]),
                            100.5)),
        list(assembler.feed(chunk(tool_calls=[{"id": "call_b", "function": {
            "name": "mul", "arguments": {"b": 2}}}], finish="tool_calls"), 100.75)),
    ]


def test_stream_tool_calls_without_index_are_told_apart_by_their_ids() -> None:
    assembler = protocol.ChatStreamAssembler(CTX, 100.0)
    assert tool_call_stream(assembler) == [[ToolCallDelta(0, "call_a", "add", "")],
                                           [ToolCallDelta(0, None, None, '{"a": 1}')],
                                           [ToolCallDelta(1, "call_b", "mul", '{"b": 2}')]]
    assembler.feed(SSEEvent("[DONE]"), 100.875)
    assert assembler.finish(101.0).tool_calls == [
        ToolCall(id="call_a", name="add", arguments='{"a": 1}'),
        ToolCall(id="call_b", name="mul", arguments='{"b": 2}')]


def test_stream_cut_off_after_tool_calls_keeps_every_fragment() -> None:
    assembler = protocol.ChatStreamAssembler(CTX, 100.0)
    tool_call_stream(assembler)
    with pytest.raises(E.StreamInterrupted) as caught:
        assembler.finish(101.0)
    err = caught.value
    assert err.message == "stream ended after finish_reason='tool_calls' but without [DONE]"
    assert err.partial == E.PartialOutput(
        tool_calls=[{"index": 0, "id": "call_a", "name": "add", "arguments": '{"a": 1}'},
                    {"index": 1, "id": "call_b", "name": "mul", "arguments": '{"b": 2}'}],
        chunks=3, model="qwen/qwen3-4b", finish_reason="tool_calls")


def test_stream_context_overflow_names_the_request_and_keeps_the_text() -> None:
    assembler = protocol.ChatStreamAssembler(CTX, 100.0)
    assembler.feed(chunk(content="so far"), 100.25)
    message = "The number of tokens to keep from the initial prompt is greater than the context"
    with pytest.raises(E.ContextOverflow) as caught:
        assembler.feed(SSEEvent(json.dumps({"error": {"message": message}}), "error"), 100.5)
    err = caught.value
    assert err.message == f"server reported an error inside the stream: {message}"
    assert err.url == URL and err.elapsed == pytest.approx(0.75) and err.status == 200
    assert err.server_message == message and err.reason == "context_overflow"
    assert err.partial == E.PartialOutput(text="so far", chunks=1, model="qwen/qwen3-4b")


def test_stream_error_event_with_plain_text_data_is_a_server_error() -> None:
    assembler = protocol.ChatStreamAssembler(CTX, 100.0)
    with pytest.raises(E.ServerStreamError) as caught:
        assembler.feed(SSEEvent("engine crashed", "error"), 100.5)
    err = caught.value
    assert type(err) is E.ServerStreamError
    assert err.message == "server reported an error inside the stream: engine crashed"
    assert err.server_message is None


def test_stream_ending_on_a_held_back_tag_prefix_keeps_it_as_text() -> None:
    assembler = protocol.ChatStreamAssembler(CTX, 100.0)
    assert assembler.feed(chunk(content="<thi", finish="stop"), 100.25) == []
    assembler.feed(SSEEvent("[DONE]"), 100.5)
    result = assembler.finish(100.75)
    assert (result.text, result.reasoning) == ("<thi", "")


def test_text_completion_chunks_read_in_one_batch_are_all_counted() -> None:
    assembler = protocol.ChatStreamAssembler(CTX, 100.0)

    def piece(text: str, finish: str | None = None) -> bytes:
        return json.dumps({"model": "qwen/qwen3-4b", "choices": [
            {"index": 0, "text": text, "finish_reason": finish}]}).encode()

    assert assembler.feed_data([piece("a")], 100.25) == [TextDelta("a")]
    assert assembler.feed_data([piece("b"), piece("c"), piece("", "stop"), b"[DONE]"],
                               100.5) == [TextDelta("b"), TextDelta("c")]
    assert assembler.finish(100.75) == ChatResult(
        text="abc", model="qwen/qwen3-4b", finish_reason="stop",
        timings=Timings(ttft=0.25, total=0.75, gaps=[0.25, 0.0], chunks=4))
