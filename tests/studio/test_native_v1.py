"""Native ``/api/v1`` as documented (DOC 1_developer/2_rest): load options, downloads, stateful
chats, validation, MCP integrations through a real MCP server, and the cut-off sequence."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest

from harness.studio.catalog import load_catalog
from harness.studio.testing import StudioHandle, running_studio

MODEL = "qwen/qwen3-4b"
THINKER = "qwen/qwen3-4b-thinking-2507"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def events(http: httpx.Client, body: dict) -> list[tuple[str, dict]]:
    """The named events of a ``/api/v1/chat`` stream, in order."""
    out: list[tuple[str, dict]] = []
    with http.stream("POST", "/api/v1/chat", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert name is not None and data["type"] == name
                out.append((name, data))
    return out


def test_load_honours_and_echoes_its_options(fresh: StudioHandle, http: httpx.Client) -> None:
    r = http.post("/api/v1/models/load", json={
        "model": MODEL, "context_length": 16384, "parallel": 1, "ttl": 120,
        "flash_attention": False, "echo_load_config": True})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "loaded" and body["instance_id"] == MODEL
    assert body["load_config"] == {"context_length": 16384, "eval_batch_size": 512,
                                   "flash_attention": False, "offload_kv_cache_to_gpu": True,
                                   "parallel": 1}
    listed = next(m for m in http.get("/api/v1/models").json()["models"] if m["key"] == MODEL)
    instance = listed["loaded_instances"][0]
    assert instance["config"] == body["load_config"]
    assert 0 < instance["remaining_ttl_seconds"] <= 120
    other = http.post("/api/v1/models/load", json={"model": "google/gemma-3-12b",
                                                   "parallel": 3, "echo_load_config": True})
    assert other.json()["load_config"]["parallel"] == 3
    assert "load_config" not in http.post("/api/v1/models/load",
                                          json={"model": THINKER}).json()


def test_per_load_parallel_queues() -> None:
    slow = load_catalog().with_speed(tokens_per_s=50.0)  # 0.4 s a request
    with running_studio(catalog=slow) as s, httpx.Client(base_url=s.base_url) as http:
        assert http.post("/api/v1/models/load",
                         json={"model": MODEL, "parallel": 1}).status_code == 200
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 20}
        threads = [threading.Thread(target=http.post, args=("/v1/chat/completions",),
                                    kwargs={"json": body}) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(10)
        waits = sorted(r["queue_wait_s"] for r in s.truth()[-2:])
        assert waits[0] == 0.0 and waits[1] > 0.0


@pytest.mark.parametrize(("body", "status", "kind"), [
    ({}, 400, "invalid_request"),
    ({"model": 7}, 400, "invalid_request"),
    ({"model": MODEL + "@q4_k_m"}, 404, "model_not_found"),
    ({"model": MODEL, "context_length": 10**7}, 400, "invalid_request"),
    ({"model": MODEL, "context_length": "big"}, 400, "invalid_request"),
    ({"model": MODEL, "parallel": 0}, 400, "invalid_request"),
    ({"model": MODEL, "ttl": -1}, 400, "invalid_request"),
    ({"model": MODEL, "flash_attention": "yes"}, 400, "invalid_request"),
])
def test_bad_loads_get_native_errors(body: dict, status: int, kind: str,
                                     http: httpx.Client) -> None:
    r = http.post("/api/v1/models/load", json=body)
    assert r.status_code == status and r.json()["error"]["type"] == kind
    assert isinstance(r.json()["error"]["message"], str)


def test_download_progress_on_the_engine_clock() -> None:
    clock = FakeClock()
    with running_studio(clock=clock, download_bytes_per_s=1e9) as s, \
            httpx.Client(base_url=s.base_url) as c:
        assert c.post("/api/v1/models/download", json={"model": MODEL}).json() == {
            "status": "already_downloaded"}
        started = c.post("/api/v1/models/download", json={"model": "ibm/granite-4-micro"}).json()
        assert re.fullmatch(r"job_[0-9a-f]{10}", started["job_id"])
        assert started["status"] == "downloading" and started["total_size_bytes"] > 10**9
        assert started["started_at"].endswith("Z")
        url = f"/api/v1/models/download/status/{started['job_id']}"
        clock.now += 0.5
        mid = c.get(url).json()
        assert mid["status"] == "downloading" and mid["downloaded_bytes"] == 500_000_000
        assert mid["bytes_per_second"] == 1e9 and "estimated_completion" in mid
        assert c.post("/api/v1/models/load", json={"model": "ibm/granite-4-micro"}
                      ).status_code == 404
        clock.now += 10
        done = c.get(url).json()
        assert done["status"] == "completed" and "completed_at" in done
        assert done["downloaded_bytes"] == done["total_size_bytes"]
        assert c.post("/api/v1/models/load", json={"model": "ibm/granite-4-micro"}
                      ).status_code == 200
        hf = c.post("/api/v1/models/download", json={
            "model": "https://huggingface.co/lmstudio-community/Foo-7B-GGUF",
            "quantization": "Q8_0"}).json()
        assert hf["status"] == "downloading"
        for body, status, kind in (({"model": "no-slash"}, 404, "model_not_found"),
                                   ({"model": "a/b", "quantization": "Q8_0"}, 400,
                                    "invalid_request"),
                                   ({"model": ["a/b"]}, 400, "invalid_request"),
                                   ({}, 400, "invalid_request")):
            r = c.post("/api/v1/models/download", json=body)
            assert (r.status_code, r.json()["error"]["type"]) == (status, kind)
        missing = c.get("/api/v1/models/download/status/job_0000000000")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "job_not_found"


def test_stateful_chat(http: httpx.Client) -> None:
    first = http.post("/api/v1/chat", json={"model": MODEL, "input": "hi"}).json()
    assert re.fullmatch(r"resp_[0-9a-f]{48}", first["response_id"])
    second = http.post("/api/v1/chat", json={"model": MODEL, "input": "again",
                                             "previous_response_id": first["response_id"]})
    assert second.status_code == 200
    assert second.json()["stats"]["input_tokens"] > first["stats"]["input_tokens"]
    unstored = http.post("/api/v1/chat", json={"model": MODEL, "input": "x", "store": False})
    assert "response_id" not in unstored.json()
    streamed = events(http, {"model": MODEL, "input": "hi"})
    assert streamed[0][0] == "chat.start" and streamed[-1][0] == "chat.end"
    assert streamed[-1][1]["result"]["response_id"].startswith("resp_")


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi"}, "model"),
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": 5}, "input"),
    ({"model": MODEL, "input": [{"type": "audio"}]}, "input"),
    ({"model": MODEL, "input": "hi", "previous_response_id": "abc"}, "previous_response_id"),
    ({"model": MODEL, "input": "hi", "previous_response_id": "resp_0"}, "previous_response_id"),
    ({"model": MODEL, "input": "hi", "context_length": 0}, "context_length"),
    ({"model": MODEL, "input": "hi", "context_length": 10**7}, "context_length"),
    ({"model": MODEL, "input": "hi", "reasoning": "maybe"}, "reasoning"),
    ({"model": MODEL, "input": "hi", "reasoning": "on"}, "reasoning"),
    ({"model": THINKER, "input": "hi", "reasoning": "high"}, "reasoning"),
    ({"model": MODEL, "input": "hi", "integrations": "mcp/x"}, "integrations"),
    ({"model": MODEL, "input": "hi", "store": "yes"}, "store"),
    ({"model": MODEL, "input": "hi", "temperature": "hot"}, "temperature"),
])
def test_bad_chat_requests_get_native_400s(body: dict, param: str, http: httpx.Client) -> None:
    for stream in (False, True):
        r = http.post("/api/v1/chat", json={**body, "stream": stream})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request" and error["param"] == param


def test_reasoning_setting(http: httpx.Client) -> None:
    on = http.post("/api/v1/chat", json={"model": THINKER, "input": "hi"}).json()
    off = http.post("/api/v1/chat", json={"model": THINKER, "input": "hi", "reasoning": "off"})
    assert [o["type"] for o in on["output"]] == ["reasoning", "message"]
    assert [o["type"] for o in off.json()["output"]] == ["message"]
    caps = next(m for m in http.get("/api/v1/models").json()["models"] if m["key"] == THINKER)
    assert caps["capabilities"]["reasoning"] == {"allowed_options": ["off", "on"],
                                                 "default": "on"}


def test_cut_off_sends_error_then_chat_end(fresh: StudioHandle, http: httpx.Client) -> None:
    assert http.post("/api/v1/models/load", json={"model": MODEL}).status_code == 200
    got: list[tuple[str, dict]] = []
    body = {"model": MODEL, "input": "long please", "max_output_tokens": 60}
    slow = {"X-Harness-Fault": json.dumps({"kind": "latency", "between_chunks_s": 0.02})}

    def run() -> None:
        with http.stream("POST", "/api/v1/chat", json={**body, "stream": True},
                         headers=slow) as r:
            name = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    got.append((str(name), json.loads(line[6:])))

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 5
    while sum(1 for n, _ in got if n == "message.delta") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    with httpx.Client(base_url=fresh.base_url) as other:
        assert other.post("/api/v1/models/unload", json={"instance_id": MODEL}).status_code == 200
    t.join(5)
    names = [n for n, _ in got]
    assert names[-2:] == ["error", "chat.end"] and "message.end" not in names
    assert got[-2][1]["error"]["message"] == "Model is unloaded."
    partial = got[-1][1]["result"]["output"][-1]["content"]
    streamed = "".join(d["content"] for n, d in got if n == "message.delta")
    assert partial == streamed and partial


TOOL_INPUT = ('Compute. [[tools: [[{"name": "add", "arguments": {"a": 1, "b": 2}}], '
              '[{"name": "open_browser", "arguments": {}}]]]]')


def test_ephemeral_mcp_tools_run_for_real(http_calculator: str) -> None:
    with running_studio(allow_ephemeral_mcp=True, allow_local_mcp=True) as s, \
            httpx.Client(base_url=s.base_url, timeout=30) as c:
        integration = {"type": "ephemeral_mcp", "server_label": "calc",
                       "server_url": http_calculator, "allowed_tools": ["add"]}
        body = {"model": MODEL, "input": TOOL_INPUT, "integrations": [integration]}
        plain = c.post("/api/v1/chat", json=body)
        assert plain.status_code == 200, plain.text
        output = plain.json()["output"]
        assert [o["type"] for o in output] == ["tool_call", "invalid_tool_call", "message"]
        call = output[0]
        assert call["tool"] == "add" and call["arguments"] == {"a": 1, "b": 2}
        assert call["provider_info"] == {"type": "ephemeral_mcp", "server_label": "calc"}
        assert json.loads(call["output"])[0]["text"] == "3.0"
        assert output[1]["metadata"] == {"type": "invalid_name", "tool_name": "open_browser"}
        assert output[2]["content"].startswith("Done after 2 round(s)")
        streamed = events(c, body)
        names = [n for n, _ in streamed]
        tool_events = [n for n in names if n.startswith("tool_call.")]
        assert tool_events == ["tool_call.start", "tool_call.arguments", "tool_call.success",
                               "tool_call.failure"]
        assert names.index("tool_call.success") < names.index("message.start")
        assert streamed[-1][1]["result"]["output"] == output
        # allowed_tools hides the calculator's other tools
        body["input"] = 'x [[tools: [[{"name": "multiply", "arguments": {"a": 2, "b": 3}}]]]]'
        hidden = c.post("/api/v1/chat", json=body).json()["output"]
        assert hidden[0]["type"] == "invalid_tool_call"


def test_integrations_refused_as_lm_studio_does(http_calculator: str) -> None:
    ephemeral = {"type": "ephemeral_mcp", "server_label": "calc", "server_url": http_calculator}
    with running_studio() as s, httpx.Client(base_url=s.base_url) as c:
        cases = [
            ([ephemeral], 403, "mcp_connection_error"),
            (["mcp/calc"], 403, "plugin_connection_error"),
            (["Not A Plugin"], 400, "plugin_connection_error"),
            ([{"type": "remote"}], 400, "invalid_request"),
        ]
        for integrations, status, kind in cases:
            r = c.post("/api/v1/chat", json={"model": MODEL, "input": "hi",
                                              "integrations": integrations})
            assert (r.status_code, r.json()["error"]["type"]) == (status, kind), integrations
    with running_studio(allow_ephemeral_mcp=True, allow_mcp_json=True) as s, \
            httpx.Client(base_url=s.base_url) as c:
        local = c.post("/api/v1/chat", json={"model": MODEL, "input": "hi",
                                              "integrations": [ephemeral]})
        assert local.status_code == 400 and "not a public address" in local.json()[
            "error"]["message"]
        missing = c.post("/api/v1/chat", json={"model": MODEL, "input": "hi",
                                                "integrations": ["mcp/calc"]})
        assert missing.json()["error"]["type"] == "plugin_connection_error"
    with running_studio(allow_ephemeral_mcp=True, allow_local_mcp=True) as s, \
            httpx.Client(base_url=s.base_url) as c:
        down = {**ephemeral, "server_url": "http://127.0.0.1:9/mcp"}
        r = c.post("/api/v1/chat", json={"model": MODEL, "input": "hi", "integrations": [down]})
        assert r.status_code == 400 and r.json()["error"]["type"] == "mcp_connection_error"


def test_catalog_context_is_the_default(http: httpx.Client) -> None:
    spec = load_catalog().models[0]
    http.post("/api/v1/models/load", json={"model": spec.key})
    listed = next(m for m in http.get("/api/v1/models").json()["models"] if m["key"] == spec.key)
    assert listed["loaded_instances"][0]["config"]["context_length"] == \
        spec.loaded_context_length


@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/models/load",
                                  "/api/v1/models/download", "/api/v1/models/unload"])
def test_malformed_json_gets_the_native_400(path: str, http: httpx.Client) -> None:
    for raw in (b"{not json", b"[1, 2]", b""):
        r = http.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, raw)
        assert r.json()["error"]["type"] == "invalid_request"
