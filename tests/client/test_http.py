"""The client shells against a scripted server over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time

import pytest

from harness import AsyncClient, Client, RetryPolicy, Timeouts
from harness.client.errors import (
    AuthenticationError,
    BadResponse,
    ConnectError,
    HTTPStatusError,
    LMStudioTimeout,
    ModelMismatch,
    ModelNotFound,
    ModelSwitched,
    RateLimited,
    ServerStreamError,
    StreamInterrupted,
    StreamStalled,
    ValidationError,
)
from harness.client.models import ReasoningDelta, TextDelta, ToolCallDelta
from harness.studio.server import free_port
from tests.client.scripted import (
    CHAT,
    MODEL,
    MSG,
    Reply,
    ScriptedServer,
    Sleeps,
    chunk,
    completion,
    json_reply,
    sse,
)

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def good_stream(*texts: str, model: str = MODEL) -> Reply:
    frames = [chunk(t, model=model) for t in texts]
    return sse(*frames, chunk("", model=model), chunk(model=model, finish="stop"),
               chunk(model=model, usage=USAGE))


def client(server: ScriptedServer, **kw: object) -> Client:
    kw.setdefault("model", MODEL)
    return Client(server.url, **kw)  # type: ignore[arg-type]


def test_chat_and_base_url_with_v1(server: ScriptedServer) -> None:
    server.script(CHAT, json_reply(completion("hello")))
    with Client(server.url + "/v1/", model=MODEL) as c:
        result = c.chat(MSG, temperature=0.2, max_tokens=5, seed=1)
    assert (result.text, result.finish_reason, result.model) == ("hello", "stop", MODEL)
    assert result.usage is not None and result.usage.total_tokens == 5
    sent = json.loads(server.seen[-1].body)
    assert server.seen[-1].path == CHAT
    assert sent["model"] == MODEL and sent["temperature"] == 0.2 and "stream" not in sent


def test_stream_yields_typed_deltas_and_result(server: ScriptedServer) -> None:
    frames = [
        chunk(reasoning="think "), chunk("Hel"), chunk("lo"),
        chunk(tool_calls=[{"index": 0, "id": "123", "type": "function",
                           "function": {"name": "add", "arguments": ""}}]),
        chunk(tool_calls=[{"index": 0, "type": "function",
                           "function": {"arguments": '{"a": 1}'}}]),
        chunk(""), chunk(finish="tool_calls"), chunk(usage=USAGE),
    ]
    server.script(CHAT, sse(*frames))
    with client(server) as c, c.stream_chat(MSG) as stream:
        events = list(stream)
        result = stream.result()
    assert [type(e) for e in events] == [ReasoningDelta, TextDelta, TextDelta, ToolCallDelta,
                                         ToolCallDelta]
    assert (result.text, result.reasoning, result.finish_reason) == ("Hello", "think ",
                                                                     "tool_calls")
    assert result.tool_calls[0].name == "add"
    assert result.tool_calls[0].parsed_arguments() == {"a": 1}
    assert result.usage is not None and result.usage.completion_tokens == 2
    assert result.timings.ttft is not None and len(result.timings.gaps) == 4
    assert json.loads(server.seen[-1].body)["stream_options"] == {"include_usage": True}


def test_gpt_oss_reasoning_field(server: ScriptedServer) -> None:
    frame = chunk("x")
    frame["choices"][0]["delta"] = {"reasoning": "r1"}
    server.script(CHAT, sse(frame, chunk("ok"), chunk(finish="stop")))
    with client(server) as c, c.stream_chat(MSG) as stream:
        result = stream.result()
    assert result.reasoning == "r1" and result.text == "ok"


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (sse(chunk("par"), chunk("tial"), done=False), "before the server's end signal"),
        (sse(chunk("par"), chunk("tial")), "no chunk carried a finish_reason"),
        (sse(chunk("par"), chunk("tial"), chunk(finish="stop"), done=False), "without [DONE]"),
        (sse(chunk("par"), chunk("tial"), b"data: {not json\n\n"), "malformed"),
        (Reply(headers=[("content-type", "text/event-stream")],
               chunks=[(0, b"data: " + json.dumps(chunk("par")).encode() + b"\n\n"),
                       (0, b"data: " + json.dumps(chunk("tial")).encode() + b"\n\n")],
               drop=True), ""),
    ],
    ids=["truncated", "done-without-finish", "finish-without-done", "malformed", "disconnect"],
)
def test_broken_streams_raise_and_keep_partial(server: ScriptedServer, reply: Reply,
                                               why: str) -> None:
    server.script(CHAT, reply)
    with client(server) as c, c.stream_chat(MSG) as stream:
        with pytest.raises(StreamInterrupted) as info:
            stream.result()
    err = info.value
    assert err.partial.text == "partial" and err.partial.chunks >= 2
    assert why in str(err)
    assert f"POST {server.url}{CHAT} (model={MODEL}" in str(err)


def test_error_frame_inside_stream(server: ScriptedServer) -> None:
    frame = (b'event: error\ndata: {"error":{"message":"Compute error."},'
             b'"message":"Compute error."}\n\n')
    server.script(CHAT, sse(chunk("abc"), frame, done=False))
    with client(server) as c, c.stream_chat(MSG) as stream:
        with pytest.raises(ServerStreamError) as info:
            stream.result()
    assert info.value.server_message == "Compute error." and info.value.partial.text == "abc"


def test_stall_raises_stream_idle_timeout(server: ScriptedServer) -> None:
    reply = sse(chunk("a"), chunk("b"))
    reply.chunks.insert(1, (0.6, b": keep-alive never sent by LM Studio\n"))
    reply.chunks[1] = (0.6, b"")
    server.script(CHAT, reply)
    timeouts = Timeouts(stream_idle=0.2, read=5)
    with client(server, timeout=timeouts) as c, c.stream_chat(MSG) as stream:
        with pytest.raises(StreamStalled) as info:
            stream.result()
    assert info.value.phase == "stream-idle" and info.value.partial.text == "a"
    assert isinstance(info.value, LMStudioTimeout)


def test_leaving_loop_early_closes_response(server: ScriptedServer) -> None:
    reply = sse(*[chunk(f"t{i} ") for i in range(200)], delay=0.005)
    server.script(CHAT, reply)
    with client(server) as c, c.stream_chat(MSG) as stream:
        for event in stream:
            assert isinstance(event, TextDelta)
            break
    deadline = time.monotonic() + 2
    while not server.seen[-1].disconnected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.seen[-1].disconnected and not server.seen[-1].finished


def test_model_mismatch_is_an_error(server: ScriptedServer) -> None:
    server.script(CHAT, json_reply(completion("x", model="gemma-3-1b-it-qat:2")))
    with client(server) as c, pytest.raises(ModelMismatch) as info:
        c.chat(MSG)
    assert info.value.answered_by == "gemma-3-1b-it-qat:2"
    # publisher, @variant and :N are the same weights: accepted
    server.script(CHAT, json_reply(completion("x", model="qwen3-4b:2")))
    with client(server) as c:
        assert c.chat(MSG).model == "qwen3-4b:2"


def test_retry_after_is_honoured_exactly(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    server.script(CHAT, json_reply({"error": "slow down"}, 429, [("retry-after", "2")]),
                  json_reply({"error": "slow down"}, 429, [("retry-after", "14.5")]),
                  json_reply(completion("ok")))
    with client(server, sleep=sleeps) as c:
        assert c.chat(MSG).text == "ok"
    assert sleeps.waits == [2.0, 14.5]
    assert server.hits(CHAT) == 3


def test_gives_up_after_five_attempts_with_context(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    server.script(CHAT, json_reply({"error": "busy"}, 429))
    with client(server, sleep=sleeps) as c, pytest.raises(RateLimited) as info:
        c.chat(MSG)
    err = info.value
    assert server.hits(CHAT) == 5 and len(sleeps.waits) == 4
    assert err.attempt == 5 and err.total_waited == pytest.approx(sum(sleeps.waits))
    assert "attempt 5/5" in str(err) and "HTTP 429" in str(err)
    assert all(w <= 15 for w in sleeps.waits)


def test_5xx_burst_recovers(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    html = Reply(status=502, headers=[("content-type", "text/html")],
                 chunks=[(0, b"<html><title>502 Bad Gateway</title></html>")])
    server.script(CHAT, html, html, json_reply(completion("fine")))
    with client(server, sleep=sleeps) as c:
        assert c.chat(MSG).text == "fine"
    assert len(sleeps.waits) == 2


def test_non_retryable_errors(server: ScriptedServer) -> None:
    server.script(CHAT, json_reply({"error": {
        "message": 'Model "nope" not found. Please specify a valid model.\n\nYour models:\n\n'
                   "qwen/qwen3-4b\ngoogle/gemma-3-12b", "type": "invalid_request_error",
        "param": "model", "code": "model_not_found"}}, 404))
    with client(server) as c, pytest.raises(ModelNotFound) as info:
        c.chat(MSG, model="nope")
    assert info.value.available == ("qwen/qwen3-4b", "google/gemma-3-12b")
    assert server.hits(CHAT) == 1
    server.script(CHAT, json_reply({"error": {"type": "invalid_request", "code": "invalid_api_key",
                                              "message": "An LM Studio API token is required"}},
                                   401))
    with client(server, api_token="sk-lm-abcdefgh:supersecret") as c, \
            pytest.raises(AuthenticationError) as auth:
        c.chat(MSG)
    assert "supersecret" not in str(auth.value)
    assert server.seen[-1].headers["authorization"] == "Bearer sk-lm-abcdefgh:supersecret"
    server.script(CHAT, json_reply({"error": "'messages' field is required"}, 400))
    with client(server) as c, pytest.raises(HTTPStatusError) as bad:
        c.chat(MSG)
    assert bad.value.status == 400 and "'messages' field is required" in str(bad.value)


def test_200_with_error_body(server: ScriptedServer) -> None:
    with client(server) as c, pytest.raises(BadResponse) as info:
        c.chat(MSG)  # nothing scripted: the server answers like LM Studio's unknown endpoint
    assert "Unexpected endpoint or method" in str(info.value)


def test_connection_refused_names_host_port() -> None:
    port = free_port()
    sleeps = Sleeps()
    with Client(f"http://127.0.0.1:{port}", model=MODEL, sleep=sleeps) as c, \
            pytest.raises(ConnectError) as info:
        c.chat(MSG)
    assert f"127.0.0.1:{port}" in str(info.value) and "attempt 5/5" in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).url == info.value.url


def test_read_timeout_phase(server: ScriptedServer) -> None:
    slow = json_reply(completion("late"))
    slow.delay_headers = 0.5
    server.script(CHAT, slow)
    with client(server, timeout=Timeouts(read=0.1), retry=RetryPolicy.none()) as c, \
            pytest.raises(LMStudioTimeout) as info:
        c.chat(MSG)
    assert info.value.phase == "read"


def test_validation_before_io(server: ScriptedServer) -> None:
    with client(server) as c:
        for bad in ({"temperature": 5}, {"top_p": -1}, {"max_tokens": 0},
                    {"response_format": {"type": "json_object"}}, {"seed": "x"}):
            with pytest.raises(ValidationError):
                c.chat(MSG, **bad)
        with pytest.raises(ValidationError, match="messages"):
            c.chat([])
        with pytest.raises(ValidationError, match="model"):
            c.chat(MSG, model="../../etc/passwd")
    assert server.seen == []
    with pytest.raises(ValidationError, match="base_url"):
        Client("ftp://localhost:1234")


@pytest.mark.parametrize("token", ["sk-lm-secret\n", " sk-lm-secret", "sk-lm-s\u00e9cret",
                                   "sk-lm-se\tcret"])
def test_a_token_no_header_can_carry_is_refused_before_io(token: str) -> None:
    """A token read from a file keeps its newline, and a pasted one may carry a non-ASCII
    character: refused when the client is made, naming the option but never the token (h11
    would fail every request with a transport error, httpx with a bare UnicodeEncodeError)."""
    with pytest.raises(ValidationError, match="api_token") as caught:
        Client("http://127.0.0.1:1234", api_token=token)
    assert "secret" not in str(caught.value) and "cret" not in repr(caught.value)


def test_with_options_view_pins_model(server: ScriptedServer) -> None:
    server.script(CHAT, json_reply(completion("x", model="google/gemma-3-12b")))
    with client(server) as c:
        view = c.with_options(model="google/gemma-3-12b")
        c.switch_model("qwen/qwen3-coder-30b")
        assert view.chat(MSG).model == "google/gemma-3-12b"
        assert json.loads(server.seen[-1].body)["model"] == "google/gemma-3-12b"
        assert c.model == "qwen/qwen3-coder-30b"


def test_switch_model_cancel_cuts_off_stream(server: ScriptedServer) -> None:
    server.script(CHAT, good_stream(*[f"w{i} " for i in range(100)]))
    server.replies[CHAT][0].chunks = [(0.01, d) for _, d in server.replies[CHAT][0].chunks]
    with client(server) as c, c.stream_chat(MSG) as stream:
        it = iter(stream)
        next(it)
        threading.Timer(0.05, c.switch_model, args=("google/gemma-3-12b",),
                        kwargs={"inflight": "cancel"}).start()
        with pytest.raises(ModelSwitched) as info:
            stream.result()
    assert 0 < info.value.partial.chunks < 100
    assert c.model == "google/gemma-3-12b"


def test_switch_model_finish_lets_stream_complete(server: ScriptedServer) -> None:
    server.script(CHAT, good_stream("a", "b", "c"))
    with client(server) as c, c.stream_chat(MSG) as stream:
        next(iter(stream))
        assert c.switch_model("google/gemma-3-12b", inflight="finish") == 0
        assert stream.result().text == "abc"


# -- async ------------------------------------------------------------------------------------

async def test_async_stream_and_chat(server: ScriptedServer) -> None:
    server.script(CHAT, good_stream("x", "y"))
    async with AsyncClient(server.url, model=MODEL) as c:
        async with c.stream_chat(MSG) as stream:
            texts = [e.text async for e in stream if isinstance(e, TextDelta)]
            result = await stream.result()
        assert texts == ["x", "y"] and result.text == "xy"
        server.script(CHAT, json_reply(completion("plain")))
        assert (await c.chat(MSG)).text == "plain"


async def test_async_broken_stream(server: ScriptedServer) -> None:
    server.script(CHAT, sse(chunk("par"), chunk("tial")))
    async with AsyncClient(server.url, model=MODEL) as c, c.stream_chat(MSG) as stream:
        with pytest.raises(StreamInterrupted) as info:
            await stream.result()
    assert info.value.partial.text == "partial"


async def test_async_retry_and_switch_cancel(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    server.script(CHAT, json_reply({"error": "x"}, 503), json_reply(completion("ok")))
    async with AsyncClient(server.url, model=MODEL, sleep=sleeps.asleep) as c:
        assert (await c.chat(MSG)).text == "ok"
        assert len(sleeps.waits) == 1
        reply = good_stream(*[f"w{i} " for i in range(100)])
        reply.chunks = [(0.01, d) for _, d in reply.chunks]
        server.script(CHAT, reply)
        async with c.stream_chat(MSG) as stream:
            async def switch() -> None:
                await asyncio.sleep(0.05)
                c.switch_model("google/gemma-3-12b", inflight="cancel")

            switcher = asyncio.create_task(switch())
            with pytest.raises(ModelSwitched) as info:
                await stream.result()
            await switcher
        assert 0 < info.value.partial.chunks < 100


def test_sync_switch_cancel_during_blocking_call_keeps_answer(server: ScriptedServer) -> None:
    slow = json_reply(completion("late answer"))
    slow.delay_headers = 0.3
    server.script(CHAT, slow)
    with client(server) as c:
        threading.Timer(0.05, c.switch_model, args=("google/gemma-3-12b",),
                        kwargs={"inflight": "cancel"}).start()
        with pytest.raises(ModelSwitched) as info:
            c.chat(MSG)
    assert info.value.partial.text == "late answer"


async def test_async_switch_cancel_interrupts_blocking_call(server: ScriptedServer) -> None:
    slow = json_reply(completion("late"))
    slow.delay_headers = 2.0
    server.script(CHAT, slow)
    async with AsyncClient(server.url, model=MODEL) as c:
        async def switch() -> None:
            await asyncio.sleep(0.05)
            c.switch_model("google/gemma-3-12b", inflight="cancel")

        switcher = asyncio.create_task(switch())
        started = time.monotonic()
        with pytest.raises(ModelSwitched):
            await c.chat(MSG)
        await switcher
        assert time.monotonic() - started < 1.0


async def test_async_switch_cancel_during_the_wait_between_attempts(
        server: ScriptedServer) -> None:
    """A cut-off while the retry loop waits leaves as ModelSwitched, never as a bare
    CancelledError (the wait is ours, like the send and the reads)."""
    server.script(CHAT, json_reply({"error": "x"}, 503), json_reply(completion("ok")))
    waiting = asyncio.Event()

    async def sleep_forever(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    async with AsyncClient(server.url, model=MODEL, sleep=sleep_forever) as c:
        call = asyncio.create_task(c.chat(MSG))
        await waiting.wait()
        c.switch_model("google/gemma-3-12b", inflight="cancel")
        with pytest.raises(ModelSwitched) as info:
            await asyncio.wait_for(call, 30)
    assert info.value.context is not None and info.value.context.attempt == 1
    assert len(server.seen) == 1


def test_reset_of_reused_connection_is_retried() -> None:
    """LM Studio closes idle keep-alive connections after ~5 s; a request racing that close
    sees the connection drop before any response and must be retried, not failed."""
    import socket as s

    listener = s.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    body = json.dumps(completion("after reset")).encode()

    def serve() -> None:
        first = True
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            if first:
                conn.close()  # drop without a response
                first = False
                continue
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: " + str(len(body)).encode() + b"\r\n"
                         b"connection: close\r\n\r\n" + body)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    sleeps = Sleeps()
    with Client(f"http://127.0.0.1:{port}", model=MODEL, sleep=sleeps) as c:
        assert c.chat(MSG).text == "after reset"
    assert len(sleeps.waits) == 1
    thread.join(2)
    listener.close()


async def test_switch_cancel_while_consumer_awaits_its_own_work(server: ScriptedServer) -> None:
    """The cut-off must surface as ModelSwitched at the next read, never as a CancelledError
    inside the caller's own awaits."""
    reply = good_stream(*[f"w{i} " for i in range(100)])
    reply.chunks = [(0.005, d) for _, d in reply.chunks]
    server.script(CHAT, reply)
    async with AsyncClient(server.url, model=MODEL) as c, c.stream_chat(MSG) as stream:
        seen = 0
        with pytest.raises(ModelSwitched) as info:
            async for _ in stream:
                seen += 1
                if seen == 3:
                    c.switch_model("google/gemma-3-12b", inflight="cancel")
                await asyncio.sleep(0.02)  # the caller's own work, not to be cancelled
    assert info.value.partial.chunks >= 3


