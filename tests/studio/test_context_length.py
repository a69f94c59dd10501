"""Context length is real: prompts are counted against the loaded context (catalog default,
load ``context_length``, or ``/api/v1/chat``'s), and overflow answers as LM Studio does
(LMSTUDIO_API.md §2.2, §6 item 10; BT#237, BT#2322, BT#2339)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from harness.studio.testing import StudioHandle, running_studio

MODEL = "qwen/qwen3-4b"  # catalog: loaded context 4096, maximum 32768
HUGE = "word " * 40_000  # ~50,000 tokens by the emulator's count
MEDIUM = "word " * 8_000  # ~10,000 tokens: over 4096, under 32768


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture()
def sdk(fresh: StudioHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fresh.base_url + "/v1", api_key="lm-studio",
                       max_retries=0) as client:
        yield client


def test_overflow_non_stream_is_a_400_with_lm_studios_message(sdk: openai.OpenAI,
                                                             fresh: StudioHandle) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=messages(HUGE))
    message = caught.value.response.json()["error"]
    assert isinstance(message, str)  # LM Studio's string error (shape A)
    assert message.startswith("Trying to keep the first ")
    assert "context length of only 4096 tokens" in message
    record = fresh.truth()[-1]
    assert record["status"] == 400 and record["completion_tokens"] == 0


def test_overflow_stream_is_200_with_only_an_error_frame(sdk: openai.OpenAI,
                                                        http: httpx.Client) -> None:
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": MODEL, "messages": messages(HUGE), "stream": True}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[0] == "event: error" and len(lines) == 2
    payload = json.loads(lines[1].removeprefix("data: "))
    assert payload["message"] == payload["error"]["message"]
    assert payload["message"].startswith("Input does not fit in context length. The input has ")
    assert payload["message"].endswith("the context length only supports 4096 tokens.")
    stream = sdk.chat.completions.create(model=MODEL, messages=messages(HUGE), stream=True)
    with pytest.raises(openai.APIError, match="Input does not fit"):
        list(stream)


def test_gguf_overflow_is_an_empty_well_formed_completion() -> None:
    with running_studio(overflow="empty") as s, \
            openai.OpenAI(base_url=s.base_url + "/v1", api_key="x", max_retries=0) as sdk:
        plain = sdk.chat.completions.create(model=MODEL, messages=messages(HUGE))
        assert plain.choices[0].message.content == ""
        assert plain.choices[0].finish_reason == "stop"
        assert plain.usage is not None and plain.usage.prompt_tokens > 4096
        chunks = list(sdk.chat.completions.create(
            model=MODEL, messages=messages(HUGE), stream=True,
            stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 4096


def test_a_larger_loaded_context_fits(sdk: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=MODEL, messages=messages(MEDIUM))
    loaded = http.post("/api/v1/models/load", json={"model": MODEL, "context_length": 16384})
    assert loaded.status_code == 200
    reply = sdk.chat.completions.create(model=loaded.json()["instance_id"],
                                        messages=messages(MEDIUM))
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.choices[0].message.content
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=MODEL, messages=messages(HUGE))


def test_native_chat_context_length(fresh: StudioHandle, http: httpx.Client) -> None:
    short = http.post("/api/v1/chat", json={"model": MODEL, "input": MEDIUM})
    assert short.status_code == 400
    assert short.json()["error"]["type"] == "invalid_request"
    assert short.json()["error"]["message"].startswith("Input does not fit in context length.")
    with http.stream("POST", "/api/v1/chat",
                     json={"model": MODEL, "input": MEDIUM, "stream": True}) as r:
        names = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert names[0] == "chat.start" and names[-2:] == ["error", "chat.end"]
    assert "message.start" not in names
    fresh.reset()
    # A JIT load by /api/v1/chat uses the request's context length.
    fits = http.post("/api/v1/chat", json={"model": MODEL, "input": MEDIUM,
                                           "context_length": 16000})
    assert fits.status_code == 200 and fits.json()["stats"]["input_tokens"] > 4096
    listed = next(m for m in http.get("/api/v1/models").json()["models"] if m["key"] == MODEL)
    assert listed["loaded_instances"][0]["config"]["context_length"] == 16000


def test_v0_reports_the_loaded_context(http: httpx.Client) -> None:
    http.post("/api/v1/models/load", json={"model": MODEL, "context_length": 12000})
    entry = http.get(f"/api/v0/models/{MODEL}").json()
    assert entry["loaded_context_length"] == 12000
