"""SSE decoding: any split of a valid byte stream into reads gives the same events."""

from __future__ import annotations

import json

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.client.errors import RequestContext
from harness.client.protocol import ChatStreamAssembler
from harness.client.sse import SSEDecoder, SSEEvent

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                max_size=20)
events = st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["error", "message.delta"])),
                            st.lists(texts, min_size=1, max_size=3)), min_size=1, max_size=8)
newlines = st.sampled_from([b"\n", b"\r\n", b"\r"])


def encode(evts: list[tuple[str | None, list[str]]], nl: bytes, comments: bool) -> bytes:
    out = b""
    for name, lines in evts:
        if comments:
            out += b": keep-alive" + nl
        if name:
            out += b"event: " + name.encode() + nl
        for line in lines:
            out += b"data: " + line.encode() + nl
        out += nl
    return out


def decode(data: bytes, cuts: list[int]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    got: list[SSEEvent] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        got += decoder.feed(data[last:cut])
        last = cut
    return got + decoder.flush()


@settings(max_examples=300, deadline=None)
@given(events, newlines, st.booleans(), st.lists(st.integers(min_value=0, max_value=2000)))
def test_any_split_gives_the_same_events(evts: list[tuple[str | None, list[str]]], nl: bytes,
                                         comments: bool, cuts: list[int]) -> None:
    data = encode(evts, nl, comments)
    cuts = [c % (len(data) + 1) for c in cuts]
    # Per the spec an event whose data is empty is not dispatched.
    expected = [SSEEvent("\n".join(lines), name or "message") for name, lines in evts
                if "\n".join(lines)]
    assert decode(data, cuts) == expected


@given(st.text(min_size=1, max_size=30), st.integers(min_value=0, max_value=200))
def test_utf8_split_inside_a_character(text: str, cut: int) -> None:
    data = b"data: " + json.dumps({"t": text}, ensure_ascii=False).encode() + b"\n\n"
    cut %= len(data) + 1
    assert decode(data, [cut]) == [SSEEvent(json.dumps({"t": text}, ensure_ascii=False))]


def test_field_rules() -> None:
    data = b"data:no-space\ndata\nid: 7\nretry: 10\nunknown: x\n\n"
    assert decode(data, []) == [SSEEvent("no-space\n", "message", "7")]
    assert decode(b"event: ping\n\n", []) == []  # no data: nothing dispatched


def _chat_stream(texts: list[str]) -> bytes:
    out = b""
    for t in texts:
        out += b"data: " + json.dumps({"model": "m", "choices": [{"index": 0, "delta": {
            "content": t}, "finish_reason": None}]}).encode() + b"\n\n"
    out += b'data: {"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    return out + b"data: [DONE]\n\n"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=10), min_size=1, max_size=10),
       st.lists(st.integers(min_value=0, max_value=5000)))
def test_any_split_assembles_the_same_result(texts: list[str], cuts: list[int]) -> None:
    # An empty answer is an EmptyAnswer, and a leading <think> is reasoning (test_answer_checks).
    assume("".join(texts).strip() and not "".join(texts).lstrip().startswith("<think>"))
    data = _chat_stream(texts)
    cuts = [c % (len(data) + 1) for c in cuts]
    assembler = ChatStreamAssembler(RequestContext("POST", "http://h/v1/chat/completions", "m"), 0)
    for event in decode(data, cuts):
        assembler.feed(event, 1.0)
    result = assembler.finish(2.0)
    assert result.text == "".join(texts) and result.finish_reason == "stop"
