"""``ContentDecoder``: a compressed body decodes to what was compressed, however the reads
split it, for every encoding a client advertises (deflate with and without its zlib wrapper)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.client.stream import ContentDecoder, zlib_header


def raw_deflate(body: bytes) -> bytes:
    squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return squeeze.compress(body) + squeeze.flush()


ENCODINGS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress), "x-gzip": ("x-gzip", gzip.compress),
    "deflate": ("deflate", zlib.compress), "raw-deflate": ("deflate", raw_deflate),
}


@pytest.mark.parametrize("name", sorted(ENCODINGS))
@given(body=st.binary(max_size=2048), cuts=st.lists(st.integers(0, 4096), max_size=8))
def test_any_split_decodes_to_the_body(name: str, body: bytes, cuts: list[int]) -> None:
    label, compress = ENCODINGS[name]
    wire = compress(body)
    decoder = ContentDecoder(label)
    edges = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    out = b"".join(decoder.decode(wire[a:b]) for a, b in pairwise(edges))
    assert out == body


def test_the_first_byte_alone_is_held_until_the_header_is_known() -> None:
    """One byte cannot tell zlib from raw deflate: it is held, not decoded as either."""
    wire = raw_deflate(b"hello " * 50)
    decoder = ContentDecoder("deflate")
    assert decoder.decode(wire[:1]) == b""
    assert decoder.decode(wire[1:]) == b"hello " * 50


def test_two_bytes_are_decoded_at_once() -> None:
    """Only the first byte is ever held: from two on, what they decode to is handed over at
    once (a streamed body is not delayed by a byte more than the header needs)."""
    wire = raw_deflate(b'{"a": 1}')
    decoder = ContentDecoder("deflate")
    assert decoder.decode(wire[:2]) == b"{"
    assert decoder.decode(wire[2:]) == b'"a": 1}'


@pytest.mark.parametrize(("head", "is_zlib"), [
    (b"\x78\x9c", True), (b"\x78\x01", True), (b"\x78\xda", True), (b"\x08\x1d", True),
    (b"\x78\x9d", False),   # check bits off by one
    (b"\x79\x9c", False),   # method 9
    (b"\xcb\x48", False),   # raw deflate of b"hello"
])
def test_the_zlib_header_rule(head: bytes, is_zlib: bool) -> None:
    assert zlib_header(head) is is_zlib


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="br"):
        ContentDecoder("br")
