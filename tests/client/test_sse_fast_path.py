"""The per-read fast path (``SSEDecoder.feed_messages`` + ``ChatStreamAssembler.feed_data``)
gives exactly what the general per-line path (``feed`` + ``ChatStreamAssembler.feed``) gives:
the same events, the same result and timings, the same error with the same partial output,
whatever the reads' boundaries, line ends, comments, event names, empty data, invalid UTF-8 or
malformed chunks."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.client.errors import LMStudioError, ModelMismatch, RequestContext, StreamInterrupted
from harness.client.models import TextDelta
from harness.client.protocol import ChatStreamAssembler
from harness.client.sse import SSEDecoder, SSEEvent

CTX = RequestContext("POST", "http://h/v1/chat/completions", "m")


def chunk(delta: dict[str, Any], finish: str | None = None, model: str = "m",
          **extra: Any) -> bytes:
    return json.dumps({"model": model, "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}], **extra},
                      ensure_ascii=False).encode()


def completion(text: str) -> bytes:
    return json.dumps({"model": "m", "choices": [{"index": 0, "text": text,
                                                  "finish_reason": None}]}).encode()


words = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                max_size=8)
good = st.one_of(
    words.map(lambda t: chunk({"content": t})),  # the hot path
    words.map(lambda t: chunk({"role": "assistant", "content": t})),
    words.map(lambda t: chunk({"reasoning_content": t})),
    words.map(lambda t: chunk({"reasoning": t})),
    words.map(lambda t: chunk({"reasoning_content": t, "content": t})),
    words.map(lambda t: chunk({"content": "<think>" + t})),
    words.map(lambda t: chunk({"content": t}, timings={"predicted_n": len(t)})),  # llama.cpp
    st.just(chunk({"content": None})),
    words.map(completion),  # /v1/completions
    words.map(lambda t: completion("<think>" + t)),
    st.just(chunk({"content": " "})),  # <think> may still come: not yet plain content
    st.just(chunk({}, "stop")),
    st.just(chunk({}, usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})),
    st.just(chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {
        "name": "f", "arguments": "{}"}}]})),
    st.just(b'{"model":"m","choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}'),  # bad UTF-8
    st.just(b""),  # empty data: not dispatched
)
bad = st.sampled_from([
    chunk({"content": "x"}, model="other"),  # a model switch: ModelMismatch
    b'{"content": ',  # malformed
    b"[1, 2]",  # not an object
    b'{"error": {"message": "boom"}}',
    chunk({"reasoning": 7}),
    b"[DONE]",
])
payloads = st.one_of(good, good, good, good, good, good, bad)  # most streams end well
frames = st.lists(st.tuples(payloads, st.sampled_from(["plain", "plain", "plain", "named",
                                                       "comment", "two-lines"])),
                  min_size=1, max_size=12)


def encode(items: list[tuple[bytes, str]], nl: bytes) -> bytes:
    out = b""
    for payload, shape in items:
        if shape == "comment":
            out += b": keep-alive" + nl
        if shape == "named":
            out += b"event: message" + nl
        if shape == "two-lines" and len(payload) > 1:
            half = len(payload) // 2
            out += b"data: " + payload[:half] + nl + b"data: " + payload[half:] + nl + nl
        else:
            out += b"data: " + payload + nl + nl
    return out


def reads(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def run(pieces: list[bytes], fast: bool) -> tuple[list[Any], Any]:
    """(events, outcome) of one stream read as ``pieces``; the outcome is the result or the
    error's type, message and partial output."""
    decoder, assembler = SSEDecoder(), ChatStreamAssembler(CTX, 0.0)
    events: list[Any] = []
    now = 0.0
    try:
        for i, piece in enumerate(pieces):
            now = 1.0 + i
            if fast:
                data, general = decoder.feed_messages(piece)
                if data:
                    events += assembler.feed_data(data, now)
                for event in general:
                    events += assembler.feed(event, now)
            else:
                for event in decoder.feed(piece):
                    events += assembler.feed(event, now)
        for event in decoder.flush():
            events += assembler.feed(event, now)
        return events, assembler.finish(now + 1).model_dump()
    except LMStudioError as err:
        # A read's events are returned together, so those of the read that raised are not
        # compared (its text is on the partial output, which is).
        return [], (type(err).__name__, str(err), err.partial)
    except TypeError as err:  # a non-string reasoning value: the same crash either way
        return [], (type(err).__name__, str(err))


@settings(max_examples=400, deadline=None)
@given(frames, st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"]),
       st.lists(st.integers(min_value=0, max_value=5000), max_size=8))
def test_fast_path_matches_the_general_path(items: list[tuple[bytes, str]], nl: bytes,
                                            cuts: list[int]) -> None:
    # Ending as a stream should makes most examples a result, not an error, to compare.
    items = [*items, (chunk({}, "stop"), "plain"), (b"[DONE]", "plain")]
    pieces = reads(encode(items, nl), cuts)
    fast_events, fast = run(pieces, fast=True)
    slow_events, slow = run(pieces, fast=False)
    assert fast == slow
    if not isinstance(fast, tuple):
        assert fast_events == slow_events


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.just("error")), words), min_size=1,
                max_size=8),
       st.sampled_from([b"\n", b"\r\n", b"\r"]), st.booleans(),
       st.lists(st.integers(min_value=0, max_value=2000)))
