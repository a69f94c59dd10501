"""Cassettes: recorded against a token-protected emulator, replayed without any server, and never
holding the token."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.client import Client, RetryPolicy
from harness.evaluate.cassettes import _scrub, cassette_path, use_cassette
from harness.studio.testing import running_studio

TOKEN = "sk-lm-cassette:S3CRET-value-42"
MODEL = "qwen/qwen3-4b"
HELLO = [{"role": "user", "content": f"hello, my key is {TOKEN}"}]


def test_recorded_cassette_holds_no_token_and_replays_offline(tmp_path: Path) -> None:
    path = cassette_path(tmp_path, "suite", "test_x[param/1]")
    assert path.parent.name == "suite" and "/" not in path.name
    with running_studio(api_token=TOKEN) as studio:
        with use_cassette(path, "record", (TOKEN,)), \
                Client(studio.base_url, model=MODEL, api_token=TOKEN) as client:
            recorded = client.chat(HELLO, seed=3)
            with client.stream_chat(HELLO, seed=4) as stream:
                streamed = stream.result()
            listed = [m.id for m in client.list_models()]
    text = path.read_text()
    assert TOKEN not in text and "S3CRET" not in text
    assert "authorization" not in text.lower()
    assert "chat/completions" in text
    # Replay: the server is gone and the port differs; the cassette answers.
    with use_cassette(path, "replay", (TOKEN,)), \
            Client("http://lmstudio.replay:1234", model=MODEL, api_token=TOKEN,
                   retry=RetryPolicy.none()) as client:
        assert client.chat(HELLO, seed=3).text == recorded.text
        with client.stream_chat(HELLO, seed=4) as stream:
            assert stream.result().text == streamed.text
        assert [m.id for m in client.list_models()] == listed


def test_replay_without_cassette_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "test_y.yaml"
    with pytest.raises(FileNotFoundError, match="record it first"), \
            use_cassette(missing, "replay"):
        pass


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_scrub_removes_every_occurrence_of_a_secret(prefix: str) -> None:
    secret = "tok-" + "x" * 12
    data = f"{prefix}{secret}{prefix}Bearer abc.def {secret}".encode()
    scrubbed = _scrub(data, (secret,))
    assert secret.encode() not in scrubbed and b"abc.def" not in scrubbed
