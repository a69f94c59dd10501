"""Tests written against the SSE decoder's surviving mutants (docs/mutation.md)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from harness.client.sse import SSEDecoder, SSEEvent


def test_invalid_utf8_in_a_data_line_becomes_replacement_characters_not_a_crash() -> None:
    """A server's broken bytes reach the caller as U+FFFD (visible in the text), and the rest
    of the stream still decodes: the decoder never raises mid-stream on bad input."""
    decoder = SSEDecoder()
    events = decoder.feed(b"data: ok \xff\xfe!\n\ndata: next\n\n")
    assert events == [SSEEvent("ok \ufffd\ufffd!"), SSEEvent("next")]


@given(st.text(max_size=40), st.lists(st.integers(1, 8), max_size=12))
def test_a_multibyte_payload_split_anywhere_decodes_as_if_whole(text: str, cuts: list[int]
                                                                ) -> None:
    wire = b"data: " + text.replace("\n", " ").replace("\r", " ").encode("utf-8") + b"\n\n"
    decoder, events, start = SSEDecoder(), [], 0
    for size in cuts:
        events += decoder.feed(wire[start:start + size])
        start += size
    events += decoder.feed(wire[start:])
    expected = text.replace("\n", " ").replace("\r", " ")
    assert [e.data for e in events] == ([expected] if expected else [])