def test_decoder_fast_path_gives_the_same_events(evts: list[tuple[str | None, str]], nl: bytes,
                                                 comments: bool, cuts: list[int]) -> None:
    data = b""
    for name, text in evts:
        data += (b": ping" + nl if comments else b"") + \
            (b"event: " + name.encode() + nl if name else b"") + b"data: " + text.encode() + nl + nl
    fast_decoder, slow_decoder = SSEDecoder(), SSEDecoder()
    fast: list[SSEEvent] = []
    slow: list[SSEEvent] = []
    for piece in reads(data, cuts):
        messages, general = fast_decoder.feed_messages(piece)
        fast += [SSEEvent(m.decode(), "message", fast_decoder.last_event_id) for m in messages]
        fast += general
        slow += slow_decoder.feed(piece)
    assert fast + fast_decoder.flush() == slow + slow_decoder.flush()


def test_one_read_of_whole_frames_is_cut_without_per_line_work() -> None:
    decoder = SSEDecoder()
    assert decoder.feed_messages(b"data: a\n\ndata: \n\ndata: [DONE]\n\n") == (
        [b"a", b"[DONE]"], [])  # empty data is not dispatched


def test_a_character_split_across_reads_arrives_whole() -> None:
    decoder = SSEDecoder()
    data = "data: {\"t\": \"h\u00e9\u4e16\"}\n\n".encode()
    cut = data.index("\u4e16".encode()) + 1  # inside the 3-byte character
    assert decoder.feed_messages(data[:cut]) == ([], [])
    messages, _ = decoder.feed_messages(data[cut:])
    assert [m.decode() for m in messages] == ['{"t": "h\u00e9\u4e16"}']


def test_a_read_ending_between_a_data_line_and_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed_messages(b"data: a\n\ndata: b\n") == ([b"a"], [])
    assert decoder.has_partial_event
    # The next read completes the open event: the general rules take it (its data is pending).
    assert decoder.feed_messages(b"\ndata: c\n\n") == ([], [SSEEvent("b"), SSEEvent("c")])


def test_crlf_and_named_events_take_the_general_rules() -> None:
    assert SSEDecoder().feed_messages(b"data: a\r\n\r\n") == ([], [SSEEvent("a")])
    assert SSEDecoder().feed_messages(b"event: error\ndata: a\n\n") == (
        [], [SSEEvent("a", "error")])
    assert SSEDecoder().feed_messages(b"data: a\ndata: b\n\n") == ([], [SSEEvent("a\nb")])
    # A CR at the end of one read may be half a CRLF: held, not taken as a line end twice.
    decoder = SSEDecoder()
    assert decoder.feed_messages(b"data: a\r") == ([], [])
    assert decoder.feed_messages(b"\n\r\ndata: b\n\n") == ([], [SSEEvent("a"), SSEEvent("b")])


def test_error_mid_read_keeps_the_deltas_before_it() -> None:
    assembler = ChatStreamAssembler(CTX, 0.0)
    data = [chunk({"content": "a"}), chunk({"content": "b"}), b'{"content": ']
    try:
        assembler.feed_data(data, 1.0)
    except StreamInterrupted as err:
        assert err.partial is not None
        assert (err.partial.text, err.partial.chunks) == ("ab", 2)
    else:
        raise AssertionError("a malformed chunk must raise")


def test_model_is_checked_before_any_inline_delta() -> None:
    assembler = ChatStreamAssembler(CTX, 0.0)
    try:
        assembler.feed_data([chunk({"content": "a"}, model="other")], 1.0)
    except ModelMismatch as err:
        assert err.answered_by == "other"
    else:
        raise AssertionError("a chunk from another model must raise")


def test_inline_deltas_keep_per_chunk_timings() -> None:
    assembler = ChatStreamAssembler(CTX, 0.0)
    # The first chunk is checked for its model, the next two are inline: three deltas in one
    # read are a first token and two gaps of 0 s.
    assert assembler.feed_data([chunk({"content": t}) for t in "abc"], 1.0) == [
        TextDelta("a"), TextDelta("b"), TextDelta("c")]
    assert assembler.feed_data([chunk({"content": "d"}), chunk({}, "stop"), b"[DONE]",
                                chunk({"content": "ignored after [DONE]"})], 3.0) == [
        TextDelta("d")]
    result = assembler.finish(4.0)
    assert result.text == "abcd" and result.timings.chunks == 5
    assert result.engine_timings is None
    assert (result.timings.ttft, result.timings.gaps) == (1.0, [0.0, 0.0, 2.0])


def test_inline_deltas_keep_llama_cpp_timings() -> None:
    assembler = ChatStreamAssembler(CTX, 0.0)
    assembler.feed_data([chunk({"content": "a"}), chunk({"content": "b"},
                                                        timings={"predicted_n": 2}),
                         chunk({}, "stop"), b"[DONE]"], 1.0)
    assert assembler.finish(2.0).engine_timings == {"predicted_n": 2}