def test_retry_after_on_503_and_elapsed_on_stream_errors(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    server.script(CHAT, json_reply({"error": "loading"}, 503, [("retry-after", "4")]),
                  json_reply(completion("ok")))
    with client(server, sleep=sleeps) as c:
        assert c.chat(MSG).text == "ok"
    assert sleeps.waits == [4.0]
    reply = sse(chunk("a"), chunk("b"), done=False)
    reply.chunks = [(0.05, d) for _, d in reply.chunks]
    server.script(CHAT, reply)
    with client(server) as c, c.stream_chat(MSG) as stream:
        with pytest.raises(StreamInterrupted) as info:
            stream.result()
    assert info.value.elapsed >= 0.09


def test_errors_name_the_request_id_the_server_saw(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    server.script(CHAT, json_reply({"error": "busy"}, 503))
    with client(server, sleep=sleeps, retry=RetryPolicy(max_attempts=2)) as c, \
            pytest.raises(HTTPStatusError) as info:
        c.chat(MSG)
    sent = {s.headers["x-request-id"] for s in server.seen}
    assert len(sent) == 1 and len(server.seen) == 2  # one id for the call, kept across retries
    rid = info.value.request_id
    assert rid in sent and f"request id {rid}" in str(info.value)


def test_malformed_model_listing_is_a_bad_response_with_context(server: ScriptedServer) -> None:
    server.script("/v1/models", json_reply({"data": [{"id": "a/b", "max_context_length": "big"}],
                                           "object": "list"}))
    with client(server) as c, pytest.raises(BadResponse) as info:
        c.list_models()
    assert f"GET {server.url}/v1/models" in str(info.value) and "'a/b'" in str(info.value)
    server.script("/v1/models", json_reply({"object": "list"}))
    with client(server) as c, pytest.raises(BadResponse) as info:
        c.list_models()
    assert f"GET {server.url}/v1/models" in str(info.value)
