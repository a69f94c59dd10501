"""The call layer's second-generation fixes (issue 11, item 2), each through both shells.

Every test here failed on the first-generation client: a cut-off non-streamed answer returned as
a success, a sync deadline that trickling stretched 3-5x, Retry-After undercut, a body cut after
its headers re-run five times, gzip streams refused, redirects reported as "HTTP 200", pool
waits failing as connect timeouts, template errors retried, a prefill longer than the idle limit
taken for a stall, keep-alive comments keeping a dead stream alive.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from harness import AsyncClient, Client, RetryPolicy, Timeouts
from harness.client._httpx import default_limits, parsed_url
from harness.client.config import DOCUMENTED_CONCURRENCY
from harness.client.errors import (
    ConnectError,
    ContextOverflow,
    HTTPStatusError,
    IncompleteAnswer,
    LMStudioTimeout,
    RateLimited,
    Redirected,
    ServerRejected,
    StreamInterrupted,
    StreamStalled,
)
from harness.client.models import ChatResult
from tests.client.rawserver import raw_server, repeat, trickle
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

SHELLS = ["sync", "async"]


def call(shell: str, url: str, *, stream: bool = False, sleeps: Sleeps | None = None,
         messages: list[dict[str, Any]] | None = None, **kw: Any) -> ChatResult:
    """One chat through ``shell``: the answer, or the error it raised."""
    kw.setdefault("model", MODEL)
    msgs = messages or MSG
    if shell == "sync":
        if sleeps is not None:
            kw["sleep"] = sleeps
        with Client(url, **kw) as c:
            if not stream:
                return c.chat(msgs)
            with c.stream_chat(msgs) as s:
                return s.result()

    async def run() -> ChatResult:
        if sleeps is not None:
            kw["sleep"] = sleeps.asleep
        async with AsyncClient(url, **kw) as c:
            if not stream:
                return await c.chat(msgs)
            async with c.stream_chat(msgs) as s:
                return await s.result()

    return asyncio.run(run())


NO_RETRY = RetryPolicy.none()


# -- a non-streamed answer is complete only with a finish_reason ---------------------------------
@pytest.mark.parametrize("shell", SHELLS)
def test_nonstreamed_answer_without_finish_reason_is_incomplete(server: ScriptedServer,
                                                                shell: str) -> None:
    body = completion("The first half of a long ans")
    body["choices"][0]["finish_reason"] = None  # LM Studio after an unload / JIT auto-evict
    server.script(CHAT, json_reply(body))
    with pytest.raises(IncompleteAnswer) as info:
        call(shell, server.url)
    err = info.value
    assert err.partial.text == "The first half of a long ans"
    assert "finish_reason" in str(err) and f"POST {server.url}{CHAT}" in str(err)
    assert server.hits(CHAT) == 1  # the generation ran: never re-run


# -- the deadline holds whatever the server trickles -------------------------------------------
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n")


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


TRICKLES: dict[str, tuple[bool, Callable[[socket.socket], None]]] = {
    "slow-headers": (False, lambda conn: trickle(conn, HEAD, 0.05)),
    "slow-body": (False, lambda conn: (conn.sendall(HEAD),
                                       trickle(conn, json.dumps(completion("x" * 5000)).encode(),
                                               0.05))),
    "keepalive-whitespace": (False, lambda conn: (conn.sendall(HEAD),
                                                  repeat(conn, b" ", 0.05))),
    "sse-comments": (True, lambda conn: (conn.sendall(SSE_HEAD),
                                         repeat(conn, _chunked(b": keep-alive\n\n"), 0.05))),
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("trickle_kind", sorted(TRICKLES))
def test_deadline_holds_whatever_the_server_trickles(shell: str, trickle_kind: str) -> None:
    stream, script = TRICKLES[trickle_kind]
    limits = Timeouts(connect=2, read=30, first_token=30, stream_idle=30, deadline=0.6)
    with raw_server(script) as srv:
        started = time.monotonic()
        with pytest.raises(LMStudioTimeout) as info:
            call(shell, srv.url, stream=stream, timeout=limits, retry=NO_RETRY)
        took = time.monotonic() - started
    # The server would go on for 20 s; the call stops at its deadline (slack for a busy box).
    assert took < 5.0, f"{trickle_kind}: ran {took:.1f}s past a 0.6s deadline"
    assert info.value.phase == "deadline", str(info.value)
    assert len(srv.requests) == 1


# -- SSE comments are not data: they do not reset the stalled-stream timer ----------------------
@pytest.mark.parametrize("shell", SHELLS)
def test_keepalive_comments_do_not_keep_a_stalled_stream_alive(shell: str) -> None:
    first = b"data: " + json.dumps(chunk("tok")).encode() + b"\n\n"

    def script(conn: socket.socket) -> None:
        conn.sendall(SSE_HEAD + _chunked(first))
        repeat(conn, _chunked(b": keep-alive\n\n"), 0.05)

    limits = Timeouts(read=30, first_token=30, stream_idle=0.4, deadline=60)
    with raw_server(script) as srv:
        started = time.monotonic()
        with pytest.raises(StreamStalled) as info:
            call(shell, srv.url, stream=True, timeout=limits, retry=NO_RETRY)
        took = time.monotonic() - started
    assert info.value.phase == "stream-idle" and info.value.partial.text == "tok"
    assert took < 10.0


# -- a longer time-to-first-token limit than the inter-token idle limit --------------------------
@pytest.mark.parametrize("shell", SHELLS)
def test_first_token_may_take_longer_than_the_idle_limit(server: ScriptedServer,
                                                         shell: str) -> None:
    reply = sse(chunk("a"), chunk("b"), chunk(finish="stop"))
    reply.chunks[0] = (0.6, reply.chunks[0][1])  # a long prefill before the first token
    server.script(CHAT, reply)
    limits = Timeouts(first_token=10, stream_idle=0.3, read=10)
    result = call(shell, server.url, stream=True, timeout=limits)
    assert result.text == "ab"


@pytest.mark.parametrize("shell", SHELLS)
def test_no_first_token_in_time_is_a_first_token_stall(server: ScriptedServer,
                                                       shell: str) -> None:
    reply = sse(chunk("a"), chunk(finish="stop"))
    reply.chunks[0] = (3.0, reply.chunks[0][1])
    server.script(CHAT, reply)
    with pytest.raises(StreamStalled) as info:
        call(shell, server.url, stream=True, retry=NO_RETRY,
             timeout=Timeouts(first_token=0.3, stream_idle=10, read=10))
    assert info.value.phase == "first-token" and "first token" in str(info.value)


# -- Retry-After above the cap is never undercut ------------------------------------------------
@pytest.mark.parametrize("shell", SHELLS)
def test_retry_after_above_the_cap_gives_up_at_once(server: ScriptedServer, shell: str) -> None:
    server.script(CHAT, json_reply({"error": "slow down"}, 429, [("retry-after", "30")]),
                  json_reply(completion("ok")))
    sleeps = Sleeps()
    with pytest.raises(RateLimited) as info:
        call(shell, server.url, sleeps=sleeps)
    assert info.value.retry_after == 30.0
    assert sleeps.waits == [] and server.hits(CHAT) == 1


@pytest.mark.parametrize("shell", SHELLS)
def test_retry_after_above_the_cap_is_waited_when_the_policy_allows(server: ScriptedServer,
                                                                    shell: str) -> None:
    server.script(CHAT, json_reply({"error": "slow down"}, 429, [("retry-after", "30")]),
                  json_reply(completion("ok")))
    sleeps = Sleeps()
    result = call(shell, server.url, sleeps=sleeps, retry=RetryPolicy(retry_after_max=60))
    assert result.text == "ok" and sleeps.waits == [30.0]


def test_retry_after_past_the_deadline_gives_up(server: ScriptedServer) -> None:
    server.script(CHAT, json_reply({"error": "slow down"}, 429, [("retry-after", "30")]))
    sleeps = Sleeps()
    with pytest.raises(RateLimited):
        call("sync", server.url, sleeps=sleeps, retry=RetryPolicy(retry_after_max=60),
             timeout=Timeouts(deadline=10))
    assert sleeps.waits == []


# -- a response that had started is never silently re-run ---------------------------------------
@pytest.mark.parametrize("shell", SHELLS)
def test_body_cut_after_the_headers_is_not_re_run(shell: str) -> None:
    body = json.dumps(completion("a long answer that the server never finishes")).encode()

    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD.replace(b"100000", str(len(body)).encode()) + body[:40])

    with raw_server(script) as srv:
        with pytest.raises(IncompleteAnswer) as info:
            call(shell, srv.url, sleeps=Sleeps())
    assert len(srv.requests) == 1, "the generation was re-run"
    assert "after the response had started" in str(info.value)


@pytest.mark.parametrize("shell", SHELLS)
def test_close_before_any_response_byte_is_retried(shell: str) -> None:
    answers = iter([b"", json.dumps(completion("ok")).encode()])

    def script(conn: socket.socket) -> None:
        body = next(answers)
        if body:  # the first connection closes at once: LM Studio's keep-alive race
            conn.sendall(HEAD.replace(b"100000", str(len(body)).encode()) + body)

    with raw_server(script) as srv:
        assert call(shell, srv.url, sleeps=Sleeps()).text == "ok"
    assert len(srv.requests) == 2


# -- gzip and deflate decode, streamed or not ---------------------------------------------------
def _compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "deflate":
        return zlib.compress(data)
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # "deflate" sent as raw deflate
    return raw.compress(data) + raw.flush()


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_streams_decode(server: ScriptedServer, shell: str, encoding: str) -> None:
    plain = b"".join(data for _, data in sse(chunk("Hel"), chunk("lo"), chunk(finish="stop"),
                                             chunk(usage={"prompt_tokens": 1,
                                                          "completion_tokens": 2,
                                                          "total_tokens": 3})).chunks)
    packed = _compress(encoding, plain)
    name = "deflate" if encoding == "raw-deflate" else encoding
    server.script(CHAT, Reply(headers=[("content-type", "text/event-stream"),
                                       ("content-encoding", name)],
                              chunks=[(0.0, packed[i:i + 7]) for i in range(0, len(packed), 7)]))
    result = call(shell, server.url, stream=True)
    assert result.text == "Hello" and result.finish_reason == "stop"
    assert "gzip" in server.seen[-1].headers["accept-encoding"]


@pytest.mark.parametrize("shell", SHELLS)
def test_compressed_plain_answer_decodes(server: ScriptedServer, shell: str) -> None:
    server.script(CHAT, Reply(headers=[("content-type", "application/json"),
                                       ("content-encoding", "gzip")],
                              chunks=[(0.0, gzip.compress(json.dumps(completion("hi")).encode()))]))
    assert call(shell, server.url).text == "hi"


# -- redirects: followed for GET only, a clear error otherwise ----------------------------------
def test_get_follows_redirects(server: ScriptedServer) -> None:
    server.script("/v1/models", Reply(status=307, headers=[("location", "/moved/v1/models")]))
    server.script("/moved/v1/models", json_reply({"object": "list", "data": [{"id": MODEL}]}))
    with Client(server.url) as c:
        assert [m.id for m in c.list_models()] == [MODEL]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("status", [302, 307, 308])
def test_post_redirect_is_a_clear_error(server: ScriptedServer, shell: str, status: int) -> None:
    server.script(CHAT, Reply(status=status, headers=[("location", "/elsewhere")]))
    with pytest.raises(Redirected) as info:
        call(shell, server.url, sleeps=Sleeps())
    err = info.value
    assert err.status == status and err.location == "/elsewhere"
    assert "HTTP 200" not in str(err) and "not re-sent" in str(err)
    assert server.hits(CHAT) == 1 and server.hits("/elsewhere") == 0


# -- the pool: its own phase, and waits count against the deadline ------------------------------
def test_default_limits_fit_the_documented_concurrency() -> None:
    assert default_limits().max_connections >= DOCUMENTED_CONCURRENCY


def _slow_stream() -> Reply:
    reply = sse(chunk("a"), chunk("b"), chunk(finish="stop"))
    reply.chunks = [(0.3, data) for _, data in reply.chunks]
    return reply


def test_pool_exhaustion_is_its_own_phase(server: ScriptedServer) -> None:
    server.script(CHAT, _slow_stream())
    with Client(server.url, model=MODEL, limits=httpx.Limits(max_connections=1),
                timeout=Timeouts(pool=0.1), sleep=Sleeps()) as c:
        with c.stream_chat(MSG) as holder:
            with pytest.raises(LMStudioTimeout) as info:
                c.chat(MSG)
            holder.result()
    err = info.value
    assert err.phase == "pool" and "waiting for a connection" in str(err)
    assert "all 1 connections" in str(err)
    assert server.hits(CHAT) == 1  # the waiting call never reached the server: not retried


async def test_async_pool_exhaustion_is_its_own_phase(server: ScriptedServer) -> None:
    server.script(CHAT, _slow_stream())
    async with AsyncClient(server.url, model=MODEL, limits=httpx.Limits(max_connections=1),
                           timeout=Timeouts(pool=0.1)) as c:
        async with c.stream_chat(MSG) as holder:
            with pytest.raises(LMStudioTimeout) as info:
                await c.chat(MSG)
            await holder.result()
    assert info.value.phase == "pool" and "all 1 connections" in str(info.value)


def test_waiting_for_a_connection_is_not_a_connect_timeout(server: ScriptedServer) -> None:
    """With the pool full, a call waits for a connection as long as its deadline allows (the
    first generation gave up after ``connect`` seconds, calling it a connect timeout)."""
    server.script(CHAT, _slow_stream())
    done: list[str] = []
    with Client(server.url, model=MODEL, limits=httpx.Limits(max_connections=1),
                timeout=Timeouts(connect=0.05, deadline=30)) as c:
        def other() -> None:
            with c.stream_chat(MSG) as s:
                done.append(s.result().text)

        with c.stream_chat(MSG) as first:
            thread = threading.Thread(target=other)
            thread.start()
            done.append(first.result().text)
        thread.join(10)
    assert done == ["ab", "ab"]


# -- deterministic 4xx/5xx are not retried ------------------------------------------------------
REJECTIONS = [
    (500, {"error": {"message": 'Engine protocol predict request returned 500: {"error":{"code":'
                                '500,"message":"Error rendering prompt with jinja template: '
                                'Jinja Exception: Conversation roles must alternate"}}'}},
     ServerRejected, "template"),
    (500, {"error": "Failed to parse tool call: JSON.parse: Unexpected token } in JSON"},
     ServerRejected, "tool_json"),
    (400, {"error": "<LM Studio error> Trying to keep the first 5000 tokens when context the "
                    "overflows. However, the model is loaded with context length of only 4096 "
                    "tokens"}, ContextOverflow, "context_overflow"),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("status", "body", "kind", "reason"), REJECTIONS,
                         ids=["jinja", "tool-json", "context"])
def test_deterministic_server_errors_are_not_retried(server: ScriptedServer, shell: str,
                                                     status: int, body: dict[str, Any],
                                                     kind: type[Exception], reason: str) -> None:
    server.script(CHAT, json_reply(body, status), json_reply(completion("never")))
    sleeps = Sleeps()
    with pytest.raises(kind) as info:
        call(shell, server.url, sleeps=sleeps)
    err = info.value
    assert isinstance(err, ServerRejected) and isinstance(err, HTTPStatusError)
    assert err.reason == reason and err.status == status
    assert server.hits(CHAT) == 1 and sleeps.waits == []


def test_a_transient_500_is_still_retried(server: ScriptedServer) -> None:
    server.script(CHAT, json_reply({"error": "Compute error."}, 500), json_reply(completion("ok")))
    assert call("sync", server.url, sleeps=Sleeps()).text == "ok"
    assert server.hits(CHAT) == 2


# -- X-Request-Id is a UUID, the same for every retry -------------------------------------------
def test_request_id_is_a_uuid_kept_across_retries(server: ScriptedServer) -> None:
    server.script(CHAT, json_reply({"error": "busy"}, 503), json_reply(completion("ok")))
    call("sync", server.url, sleeps=Sleeps())
    ids = [seen.headers["x-request-id"] for seen in server.seen]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert str(uuid.UUID(ids[0])) == ids[0]


# -- a broken stream is still an interruption, not a retry --------------------------------------
@pytest.mark.parametrize("shell", SHELLS)
def test_stream_cut_after_the_headers_is_not_re_run(shell: str) -> None:
    first = b"data: " + json.dumps(chunk("par")).encode() + b"\n\n"

    def script(conn: socket.socket) -> None:
        conn.sendall(SSE_HEAD + _chunked(first))

    with raw_server(script) as srv:
        with pytest.raises(StreamInterrupted) as info:
            call(shell, srv.url, stream=True, sleeps=Sleeps())
    assert info.value.partial.text == "par" and len(srv.requests) == 1
    assert not isinstance(info.value, ConnectError)


# -- no state carried between calls by cookies ---------------------------------------------------
@pytest.mark.parametrize("shell", SHELLS)
def test_cookies_set_by_an_answer_are_not_sent_back(server: ScriptedServer, shell: str) -> None:
    """The shells keep no cookie jar: a call's outcome must not depend on what an earlier
    answer set (and skipping httpx's Set-Cookie parse is part of the small-call budget)."""
    cookie = [("set-cookie", "session=abc; Path=/")]
    server.script(CHAT, json_reply(completion("one"), headers=cookie),
                  json_reply(completion("two"), headers=cookie))

    async def twice_async() -> list[str]:
        async with AsyncClient(server.url, model=MODEL) as c:
            return [(await c.chat(MSG)).text for _ in range(2)]

    if shell == "sync":
        with Client(server.url, model=MODEL) as c:
            texts = [c.chat(MSG).text for _ in range(2)]
    else:
        texts = asyncio.run(twice_async())
    assert texts == ["one", "two"]
    assert len(server.seen) == 2
    assert all("cookie" not in seen.headers for seen in server.seen)


def test_request_urls_are_parsed_once() -> None:
    """``parsed_url`` hands back the same immutable ``httpx.URL`` for the same string."""
    url = "http://127.0.0.1:1234/v1/chat/completions"
    assert parsed_url(url) is parsed_url(url)
    assert str(parsed_url(url)) == url
