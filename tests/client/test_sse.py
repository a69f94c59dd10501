"""SSE decoding: any split of a valid byte stream into reads gives the same events."""

from __future__ import annotations

import json
import re

from hypothesis import assume, example, given, settings
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


# -- against a reference -------------------------------------------------------------------------
# The WHATWG event-stream rules written the plain way (decode, split lines, one field at a time),
# with the one rule this decoder documents on top: an event whose data is empty is not dispatched.
# Lines are any mix of the fields a server may send, well-formed or not, with any line ends and
# bytes that are not UTF-8; the decoder must agree with the reference after every read, not only
# at the end (it returns the events each read completed), both through ``feed`` and through the
# ``feed_messages`` fast path.
LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def reference(wire: bytes) -> tuple[list[SSEEvent], str | None]:
    """The events of the complete lines of ``wire`` and the last event id, by the spec."""
    events: list[SSEEvent] = []
    data: list[str] = []
    name: str | None = None
    last_id: str | None = None
    for raw in LINE_ENDS.split(wire)[:-1]:  # after the last line end: not a line yet
        line = raw.decode("utf-8", "replace")
        if not line:
            if data and "\n".join(data):
                events.append(SSEEvent("\n".join(data), name or "message", last_id))
            data, name = [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id" and "\x00" not in value:
            last_id = value
    return events, last_id


wire_lines = st.lists(st.one_of(
    st.sampled_from([b"", b"", b"data", b"data:", b"data: ", b":", b": keep-alive", b"event",
                     b"event:", b"id", b"id:", b"retry: 3000", b"unknown: x", b"dat: a",
                     b"data:  two spaces", b"id: a\x00b", b"\xff\xfe", b"data: \xe2\x82",
                     b"event: \xc3"]),
    st.tuples(st.sampled_from([b"data:", b"data: ", b"event:", b"event: ", b"id:", b"id: ",
                               b":", b"x:"]),
              st.binary(max_size=6).filter(lambda b: b"\r" not in b and b"\n" not in b)
              ).map(b"".join),
), min_size=1, max_size=14)


@settings(max_examples=400, deadline=None)
@example([b"data: x", b"", b"data: y", b""], [b"\r\n", b"\n"], [], True)  # CRLF, then LF
@example([b"data: \xe2\x82", b"", b"id"], [b"\n"], [], True)  # an id after a fast event
@given(wire_lines, st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1),
       st.lists(st.integers(min_value=0, max_value=400)), st.booleans())
def test_every_read_agrees_with_the_reference(lines: list[bytes], ends: list[bytes],
                                              cuts: list[int], fast: bool) -> None:
    wire = b"".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
    if len(lines) % 2:
        wire += b"data: unterminated"  # the stream may end inside a line
    decoder = SSEDecoder()
    got: list[SSEEvent] = []
    last = 0
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        if fast:  # plain data, no event ids: an id line later in the same read is not theirs
            data, events = decoder.feed_messages(wire[last:cut])
            got += [SSEEvent(d.decode("utf-8", "replace")) for d in data] + events
        else:
            got += decoder.feed(wire[last:cut])
        last = cut
        # A CR at the very end of a read may be the first half of a CRLF: held, not yet a line.
        seen = wire[:cut][:-1] if wire[:cut].endswith(b"\r") else wire[:cut]
        expected, expected_id = reference(seen)
        assert comparable(got, fast) == comparable(expected, fast), (wire, cut)
        assert decoder.last_event_id == expected_id, (wire, cut)
    got += decoder.flush()
    expected, expected_id = reference(wire)
    assert comparable(got, fast) == comparable(expected, fast), wire
    assert decoder.last_event_id == expected_id, wire


def comparable(events: list[SSEEvent], fast: bool) -> list[tuple[str, str, str | None]]:
    """Events as compared: ``feed_messages`` hands plain data over without an event id (the
    caller reads ``last_event_id`` if it needs one), so its ids are not compared."""
    return [(e.data, e.event, None if fast else e.id) for e in events]
