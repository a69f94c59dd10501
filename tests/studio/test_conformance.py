"""The official ``openai`` SDK against the emulator, and native shapes against documented models."""

from __future__ import annotations

from typing import Any, Literal

import httpx
import openai
from pydantic import BaseModel, ConfigDict

from harness.studio.testing import StudioHandle

MODEL = "qwen/qwen3-4b"


def sdk(handle: StudioHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=handle.base_url + "/v1", api_key="lm-studio", max_retries=0)


def test_list_models(fresh: StudioHandle) -> None:
    ids = [m.id for m in sdk(fresh).models.list()]
    assert MODEL in ids and "text-embedding-nomic-embed-text-v1.5" in ids


def test_complete_and_stream_agree(fresh: StudioHandle) -> None:
    client = sdk(fresh)
    messages: Any = [{"role": "user", "content": "say something"}]
    done = client.chat.completions.create(model=MODEL, messages=messages, seed=3)
    assert done.choices[0].finish_reason == "stop" and done.model == MODEL
    text = ""
    finish = None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, seed=3,
                                                stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert text == done.choices[0].message.content and finish == "stop"


def test_stream_tool_calls(fresh: StudioHandle) -> None:
    directive = '[[tools: [[{"name": "add", "arguments": {"a": 1, "b": 2}}]]]]'
    tools: Any = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    stream = sdk(fresh).chat.completions.create(
        model=MODEL, stream=True, tools=tools,
        messages=[{"role": "user", "content": f"add {directive}"}])
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            entry = calls.setdefault(tc.index, {"name": "", "arguments": "", "id": ""})
            entry["id"] = tc.id or entry["id"]
            entry["name"] += tc.function.name or "" if tc.function else ""
            entry["arguments"] += tc.function.arguments or "" if tc.function else ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls"
    assert calls[0]["name"] == "add" and calls[0]["arguments"] == '{"a":1,"b":2}'
    assert calls[0]["id"].isdigit()


def test_tool_rounds_then_text(fresh: StudioHandle) -> None:
    directive = '[[tools: [[{"name": "f", "arguments": {}}]]]]'
    reply = sdk(fresh).chat.completions.create(model=MODEL, messages=[
        {"role": "user", "content": directive},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "42"},
    ])
    assert reply.choices[0].message.content == "Done after 1 round(s). Tool results: 42"


def test_embeddings_are_unit_and_deterministic(fresh: StudioHandle) -> None:
    client = sdk(fresh)
    a = client.embeddings.create(model="text-embedding-nomic-embed-text-v1.5", input=["x", "y"])
    b = client.embeddings.create(model="text-embedding-nomic-embed-text-v1.5", input="x")
    v = a.data[0].embedding
    assert abs(sum(x * x for x in v) - 1.0) < 1e-9 and v == b.data[0].embedding
    assert a.data[1].embedding != v


def test_responses_with_previous_response_id(fresh: StudioHandle) -> None:
    client = sdk(fresh)
    first = client.responses.create(model=MODEL, input="hello")
    assert first.output_text
    second = client.responses.create(model=MODEL, input="again", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text
    events = [e.type for e in client.responses.create(model=MODEL, input="s", stream=True)]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert "response.output_text.delta" in events


def test_reasoning_fields(fresh: StudioHandle) -> None:
    body = {"messages": [{"role": "user", "content": "think"}]}
    with httpx.Client(base_url=fresh.base_url) as c:
        qwen = c.post("/v1/chat/completions",
                      json={**body, "model": "qwen/qwen3-4b-thinking-2507"}).json()
        oss = c.post("/v1/chat/completions", json={**body, "model": "openai/gpt-oss-20b"}).json()
    assert qwen["choices"][0]["message"]["reasoning_content"]
    assert oss["choices"][0]["message"]["reasoning"]


class V0Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    object: Literal["model"]
    type: Literal["llm", "vlm", "embeddings"]
    publisher: str
    arch: str
    compatibility_type: str | None
    quantization: str
    state: Literal["loaded", "not-loaded"]
    max_context_length: int
    loaded_context_length: int | None = None
    capabilities: list[str] | None = None


class V0Chat(BaseModel):
    id: str
    object: Literal["chat.completion"]
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any]
    stats: dict[str, Any]
    model_info: dict[str, Any]
    runtime: dict[str, Any]


class V1Instance(BaseModel):
    id: str
    config: dict[str, Any]
    remaining_ttl_seconds: float | None = None


class V1Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["llm", "embedding"]
    publisher: str
    key: str
    display_name: str
    architecture: str | None = None
    quantization: dict[str, Any]
    size_bytes: int
    params_string: str | None
    loaded_instances: list[V1Instance]
    max_context_length: int
    format: str | None
    capabilities: dict[str, Any] | None = None
    description: str | None = None
    variants: list[str]
    selected_variant: str


class V1Chat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_instance_id: str
    output: list[dict[str, Any]]
    stats: dict[str, Any]
    response_id: str | None = None


def test_native_shapes(http: httpx.Client) -> None:
    for entry in http.get("/api/v0/models").json()["data"]:
        V0Model.model_validate(entry)
    V0Model.model_validate(http.get(f"/api/v0/models/{MODEL}").json())
    chat = V0Chat.model_validate(http.post("/api/v0/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).json())
    assert chat.stats["stop_reason"] == "eosFound"
    loaded = http.post("/api/v1/models/load", json={"model": "google/gemma-3-12b"}).json()
    assert loaded["status"] == "loaded" and loaded["instance_id"] == "google/gemma-3-12b"
    models = [V1Model.model_validate(m) for m in http.get("/api/v1/models").json()["models"]]
    assert any(m.loaded_instances for m in models if m.key == "google/gemma-3-12b")
    native = V1Chat.model_validate(http.post("/api/v1/chat", json={
        "model": "google/gemma-3-12b", "input": "hi"}).json())
    assert native.response_id and native.response_id.startswith("resp_")
    assert len(native.response_id) == 5 + 48
    assert http.post("/api/v1/models/unload", json={"instance_id": "google/gemma-3-12b"}
                     ).json() == {"instance_id": "google/gemma-3-12b"}


def test_native_chat_stream_events(http: httpx.Client) -> None:
    events = []
    with http.stream("POST", "/api/v1/chat", json={
            "model": "qwen/qwen3-4b-thinking-2507", "input": "hi", "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
    assert events[0] == "chat.start" and events[-1] == "chat.end"
    for name in ("model_load.start", "model_load.end", "prompt_processing.start",
                 "reasoning.delta", "message.delta", "message.end"):
        assert name in events
