"""``/v1/messages`` (Anthropic-compatible, LM Studio 0.4.1+) read through the official
``anthropic`` SDK: non-stream, the SSE event sequence, tool use, errors and auth headers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from harness.studio.catalog import load_catalog
from harness.studio.testing import StudioHandle, running_studio

MODEL = "qwen/qwen3-4b"
THINKER = "qwen/qwen3-4b-thinking-2507"
HELLO = [{"role": "user", "content": "Say hello from LM Studio."}]
TOOLS = [{"name": "add", "description": "a + b", "input_schema": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"]}}]
DIRECTIVE = 'Add. [[tools: [[{"name": "add", "arguments": {"a": 1, "b": 2}}]]]]'


@pytest.fixture()
def claude(fresh: StudioHandle) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fresh.base_url, api_key="lmstudio",
                             max_retries=0) as client:
        yield client


def test_non_stream_message(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=256, messages=HELLO)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock) and block.text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    short = claude.messages.create(model=MODEL, max_tokens=2, messages=HELLO)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2


def test_stream_matches_non_stream(claude: anthropic.Anthropic, http: httpx.Client) -> None:
    plain = claude.messages.create(model=THINKER, max_tokens=256, messages=HELLO)
    with claude.messages.stream(model=THINKER, max_tokens=256, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] == [
        b.type for b in plain.content]
    assert text == final.content[1].text == plain.content[1].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == \
        plain.usage.output_tokens
    with http.stream("POST", "/v1/messages", json={"model": MODEL, "max_tokens": 20,
                                                    "messages": HELLO, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        names = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}


def test_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(model=MODEL, max_tokens=256, tools=TOOLS,  # type: ignore[arg-type]
                                   tool_choice={"type": "any"},
                                   messages=[{"role": "user", "content": DIRECTIVE}])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if isinstance(b, anthropic.types.ToolUseBlock))
    assert use.name == "add" and use.input == {"a": 1, "b": 2} and use.id
    with claude.messages.stream(model=MODEL, max_tokens=256, tools=TOOLS,  # type: ignore[arg-type]
                                messages=[{"role": "user", "content": DIRECTIVE}]) as stream:
        streamed = stream.get_final_message()
    streamed_use = next(b for b in streamed.content if isinstance(b, anthropic.types.ToolUseBlock))
    assert streamed_use.input == use.input and streamed.stop_reason == "tool_use"
    second = claude.messages.create(
        model=MODEL, max_tokens=256, tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": DIRECTIVE},
                  {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": "3"}]}])
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "Done after 1 round(s). Tool results: 3"  # type: ignore[union-attr]


@pytest.mark.parametrize("body", [
    {"messages": HELLO, "max_tokens": 10},
    {"model": MODEL, "messages": HELLO},
    {"model": MODEL, "max_tokens": 10, "messages": []},
    {"model": MODEL, "max_tokens": 10, "messages": [{"role": "robot", "content": "x"}]},
    {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": 5}]},
    {"model": MODEL, "max_tokens": 10, "messages": HELLO, "tools": [{"x": 1}]},
    {"model": MODEL, "max_tokens": 10, "messages": HELLO, "tool_choice": "any"},
    {"model": MODEL, "max_tokens": 10, "messages": HELLO, "stream": "yes"},
])
def test_malformed_requests_get_anthropic_400s(body: dict, http: httpx.Client) -> None:
    r = http.post("/v1/messages", json=body)
    assert r.status_code == 400
    payload = r.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert isinstance(payload["error"]["message"], str)
    broken = http.post("/v1/messages", content=b"{not json",
                       headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["type"] == "error"


def test_errors_through_the_sdk(claude: anthropic.Anthropic, fresh: StudioHandle,
                                http: httpx.Client) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=MODEL, max_tokens=10,
                               messages=[{"role": "user", "content": "word " * 40_000}])
    assert "Input does not fit in context length" in bad.value.message
    http.post("/api/v1/models/load", json={"model": MODEL})
    http.post("/api/v1/models/load", json={"model": THINKER})
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="no/such-model", max_tokens=10, messages=HELLO)
    with pytest.raises(anthropic.APIStatusError, match="Compute error"), \
            claude.messages.stream(model=MODEL, max_tokens=50, messages=HELLO, extra_headers={
                "X-Harness-Fault": json.dumps({"kind": "error_frame", "after_chunks": 3})}
            ) as stream:
        for _ in stream:
            pass
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_headers={
            "X-Harness-Fault": json.dumps({"kind": "template_error"})})


def test_semantic_fault_on_messages(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL, max_tokens=256, messages=HELLO,
        extra_headers={"X-Harness-Fault": json.dumps({"kind": "content_to_reasoning"})})
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == ""  # type: ignore[union-attr]


def test_x_api_key_and_bearer() -> None:
    token = "sk-lm-abcdefgh:abcdefghijklmnopqrst"
    with running_studio(api_token=token) as s:
        with anthropic.Anthropic(base_url=s.base_url, api_key=token, max_retries=0) as good:
            assert good.messages.create(model=MODEL, max_tokens=5, messages=HELLO).content
        with anthropic.Anthropic(base_url=s.base_url, auth_token=token, max_retries=0) as bearer:
            assert bearer.messages.create(model=MODEL, max_tokens=5, messages=HELLO).content
        with anthropic.Anthropic(base_url=s.base_url, api_key="wrong", max_retries=0) as bad, \
                pytest.raises(anthropic.AuthenticationError):
            bad.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        r = httpx.get(s.base_url + "/v1/models", headers={"x-api-key": token})
        assert r.status_code == 200
        assert httpx.get(s.base_url + "/v1/models").status_code == 401


def test_unload_mid_message_is_an_anthropic_500() -> None:
    slow = load_catalog().with_speed(tokens_per_s=50.0)
    with running_studio(catalog=slow, cutoff_style="error", preload=(MODEL,)) as s, \
            httpx.Client(base_url=s.base_url, timeout=10) as c:
        got: list[httpx.Response] = []
        t = threading.Thread(target=lambda: got.append(c.post("/v1/messages", json={
            "model": MODEL, "max_tokens": 40, "messages": HELLO})))
        t.start()
        deadline = time.monotonic() + 5
        while not any(r["endpoint"] == "/v1/messages" and r["instance_id"] for r in s.truth()) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert c.post("/api/v1/models/unload", json={"instance_id": MODEL}).status_code == 200
        t.join(10)
    assert got[0].status_code == 500
    assert got[0].json() == {"type": "error", "error": {"type": "api_error",
                                                        "message": "Model is unloaded."}}
