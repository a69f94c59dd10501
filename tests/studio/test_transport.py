"""Transport details: CORS on and off (DOC server settings, BT#392), and LM Studio's object-shaped
400 for a bad ``reasoning_effort`` (CAP ``extra/effort-qwen3.8-27b-off.sse``)."""

from __future__ import annotations

import httpx
import openai
import pytest

from harness.studio.testing import StudioHandle, running_studio

MODEL = "qwen/qwen3-4b"
PREFLIGHT = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type,authorization"}


def test_cors_on() -> None:
    with running_studio(cors=True) as s, httpx.Client(base_url=s.base_url) as c:
        pre = c.options("/v1/chat/completions", headers=PREFLIGHT)
        assert pre.status_code == 204 and pre.content == b""
        assert pre.headers["access-control-allow-origin"] == "*"
        assert pre.headers["access-control-allow-headers"] == "*"
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert "access-control-allow-private-network" not in pre.headers
        assert c.options("/not/a/route", headers=PREFLIGHT).status_code == 204
        listing = c.get("/v1/models", headers={"Origin": "http://localhost:5173"})
        assert listing.headers["access-control-allow-origin"] == "*"
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.headers["access-control-allow-origin"] == "*"
            assert list(r.iter_lines())[-2] == "data: [DONE]"


def test_cors_off_preflight_gets_unexpected_endpoint(http: httpx.Client) -> None:
    pre = http.options("/v1/chat/completions", headers=PREFLIGHT)
    assert pre.status_code == 200
    assert pre.json() == {"error": "Unexpected endpoint or method. (OPTIONS /v1/chat/completions)"}
    assert "access-control-allow-origin" not in pre.headers


@pytest.mark.parametrize("stream", [False, True])
def test_bad_reasoning_effort_is_an_object_error(stream: bool, fresh: StudioHandle,
                                                 http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "off", "stream": stream})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert r.text.startswith('{\n    "error": {')  # pretty-printed, like LM Studio
    assert r.json() == {"error": {
        "message": "Invalid 'reasoning_effort' value: 'off'. Supported values: none, minimal, "
                   "low, medium, high, xhigh.",
        "type": "invalid_request_error", "param": "reasoning_effort", "code": "invalid_value"}}
    with openai.OpenAI(base_url=fresh.base_url + "/v1", api_key="x", max_retries=0) as sdk, \
            pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                    reasoning_effort="off")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_value" and caught.value.param == "reasoning_effort"
