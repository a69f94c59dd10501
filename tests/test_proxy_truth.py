"""The fault proxy's ground truth says what the upstream answered, like the emulator's does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import Client
from harness.client.models import TextDelta
from harness.proxy import _frames, create_proxy_app
from harness.studio.server import BackgroundServer
from harness.studio.testing import running_studio

MODEL = "qwen/qwen3-4b"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def proxy() -> Iterator[BackgroundServer]:
    with running_studio(preload=(MODEL,)) as studio:
        server = BackgroundServer(create_proxy_app(studio.base_url))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def records(proxy: BackgroundServer) -> list[dict[str, object]]:
    return list(httpx.get(proxy.base_url + "/_harness/truth").json()["records"])


def test_stream_and_plain_answers_are_observed(proxy: BackgroundServer) -> None:
    with Client(proxy.base_url, model=MODEL) as client:
        plain = client.chat(MSG, max_tokens=5)
        with client.stream_chat(MSG, max_tokens=5) as stream:
            streamed = stream.result()
    plain_truth, stream_truth = records(proxy)[-2:]
    for truth, result in ((plain_truth, plain), (stream_truth, streamed)):
        assert truth["instance_id"] == result.model
        assert truth["finish_reason"] == result.finish_reason
        assert result.usage is not None
        assert truth["completion_tokens"] == result.usage.completion_tokens
        assert truth["disconnect_seen"] is False


def test_early_close_is_seen(proxy: BackgroundServer) -> None:
    with Client(proxy.base_url, model=MODEL) as client, \
            client.stream_chat(MSG, max_tokens=400) as stream:
        for event in stream:
            assert isinstance(event, TextDelta)
            break
    deadline = time.monotonic() + 3
    while not records(proxy)[-1]["disconnect_seen"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert records(proxy)[-1]["disconnect_seen"] is True


def test_client_request_id_is_recorded(proxy: BackgroundServer) -> None:
    """Load runs pair client records with truth by X-Request-Id, through the proxy too."""
    r = httpx.post(proxy.base_url + "/v1/chat/completions", headers={"X-Request-Id": "run-7"},
                   json={"model": MODEL, "messages": MSG, "max_tokens": 2})
    assert r.status_code == 200
    assert records(proxy)[-1]["client_request_id"] == "run-7"


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n\n"),
                max_size=8),
       st.lists(st.integers(1, 40), max_size=12), st.binary(max_size=10))
def test_frames_are_whole_and_byte_exact_however_the_reads_fall(
        frames: list[bytes], cuts: list[int], tail: bytes) -> None:
    """The proxy's frame splitter passes every frame once, unchanged, and an unterminated
    tail at the end of the stream as it came."""
    wire = b"".join(frames) + tail.replace(b"\n", b"")
    reads, at = [], 0
    for size in cuts:
        reads.append(wire[at:at + size])
        at += size
    reads.append(wire[at:])

    async def split() -> list[bytes]:
        async def source() -> AsyncIterator[bytes]:
            for read in reads:
                yield read

        return [frame async for frame in _frames(source())]

    out = asyncio.run(split())
    rest = tail.replace(b"\n", b"")
    assert out == frames + ([rest] if rest else [])
