"""The fault proxy's ground truth says what the upstream answered, like the emulator's does."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from harness import Client
from harness.client.models import TextDelta
from harness.proxy import create_proxy_app
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
