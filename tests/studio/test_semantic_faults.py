"""Semantic fault actions, read through the official openai SDK, and truth that names a fault
only once it fired (LMSTUDIO_API.md §8 rows 8-17, 20, 24)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from harness.faults import FaultPlan, parse_action
from harness.proxy import create_proxy_app
from harness.studio.catalog import load_catalog
from harness.studio.server import BackgroundServer
from harness.studio.testing import StudioHandle, running_studio

MODEL = "qwen/qwen3-4b"
THINKER = "qwen/qwen3-4b-thinking-2507"
TOOLS = 'Use them. [[tools: [[{"name": "add", "arguments": {"a": 1, "b": 2}}]]]]'


def fault(action: dict) -> dict[str, str]:
    return {"X-Harness-Fault": json.dumps(action)}


@pytest.fixture()
def sdk(fresh: StudioHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fresh.base_url + "/v1", api_key="lm-studio",
                       max_retries=0) as client:
        yield client


def lines(http: httpx.Client, body: dict, action: dict) -> list[str]:
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True},
                     headers=fault(action)) as r:
        assert r.status_code == 200
        return [line for line in r.iter_lines() if line]


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.mark.parametrize("then", ["stop", "continue", "done"])
def test_error_frame_then(then: str, fresh: StudioHandle, http: httpx.Client) -> None:
    got = lines(http, CHAT, {"kind": "error_frame", "after_chunks": 2, "then": then,
                             "message": "Compute error."})
    index = got.index("event: error")
    payload = json.loads(got[index + 1].removeprefix("data: "))
    assert payload == {"error": {"message": "Compute error."}, "message": "Compute error."}
    assert index == 2  # two content chunks before it
    rest = got[index + 2:]
    if then == "stop":
        assert rest == []
    elif then == "done":
        assert rest == ["data: [DONE]"]
    else:
        assert rest[-1] == "data: [DONE]" and any('"finish_reason":"length"' in x for x in rest)
    assert fresh.truth()[-1]["fault"] == "error_frame"


def test_openai_sdk_raises_on_the_error_frame(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers=fault({"kind": "error_frame", "after_chunks": 1}))
    with pytest.raises(openai.APIError, match="Compute error"):
        for _ in stream:
            pass


def test_stream_faults_that_never_act_are_not_in_the_truth(fresh: StudioHandle,
                                                            http: httpx.Client) -> None:
    # Header faults: a stall past the end of a 3-token stream, a stream fault on a plain call.
    lines(http, {**CHAT, "max_tokens": 3}, {"kind": "stall", "after_chunks": 50, "seconds": 5})
    r = http.post("/v1/chat/completions", json=CHAT, headers=fault({"kind": "early_end"}))
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    assert [t["fault"] for t in fresh.truth()] == [None, None]
    # A plan never chooses a stream fault for a non-stream request, nor spends ``times`` on it.
    plan = {"rules": [{"match": {"times": 1}, "action": {"kind": "disconnect"}}]}
    http.put("/_harness/faults", json=plan)
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
    stats = http.get("/_harness/faults").json()["stats"]
    assert stats[0]["matched"] == 0 and stats[0]["fired"] == 0
    with pytest.raises(httpx.RemoteProtocolError), \
            http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        for _ in r.iter_lines():
            pass
    assert fresh.truth()[-1]["fault"] == "disconnect"


def test_empty_reply_is_well_formed_with_usage(sdk: openai.OpenAI, fresh: StudioHandle) -> None:
    headers = fault({"kind": "empty_reply"})
    plain = sdk.chat.completions.create(model=MODEL, messages=CHAT["messages"],
                                        extra_headers=headers)
    assert plain.choices[0].message.content == ""
    assert plain.choices[0].finish_reason == "stop"
    assert plain.usage is not None and plain.usage.prompt_tokens > 0
    assert plain.usage.completion_tokens > 0
    chunks = list(sdk.chat.completions.create(
        model=MODEL, messages=CHAT["messages"], stream=True, extra_headers=headers,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text == "" and finishes[-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert [t["fault"] for t in fresh.truth()] == ["empty_reply", "empty_reply"]


def test_content_to_reasoning(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model=MODEL, messages=CHAT["messages"],
        extra_headers=fault({"kind": "content_to_reasoning"}))
    message = reply.choices[0].message
    assert message.content == "" and reply.choices[0].finish_reason == "stop"
    assert (message.model_extra or {})["reasoning_content"]
    honest = sdk.chat.completions.create(model=MODEL, messages=CHAT["messages"])
    assert honest.choices[0].message.content == message.model_extra["reasoning_content"]


def test_tool_call_faults(sdk: openai.OpenAI, fresh: StudioHandle) -> None:
    msgs = [{"role": "user", "content": TOOLS}]
    dropped = sdk.chat.completions.create(model=MODEL, messages=msgs,
                                          extra_headers=fault({"kind": "drop_tool_calls"}))
    assert not dropped.choices[0].message.tool_calls
    assert dropped.choices[0].finish_reason == "stop"
    as_text = sdk.chat.completions.create(model=MODEL, messages=msgs,
                                          extra_headers=fault({"kind": "tool_calls_as_text"}))
    content = as_text.choices[0].message.content or ""
    assert "<tool_call>" in content and '"name": "add"' in content
    assert not as_text.choices[0].message.tool_calls
    blank = list(sdk.chat.completions.create(
        model=MODEL, messages=msgs, stream=True, extra_headers=fault({"kind": "blank_tool_id"})))
    first = next(c.choices[0].delta.tool_calls for c in blank
                 if c.choices and c.choices[0].delta.tool_calls)
    assert first is not None and first[0].id == "" and first[0].function is not None
    assert first[0].function.name == "add"
    # Nothing to drop: the fault does not fire.
    sdk.chat.completions.create(model=MODEL, messages=CHAT["messages"],
                                extra_headers=fault({"kind": "drop_tool_calls"}))
    assert [t["fault"] for t in fresh.truth()] == [
        "drop_tool_calls", "tool_calls_as_text", "blank_tool_id", None]


def test_inline_think(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(model=THINKER, messages=CHAT["messages"],
                                        extra_headers=fault({"kind": "inline_think"}))
    message = reply.choices[0].message
    assert (message.content or "").startswith("<think>") and "</think>" in (message.content or "")
    assert (message.model_extra or {}).get("reasoning_content") == ""


def test_template_error_is_lm_studios_500(sdk: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=CHAT["messages"],
                                    extra_headers=fault({"kind": "template_error"}))
    body = caught.value.body
    assert isinstance(body, dict)
    message = body["message"] if "message" in body else body["error"]["message"]
    assert message.startswith("Engine protocol predict request returned 500: ")
    inner = json.loads(message.split(": ", 1)[1])
    assert "Jinja Exception" in inner["error"]["message"] and inner["error"]["code"] == 500
    r = http.post("/api/v1/chat", json={"model": MODEL, "input": "hi"},
                  headers=fault({"kind": "template_error"}))
    assert r.status_code == 500 and r.json()["error"]["message"] == message


def test_wrong_model_answers_with_another_model(sdk: openai.OpenAI, fresh: StudioHandle) -> None:
    reply = sdk.chat.completions.create(model=MODEL, messages=CHAT["messages"],
                                        extra_headers=fault({"kind": "wrong_model"}))
    assert reply.model != MODEL
    same = sdk.chat.completions.create(model=MODEL, messages=CHAT["messages"],
                                       extra_headers=fault({"kind": "wrong_model",
                                                            "model": MODEL}))
    assert same.model == MODEL
    assert [t["fault"] for t in fresh.truth()] == ["wrong_model", None]


def test_prefill_pauses_running_streams() -> None:
    """A new request's prompt processing pauses a stream already generating on the same
    instance (BT#1709): its remaining deadlines move back by the pause, which the truth shows
    in the scheduled times (so this holds however busy the machine is)."""
    catalog = load_catalog().with_speed(tokens_per_s=50.0, ttft_s=0.01, reply_tokens=(40, 40))
    with running_studio(catalog=catalog, preload=(MODEL,)) as s, \
            httpx.Client(base_url=s.base_url, timeout=10) as c:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "long"}],
                "stream": True}
        started = threading.Event()

        def run() -> None:
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                for n, _ in enumerate(r.iter_lines()):
                    if n == 3:
                        started.set()

        t = threading.Thread(target=run)
        t.start()
        assert started.wait(5)
        prefilling = c.post("/v1/chat/completions",
                            json={**body, "stream": False, "max_tokens": 2},
                            headers=fault({"kind": "prefill_pause", "seconds": 0.3}))
        assert prefilling.status_code == 200
        t.join(10)
        running, paused_by = s.truth()[-2:]
        assert paused_by["fault"] == "prefill_pause" and paused_by["paused_s"] == 0
        assert paused_by["scheduled_ttft_s"] >= 0.3
        assert running["paused_s"] == pytest.approx(0.3, abs=0.03)
        times = running["scheduled_chunk_times_s"]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) >= 0.3 - 0.03 and sorted(gaps)[-2] < 0.1
        assert running["finish_reason"] == "stop"


def test_semantic_faults_parse_and_plan() -> None:
    assert parse_action('{"kind": "prefill_pause", "seconds": 1}').kind == "prefill_pause"
    plan = FaultPlan.model_validate({"rules": [{"action": {"kind": "error_frame",
                                                           "then": "done"}}]})
    assert plan.rules[0].action.kind == "error_frame"


@pytest.fixture(scope="module")
def two_model_proxy() -> Iterator[tuple[StudioHandle, BackgroundServer]]:
    with running_studio(preload=(MODEL, THINKER), auto_evict=False) as studio:
        proxy = BackgroundServer(create_proxy_app(studio.base_url))
        proxy.start()
        try:
            yield studio, proxy
        finally:
            proxy.stop()


def test_proxy_wrong_model_really_answers_with_another_model(
        two_model_proxy: tuple[StudioHandle, BackgroundServer]) -> None:
    _, proxy = two_model_proxy
    with openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="x", max_retries=0) as sdk:
        reply = sdk.chat.completions.create(model=MODEL, messages=CHAT["messages"],
                                            extra_headers=fault({"kind": "wrong_model"}))
        assert reply.model == THINKER
        sdk.chat.completions.create(model=MODEL, messages=CHAT["messages"],
                                    extra_headers=fault({"kind": "drop_tool_calls"}))
    records = httpx.get(proxy.base_url + "/_harness/truth").json()["records"]
    assert [(r["fault"], r["instance_id"]) for r in records[-2:]] == [
        ("wrong_model", THINKER), (None, MODEL)]


@pytest.mark.parametrize("stream", [False, True])
def test_proxy_applies_semantic_faults_to_chat_answers(
        stream: bool, two_model_proxy: tuple[StudioHandle, BackgroundServer]) -> None:
    """In front of a live server the proxy rewrites the answer itself: what the client gets is
    what the emulator would have produced (read through the openai SDK)."""
    _, proxy = two_model_proxy

    def ask(sdk: openai.OpenAI, kind: str, model: str = MODEL,
            content: str = "hi") -> tuple[str, str, list, str | None]:
        msgs = [{"role": "user", "content": content}]
        headers = fault({"kind": kind})
        if not stream:
            r = sdk.chat.completions.create(model=model, messages=msgs, extra_headers=headers)
            m = r.choices[0].message
            return (m.content or "", (m.model_extra or {}).get("reasoning_content") or "",
                    m.tool_calls or [], r.choices[0].finish_reason)
        text, reasoning, calls, finish = "", "", [], None
        for chunk in sdk.chat.completions.create(model=model, messages=msgs, stream=True,
                                                 extra_headers=headers):
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            text += delta.content or ""
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            calls += delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
        return text, reasoning, calls, finish

    with openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="x", max_retries=0) as sdk:
        text, reasoning, calls, finish = ask(sdk, "content_to_reasoning")
        assert text == "" and reasoning and finish == "stop"
        text, reasoning, calls, finish = ask(sdk, "empty_reply")
        assert (text, reasoning, calls, finish) == ("", "", [], "stop")
        text, _, calls, finish = ask(sdk, "drop_tool_calls", content=TOOLS)
        assert not calls and finish == "stop"
        text, _, calls, finish = ask(sdk, "tool_calls_as_text", content=TOOLS)
        assert "<tool_call>" in text and '"name": "add"' in text and not calls
        _, _, calls, finish = ask(sdk, "blank_tool_id", content=TOOLS)
        assert calls and all(c.id in ("", None) for c in calls) and finish == "tool_calls"
        assert any(c.id == "" for c in calls)
        text, reasoning, _, _ = ask(sdk, "inline_think", model=THINKER)
        assert text.startswith("<think>") and "</think>" in text and reasoning == ""
        ask(sdk, "drop_tool_calls")  # nothing to drop: not fired
    records = httpx.get(proxy.base_url + "/_harness/truth").json()["records"]
    assert [r["fault"] for r in records[-7:]] == [
        "content_to_reasoning", "empty_reply", "drop_tool_calls", "tool_calls_as_text",
        "blank_tool_id", "inline_think", None]


def test_proxy_error_frame_and_unfired_stream_faults(
        two_model_proxy: tuple[StudioHandle, BackgroundServer]) -> None:
    _, proxy = two_model_proxy
    with httpx.Client(base_url=proxy.base_url) as c:
        got = lines(c, CHAT, {"kind": "error_frame", "then": "done"})
        assert got[:1] == ["event: error"] and got[-1] == "data: [DONE]"
        c.post("/v1/chat/completions", json=CHAT, headers=fault({"kind": "stall"}))
        records = c.get("/_harness/truth").json()["records"]
    assert [r["fault"] for r in records[-2:]] == ["error_frame", None]
