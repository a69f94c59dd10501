"""Engine behaviour (JIT, TTL, evict cut-off, :N bug, FIFO), faults and bad input over HTTP."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from harness.faults import FaultPlan, FaultPlanError, StatusFault, parse_action
from harness.proxy import create_proxy_app
from harness.studio.catalog import load_catalog
from harness.studio.server import BackgroundServer
from harness.studio.testing import StudioHandle, running_studio

MODEL = "qwen/qwen3-4b"
OTHER = "google/gemma-3-12b"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def stream_lines(client: httpx.Client, body: dict, headers: dict | None = None) -> list[str]:
    lines: list[str] = []
    try:
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True},
                           headers=headers or {}) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
    except httpx.RemoteProtocolError:
        lines.append("<dropped>")
    return lines


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_expires_on_injected_clock() -> None:
    clock = FakeClock()
    with running_studio(clock=clock) as s, httpx.Client(base_url=s.base_url) as c:
        assert c.post("/v1/chat/completions", json={**CHAT, "ttl": 30}).status_code == 200
        assert [i["id"] for i in s.engine.state()["instances"]] == [MODEL]
        clock.now += 29
        assert s.call(_reap(s)) == []
        clock.now += 2
        assert s.call(_reap(s)) == [MODEL]


async def _reap(s: StudioHandle) -> list[str]:
    return s.engine.reap_expired()


@pytest.mark.parametrize(("mode", "expect_finish"), [("cancel", False), ("finish", True)])
def test_jit_switch_cuts_off_or_finishes(mode: str, expect_finish: bool) -> None:
    with running_studio(evict_mode=mode) as s, httpx.Client(base_url=s.base_url) as c:
        c.post("/api/v0/chat/completions", json={**CHAT, "max_tokens": 1})  # load MODEL (JIT)
        out: list[list[str]] = []
        slow = {"model": MODEL, "messages": CHAT["messages"], "max_tokens": 40}
        t = threading.Thread(target=lambda: out.append(stream_lines(
            c, slow, {"X-Harness-Fault": '{"kind":"latency","between_chunks_s":0.02}'})))
        t.start()
        import time
        time.sleep(0.15)
        assert c.post("/v1/chat/completions", json={**CHAT, "model": OTHER}).status_code == 200
        t.join(5)
        lines = out[0]
        finished = any('"finish_reason":"' in line for line in lines)
        assert finished is expect_finish
        assert lines[-1] == "data: [DONE]"
        truth = next(r for r in s.truth() if r["stream"])
        assert truth["cut_off"] is (not expect_finish)


def test_duplicate_instances_bug_option() -> None:
    # The three requests must all arrive while the first load runs: a 0.4 s load, not the
    # default 0.05 s, which a busy machine's thread start-up could outlast.
    slow_load = load_catalog().with_speed(load_time_s=0.4)
    with running_studio(catalog=slow_load, duplicate_jit_instances=True) as s, \
            httpx.Client(base_url=s.base_url) as c:
        threads = [threading.Thread(target=c.post, args=("/v1/chat/completions",),
                                    kwargs={"json": {**CHAT, "max_tokens": 1}}) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = sorted(i["id"] for i in s.engine.state()["instances"])
        assert ids == [MODEL, f"{MODEL}:2", f"{MODEL}:3"]


def test_fifo_slots() -> None:
    # 0.4 s a request, 0.05 s between arrivals: the order holds on a busy machine too.
    slow = load_catalog().with_speed(tokens_per_s=50.0)
    with running_studio(catalog=slow, parallel=1, preload=[MODEL]) as s, \
            httpx.Client(base_url=s.base_url) as c:
        threads = []
        for i in range(3):
            threads.append(threading.Thread(target=c.post, args=("/v1/chat/completions",),
                           kwargs={"json": {**CHAT, "max_tokens": 20, "seed": i}}))
            threads[-1].start()
            import time
            time.sleep(0.05)
        for t in threads:
            t.join()
        truth = sorted(s.truth(), key=lambda r: r["id"])
        waits = [r["queue_wait_s"] for r in truth]
        assert waits[0] == 0.0 and 0 < waits[1] < waits[2]


def test_no_models_loaded_and_not_found() -> None:
    with running_studio(jit=False) as s, httpx.Client(base_url=s.base_url) as c:
        r = c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("No models loaded")
    with running_studio(preload=[MODEL, OTHER]) as s, httpx.Client(base_url=s.base_url) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "Your models:" in r.json()["error"]["message"]
    with running_studio(preload=[MODEL]) as s, httpx.Client(base_url=s.base_url) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        assert r.status_code == 200 and r.json()["model"] == MODEL  # BT#619 substitution


def test_auth_envelope() -> None:
    with running_studio(api_token="sk-lm-abc:secret") as s, httpx.Client(base_url=s.base_url) as c:
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        bad = c.get("/v1/models", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401 and "secret" not in bad.text
        ok = c.get("/v1/models", headers={"Authorization": "Bearer sk-lm-abc:secret"})
        assert ok.status_code == 200
        for path in ("/v1/models", "/no/such/path"):  # API route and the fallback alike
            odd = c.get(path, headers={b"Authorization": "Bearer s\u00e9cret".encode("latin-1")})
            assert odd.status_code == 401 and odd.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "Invalid JSON"),
    (b"[1,2]", 400, "JSON object"),
    (json.dumps({"model": MODEL}).encode(), 400, "'messages' field is required"),
    (json.dumps({"model": MODEL, "messages": []}).encode(), 400, "must not be empty"),
    (json.dumps({"model": MODEL, "messages": "x"}).encode(), 400, "must be an array"),
    (json.dumps({**CHAT, "max_tokens": "5"}).encode(), 400, "'max_tokens'"),
    (json.dumps({**CHAT, "response_format": {"type": "json_object"}}).encode(), 400,
     "'response_format.type' must be 'json_schema' or 'text'"),
    (b"x" * (5 * 1024 * 1024), 413, "exceeds the limit"),
])
def test_bad_input(http: httpx.Client, body: bytes, status: int, needle: str) -> None:
    r = http.post("/v1/chat/completions", content=body,
                  headers={"content-type": "application/json"})
    assert r.status_code == status and needle in r.json()["error"]
    assert http.get("/v1/models").status_code == 200  # still up


def test_unknown_endpoint_is_200_string_error(http: httpx.Client) -> None:
    r = http.post("/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert r.text == '{"error":"Unexpected endpoint or method. (POST /chat/completions)"}'
    assert http.get("/v1/chat/completions").json()["error"].startswith("Unexpected endpoint")


def fault(action: dict) -> dict:
    return {"X-Harness-Fault": json.dumps(action)}


def test_pre_response_faults(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json=CHAT,
                  headers=fault({"kind": "status", "status": 429, "retry_after": 3}))
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    r = http.post("/v1/chat/completions", json=CHAT, headers=fault(
        {"kind": "status", "status": 503, "retry_after": 5, "retry_after_format": "http_date"}))
    assert r.status_code == 503 and r.headers["retry-after"].endswith("GMT")
    r = http.post("/v1/chat/completions", json=CHAT, headers=fault({"kind": "html_error"}))
    assert r.status_code == 502 and r.text.startswith("<html>")
    r = http.post("/v1/chat/completions", json=CHAT, headers=fault({"kind": "error_body_200"}))
    assert r.status_code == 200 and isinstance(r.json()["error"], str)
    r = http.post("/v1/chat/completions", json=CHAT, headers=fault({"kind": "wrong_model"}))
    assert r.status_code == 200 and r.json()["model"] != MODEL
    r = http.post("/v1/chat/completions", json=CHAT, headers=fault({"kind": "nope"}))
    assert r.status_code == 400 and "x-harness-fault header" in r.json()["error"].lower()


def test_stream_faults(http: httpx.Client) -> None:
    body = {**CHAT, "max_tokens": 8}
    assert stream_lines(http, body, fault({"kind": "disconnect", "after_chunks": 2}))[-1] \
        == "<dropped>"
    early = stream_lines(http, body, fault({"kind": "early_end", "after_chunks": 2}))
    assert early[-1] == "data: [DONE]" and not any('"finish_reason":"' in x for x in early)
    assert len(early) == 3
    missing = stream_lines(http, body, fault({"kind": "missing_done"}))
    assert "data: [DONE]" not in missing and '"finish_reason":"length"' in missing[-1]
    bad = stream_lines(http, body, fault({"kind": "malformed_sse", "after_chunks": 1}))
    assert any("oops" in x for x in bad)
    cut = stream_lines(http, body, fault({"kind": "truncated_json", "after_chunks": 1}))
    assert cut[-1] == "<dropped>"
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut[1][6:])
    evicted = stream_lines(http, body, fault({"kind": "evict", "after_chunks": 2}))
    assert evicted[-1] == "data: [DONE]" and len(evicted) <= 4
    assert not any('"finish_reason":"' in x for x in evicted)
    import time
    t0 = time.monotonic()
    stream_lines(http, body, fault({"kind": "stall", "after_chunks": 1, "seconds": 0.3}))
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    stream_lines(http, body, fault({"kind": "latency", "before_headers_s": 0.2}))
    assert time.monotonic() - t0 >= 0.2


def test_plan_via_control_and_nth(fresh: StudioHandle, http: httpx.Client) -> None:
    plan = {"rules": [{"match": {"endpoint": "/v1/chat/*", "nth": [2]},
                       "action": {"kind": "status", "status": 500}}]}
    assert http.put("/_harness/faults", json=plan).status_code == 200
    codes = [http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}).status_code
             for _ in range(3)]
    assert codes == [200, 500, 200]
    counters = http.get("/_harness/counters").json()["endpoints"]["/v1/chat/completions"]
    assert counters["statuses"] == {"200": 2, "500": 1}
    http.delete("/_harness/faults")
    truth = http.get("/_harness/truth").json()["records"]
    assert [r["fault"] for r in truth] == [None, "status", None]


def test_plan_files_and_probability() -> None:
    plan = FaultPlan.load("fixtures/faults/flaky_streams.toml")
    assert len(plan.rules) == 4
    with pytest.raises(FaultPlanError):
        parse_action('{"kind": "status", "status": 99}')
    from harness.faults import FaultInjector
    inj = FaultInjector(FaultPlan.single(StatusFault(), probability=0.5))
    hits = sum(inj.select("/v1/x", "POST", None) is not None for _ in range(400))
    assert 150 < hits < 250
    again = FaultInjector(FaultPlan.single(StatusFault(), probability=0.5))
    assert hits == sum(again.select("/v1/x", "POST", None) is not None for _ in range(400))


def test_proxy_passes_streams_and_applies_faults(studio: StudioHandle) -> None:
    proxy = BackgroundServer(create_proxy_app(studio.base_url))
    proxy.start()
    try:
        with httpx.Client(base_url=proxy.base_url) as c:
            direct = stream_lines(c, {**CHAT, "max_tokens": 4, "seed": 1})
            assert direct[-1] == "data: [DONE]" and '"finish_reason":"length"' in direct[-2]
            early = stream_lines(c, {**CHAT, "max_tokens": 6},
                                 fault({"kind": "early_end", "after_chunks": 1}))
            assert len(early) == 2 and early[-1] == "data: [DONE]"
            c.put("/_harness/faults", json={"rules": [{"action": {"kind": "status"}}]})
            assert c.post("/v1/chat/completions", json=CHAT).status_code == 429
            truth = c.get("/_harness/truth").json()["records"]
            assert [r["status"] for r in truth] == [200, 200, 429]
    finally:
        proxy.stop()


def test_proxy_upstream_down_is_502() -> None:
    proxy = BackgroundServer(create_proxy_app("http://127.0.0.1:9"))
    proxy.start()
    try:
        r = httpx.post(proxy.base_url + "/v1/chat/completions", json=CHAT)
        assert r.status_code == 502 and "127.0.0.1:9" in r.json()["error"]
    finally:
        proxy.stop()


def test_disconnect_is_seen(fresh: StudioHandle) -> None:
    async def go() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", fresh.port)
        body = json.dumps({**CHAT, "stream": True, "max_tokens": 200}).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        await reader.readuntil(b"data: ")
        writer.close()
        await asyncio.sleep(0.3)

    asyncio.run(go())
    record = fresh.truth()[-1]
    assert record["disconnect_seen"] and record["cancelled"] and record["chunks_sent"] < 200


def test_truth_times_are_on_the_clock_a_client_on_the_same_host_reads(
        fresh: StudioHandle, http: httpx.Client) -> None:
    """Arrival and write times are ``time.monotonic()`` readings (what a load generator on the
    same host reads), not the loop clock: uvloop's is a millisecond-truncated reading taken when
    the loop iteration began, which put arrivals before the client had even sent the request."""
    import time
    windows = []
    for seed in range(8):
        before = time.monotonic()
        assert http.post("/v1/chat/completions",
                         json={**CHAT, "max_tokens": 2, "seed": seed}).status_code == 200
        windows.append((before, time.monotonic()))
    records = fresh.truth()[-8:]
    for (before, after), record in zip(windows, records, strict=True):
        assert before <= record["received_at_s"] <= after
        assert record["received_at_s"] + record["duration_s"] <= after + 1e-6
    # Eight arrivals all on whole milliseconds would mean a millisecond clock (p = 1e-24).
    assert any(round(r["received_at_s"] * 1000, 3) % 1 for r in records)
