"""Emulator: every malformed request gets a 4xx in LM Studio's JSON shape, never a 500 or text.

The named cases are the ones found by probing (a body nested 50,000 deep, a schema that refers
to itself); the hypothesis fuzzers throw arbitrary JSON and bytes at every POST endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.studio.catalog import load_catalog
from harness.studio.testing import StudioHandle, running_studio

POSTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
         "/api/v0/chat/completions", "/api/v0/completions", "/api/v0/embeddings",
         "/v1/messages", "/api/v1/chat", "/api/v1/models/load", "/api/v1/models/unload")
MODEL = "qwen/qwen3-4b"


@pytest.fixture(scope="module")
def studio() -> Iterator[StudioHandle]:
    fast = load_catalog().with_speed(ttft_s=0.0, tokens_per_s=1e6, load_time_s=0.0)
    with running_studio(catalog=fast, control=False, auto_evict=False) as handle:
        yield handle


@pytest.fixture(scope="module")
def http(studio: StudioHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=studio.base_url, timeout=30) as client:
        yield client


def _assert_lmstudio_error_or_ok(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert "json" in response.headers.get("content-type", ""), response.text[:200]
        assert isinstance(response.json(), dict)


DEEP = b'{"model":"qwen/qwen3-4b","messages":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _schema(schema: object) -> dict[str, object]:
    return {**CHAT, "response_format": {"type": "json_schema",
                                        "json_schema": {"name": "x", "schema": schema}}}


NAMED = {
    "deeply-nested-body": DEEP,
    "deeply-nested-object": b'{"model":"m","x":' + b'{"a":' * 20_000 + b"1" + b"}" * 20_001,
    "self-ref-schema": json.dumps(_schema({"$ref": "#"})).encode(),
    "self-ref-property": json.dumps(_schema({"type": "object", "properties": {
        "a": {"$ref": "#"}}, "required": ["a"]})).encode(),
    "remote-ref": json.dumps(_schema({"$ref": "http://evil.example/s.json"})).encode(),
    "missing-ref": json.dumps(_schema({"$ref": "#/$defs/nope"})).encode(),
    "deep-schema": json.dumps(_schema(
        json.loads('{"type":"array","items":' * 400 + '{"type":"string"}' + "}" * 400))).encode(),
    "not-utf8": b'{"model":"qwen/qwen3-4b","messages":[{"role":"user","content":"\xff"}]}',
    "huge-number": b'{"model":"qwen/qwen3-4b","messages":[],"max_tokens":1e400}',
    "nan-literal": b'{"model":"qwen/qwen3-4b","temperature":NaN,"messages":[{"role":"user",'
                   b'"content":"x"}],"max_tokens":4}',
    "unhashable-role": b'{"model":"qwen/qwen3-4b","input":[{"role":[],"content":"x"}],'
                       b'"messages":[{"role":[],"content":"x"}]}',  # found by the fuzzer
    "array-body": b"[1,2,3]",
    "empty-body": b"",
    "nul-body": b"\x00\x00",
    "lone-surrogate": b'{"model":"qwen/qwen3-4b","messages":[{"role":"user","content":'
                      b'"\\ud800"}],"max_tokens":4}',
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v0/chat/completions",
                                  "/api/v1/chat", "/v1/messages", "/v1/responses"])
@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_malformed_requests(http: httpx.Client, path: str, name: str) -> None:
    response = http.post(path, content=NAMED[name],
                         headers={"content-type": "application/json"})
    _assert_lmstudio_error_or_ok(response)


def test_deep_body_is_lmstudios_400(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", content=DEEP)
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid JSON in request body: nested too deeply"}


def test_self_referencing_schema_is_a_400(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=_schema({"$ref": "#"}))
    assert response.status_code == 400 and isinstance(response.json()["error"], str)


_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(
    max_size=20)
_json = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "bogus"]) | _json},
    optional={"content": st.text(max_size=30) | _json, "tool_calls": _json,
              "tool_call_id": _json}), max_size=3)
_small = st.integers(-3, 24) | _json
_body = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from([MODEL, "google/gemma-3-12b", "nope/none",
                              "text-embedding-nomic-embed-text-v1.5"]) | _json,
    "messages": _messages | _json,
    "input": st.text(max_size=30) | _messages | _json,
    "prompt": st.text(max_size=30) | _json,
    "system": _json, "stream": st.booleans() | _json, "max_tokens": _small,
    "max_output_tokens": _small, "temperature": _json, "top_p": _json, "seed": _json,
    "stop": _json, "ttl": _json, "stream_options": _json, "response_format": _json,
    "tools": _json, "tool_choice": _json, "reasoning": _json, "integrations": _json,
    "store": _json, "previous_response_id": _json, "context_length": _json,
    "draft_model": _json, "logprobs": _json, "n": _json,
})


@settings(max_examples=250, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(POSTS), body=_body)
def test_fuzz_json_bodies(http: httpx.Client, path: str, body: dict[str, object]) -> None:
    try:
        content = json.dumps(body, allow_nan=True).encode()
    except (ValueError, OverflowError):
        return
    _assert_lmstudio_error_or_ok(http.post(path, content=content))


@settings(max_examples=100, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(POSTS), raw=st.binary(max_size=200))
def test_fuzz_raw_bodies(http: httpx.Client, path: str, raw: bytes) -> None:
    _assert_lmstudio_error_or_ok(http.post(path, content=raw))
