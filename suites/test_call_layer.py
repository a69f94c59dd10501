"""Call-layer suite: the failures outside measurement found in clients that pass the other
suites (issue 11): a non-streamed answer cut off by an auto-evict taken as complete, a deadline
that trickling stretches, ``Retry-After`` undercut, a request re-run after its response had
started, and the semantic failures LM Studio users report (empty and reasoning-only replies, an
overflow error frame in a 200 stream, inline ``<think>``, tool calls as text or without ids).

Every test judges the *subject* (``--subject``), with the emulator, raw sockets and the ground
truth as the judge: the adapter passes errors through untouched, so "raised" means the client
itself refused the answer. A client that hands such an answer over as a success fails.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import httpx
import pytest

from harness.evaluate.support import (
    Outcome,
    assert_failure_names_request,
    chat_chunk,
    chat_frame,
    harness_stream,
    prompt,
    require_emulator_behaviour,
    response_head,
    trickling_server,
)
from harness.evaluate.target import Faults, Target, Truth
from harness.faults import (
    BlankToolIdFault,
    ContentToReasoningFault,
    EmptyReplyFault,
    ErrorFrameFault,
    InlineThinkFault,
    StatusFault,
    ToolCallsAsTextFault,
)
from harness.studio.catalog import Catalog, load_catalog
from harness.subjects import Answer, acollect, collect

pytestmark = pytest.mark.errors

CHAT = "/v1/chat/completions"
HELLO = prompt("hello")
SHELLS = ["sync", "async"]
SCRIPTED_TOOL = [{"role": "user", "content": 'Add them. [[tools: [[{"name": "add", '
                                              '"arguments": {"a": 1, "b": 2}}]]]]'}]
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}]


def outcome(run: Callable[[], Any], limit: float) -> tuple[Any, BaseException | None, float]:
    """Run a subject call in a thread for at most ``limit`` seconds: (value, error, seconds).
    A call still running at the limit is reported as such, never waited for."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = run()
        except BaseException as exc:  # the subject's own error, judged by the caller
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    took = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"the call was still running after {limit:g}s", pytrace=False)
    return box.get("value"), box.get("error"), took


MODEL = "qwen/qwen3-4b"


def answered_with(make_subject: Any, wire: bytes, shape: str, *, timeout: float
                  ) -> tuple[Any, BaseException | None, str, list[int]]:
    """One call of a subject, plain or streamed (``shape``), to a raw server that answers
    with the bytes ``wire``: (value, error, the server's URL, its hits)."""
    with trickling_server(lambda conn: conn.sendall(wire)) as (url, hits):
        subject = make_subject(url, model=MODEL, timeout=timeout)

        def run() -> Any:
            if shape == "stream":
                return collect(subject.stream_chat(HELLO, model=MODEL))
            return subject.chat(HELLO, model=MODEL)

        value, error, _ = outcome(run, 4 * timeout)
    return value, error, url, hits


def refused(value: Any, error: BaseException | None, what: str) -> str:
    """Pass when the subject raised; fail naming what it handed over as an answer."""
    if error is None:
        shown = value if not isinstance(value, Answer) else (
            f"Answer(text={value.text[:60]!r}, finish_reason={value.finish_reason!r}, "
            f"tool_calls={len(value.tool_calls)})")
        pytest.fail(f"{what}, returned as a success: {shown}", pytrace=False)
    return f"{type(error).__name__}: {str(error)[:200]}"


# -- a non-streamed answer cut off by a JIT auto-evict -----------------------------------------
def slow_catalog(key: str, *, tokens: int, per_s: float) -> Catalog:
    """The packaged catalog with ``key`` answering ``tokens`` tokens at ``per_s``."""
    catalog = load_catalog()
    models = tuple(m.model_copy(update={"tokens_per_s": per_s, "reply_tokens": (tokens, tokens)})
                   if m.key == key else m for m in catalog.models)
    return catalog.model_copy(update={"models": models})


@pytest.mark.subject_needs("sync")
def test_nonstreamed_answer_cut_by_auto_evict_is_not_an_answer(
        target: Target, private_studio: Any, make_subject: Any, record_property: Any) -> None:
    """LM Studio answers a non-streamed request whose model is unloaded mid-generation with a
    200, the partial text and ``finish_reason: null``. A client must not return that as the
    answer (the first-generation harness did, 8 times in one concurrency run)."""
    first, second = "qwen/qwen3-4b", "google/gemma-3-12b"
    # LM Studio's defaults (JIT, auto-evict cancels the running call); a 5 s answer to cut.
    studio = private_studio(catalog=slow_catalog(first, tokens=250, per_s=50.0))
    subject = make_subject(studio.base_url, model=first, timeout=30)
    subject.chat(HELLO, model=first, max_tokens=1)  # JIT-load the first model
    story = [{"role": "user", "content": "Tell me a very long story."}]
    box: dict[str, Any] = {}

    def long_call() -> None:
        try:
            box["value"] = subject.chat(story, model=first, max_tokens=4000)
        except Exception as exc:  # the subject's own error: what is judged
            box["error"] = exc

    thread = threading.Thread(target=long_call, daemon=True)
    thread.start()
    time.sleep(1.0)  # the long call is generating (it would take 5 s)
    httpx.post(studio.base_url + CHAT, json={"model": second, "messages": HELLO,
                                            "max_tokens": 1}, timeout=30)
    thread.join(60)
    assert not thread.is_alive(), "the cut-off call was still running after 60 s"
    cut = [r for r in studio.truth() if r["endpoint"] == CHAT and r["cut_off"]]
    assert cut, "the emulator did not cut the long call off (nothing to judge)"
    record_property("evidence", refused(box.get("value"), box.get("error"),
                                        "a non-streamed answer cut off by an auto-evict"))


# -- the deadline holds whatever the server trickles ---------------------------------------------
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
SSE_HEAD = response_head("text/event-stream")


def _trickle(conn: socket.socket, data: bytes, every: float, until: float) -> None:
    end = time.monotonic() + until
    for i in range(len(data)):
        if time.monotonic() > end:
            return
        conn.sendall(data[i:i + 1])
        time.sleep(every)


TRICKLES: dict[str, Callable[[socket.socket], None]] = {
    "slow-headers": lambda conn: _trickle(conn, HEAD, 0.1, 15),
    "slow-body": lambda conn: (conn.sendall(HEAD), _trickle(conn, b'{"choices": [' + b" " * 5000,
                                                           0.1, 15)),
    "keepalive-whitespace": lambda conn: (conn.sendall(HEAD), _trickle(conn, b" " * 5000, 0.1,
                                                                       15)),
}


@pytest.mark.subject_needs("sync")
@pytest.mark.parametrize("trickle", sorted(TRICKLES))
def test_sync_deadline_holds_while_the_server_trickles(make_subject: Any, trickle: str,
                                                       record_property: Any) -> None:
    """A server that sends a byte every 0.1 s never trips a per-read timeout; the call must
    still end near its own time budget (2 s here), not when the server stops (15 s)."""
    with trickling_server(TRICKLES[trickle]) as (url, _):
        subject = make_subject(url, model="qwen/qwen3-4b", timeout=1.0)
        value, error, took = outcome(lambda: subject.chat(HELLO, model="qwen/qwen3-4b"), 12)
    assert took < 8.0, f"the call ran {took:.1f}s against a trickle (budget ~2 s)"
    record_property("evidence", f"ended after {took:.1f}s: "
                                + refused(value, error, "a trickled non-answer"))


@pytest.mark.subject_needs("async")
@pytest.mark.parametrize("trickle", sorted(TRICKLES))
async def test_async_deadline_holds_while_the_server_trickles(make_subject: Any, trickle: str,
                                                              record_property: Any) -> None:
    """The same for the subject's async API."""
    import asyncio

    with trickling_server(TRICKLES[trickle]) as (url, _):
        subject = make_subject(url, model="qwen/qwen3-4b", timeout=1.0)
        started = time.monotonic()
        task = asyncio.ensure_future(subject.achat(HELLO, model="qwen/qwen3-4b"))
        done, _ = await asyncio.wait({task}, timeout=12)
        took = time.monotonic() - started
        if not done:
            task.cancel()
            pytest.fail("the call was still running after 12s", pytrace=False)
        error = task.exception()
        value = None if error is not None else task.result()
    assert took < 8.0, f"the call ran {took:.1f}s against a trickle (budget ~2 s)"
    record_property("evidence", f"ended after {took:.1f}s: "
                                + refused(value, error, "a trickled non-answer"))


# -- an answer cut off in the middle of a character ---------------------------------------------
CUT_BODIES = {
    # content-length promises more; the body stops after the first byte of "é" (0xC3 0xA9)
    "plain": (b"application/json", b'{"choices": [{"message": {"role": "assistant", '
                                   b'"content": "caf\xc3'),
    "stream": (b"text/event-stream", b'data: {"choices": [{"index": 0, "delta": {"content": '
                                     b'"caf\xc3\xa9 "}}]}\n\ndata: {"choices": [{"index": 0, '
                                     b'"delta": {"content": "na\xc3'),
}


@pytest.mark.subject_needs("sync")
@pytest.mark.target_needs("realtime")  # counts the raw server's hits: no replay has them
@pytest.mark.parametrize("shape", [
    "plain", pytest.param("stream", marks=pytest.mark.subject_needs("stream"))])
def test_answer_cut_mid_character_fails_naming_server_and_model(
        make_subject: Any, shape: str, record_property: Any) -> None:
    """A server that dies after the first byte of a two-byte UTF-8 character (plain body or
    stream): the client raises an error naming the server and the model. A client that
    decodes what it kept strictly raises ``UnicodeDecodeError`` instead, naming neither."""
    kind, body = CUT_BODIES[shape]
    wire = response_head(kind.decode(), "content-length: 100000") + body
    value, error, url, hits = answered_with(make_subject, wire, shape, timeout=5.0)
    refused(value, error, f"a {shape} answer cut mid-character")
    assert hits, "the server was never asked"
    found = assert_failure_names_request(Outcome(error=error), url, MODEL)
    record_property("evidence", found)


@pytest.mark.harness_api
def test_stream_error_counts_the_wait_for_headers_once(record_property: Any) -> None:
    """The elapsed time on an error raised mid-stream counts from the call's start: the wait
    for the headers (0.8 s here) is in it once, not twice (it can never exceed the wall time
    the caller measured around the call)."""
    from harness.client import Client, RetryPolicy, Timeouts
    from harness.client.errors import StreamInterrupted

    frame = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'

    def script(conn: socket.socket) -> None:
        time.sleep(0.8)
        conn.sendall(SSE_HEAD + frame + b"data: {torn\n\n")

    with trickling_server(script) as (url, _):
        with Client(url, model="qwen/qwen3-4b", retry=RetryPolicy.none(),
                    timeout=Timeouts(read=20, deadline=30)) as client:
            started = time.perf_counter()
            with pytest.raises(StreamInterrupted) as caught:
                with client.stream_chat(HELLO) as stream:
                    for _ in stream:
                        pass
            wall = time.perf_counter() - started
    elapsed = caught.value.elapsed
    assert 0.8 <= elapsed <= wall, f"error says {elapsed:.3f}s, the call took {wall:.3f}s"
    record_property("evidence", f"{caught.value}; wall {wall:.2f}s")


# -- compressed answers --------------------------------------------------------------------------
ANSWER = json.dumps({"id": "chatcmpl-z", "object": "chat.completion", "created": 1,
                     "model": "qwen/qwen3-4b", "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "compressed héllo"}}],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
                    ensure_ascii=False).encode("utf-8")


def raw_deflate(body: bytes) -> bytes:
    squeeze = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return squeeze.compress(body) + squeeze.flush()


def raw_deflate_stored_first(body: bytes) -> bytes:
    """Raw deflate that opens with a stored block whose padding bits (ignored, RFC 1951) are
    set: its first byte has a zlib header's method nibble (8), its second fails the header's
    check. A reader that sniffs the format must look at both."""
    return b"\x08" + struct.pack("<HH", 10, 10 ^ 0xFFFF) + body[:10] + raw_deflate(body[10:])


# "deflate-raw*" are labelled "deflate" but sent without the zlib wrapper, as some servers do.
COMPRESS = {"gzip": gzip.compress, "x-gzip": gzip.compress, "deflate": zlib.compress,
            "deflate-raw": raw_deflate, "deflate-raw-stored-first": raw_deflate_stored_first,
            "identity": bytes}  # "identity" names no encoding at all


def _encoded_server(encoding: str, body: bytes, pieces: bool = False
                    ) -> Callable[[socket.socket], None]:
    """Serves ``body``, whole or in pieces: its first byte alone, then 16 bytes a write."""
    head = response_head("application/json", f"content-encoding: {encoding}",
                         f"content-length: {len(body)}")

    def script(conn: socket.socket) -> None:
        if not pieces:
            conn.sendall(head + body)
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(head + body[:1])
        for start in range(1, len(body), 16):
            time.sleep(0.01)
            conn.sendall(body[start:start + 16])

    return script


@pytest.mark.subject_needs("sync")
@pytest.mark.parametrize("pieces", [False, True], ids=["whole", "first-byte-alone-then-16s"])
@pytest.mark.parametrize("encoding", sorted(COMPRESS))
def test_a_compressed_answer_is_read(make_subject: Any, encoding: str, pieces: bool,
                                     record_property: Any) -> None:
    """A proxy in front of the server may compress answers (every client advertises what it
    accepts; ``x-gzip`` is gzip's old name; "deflate" may come with or without its zlib
    wrapper): the client decodes the body it was sent, however the body's first bytes are
    split across reads (one byte is too few to tell zlib from raw deflate)."""
    model = "qwen/qwen3-4b"
    label = encoding.split("-raw")[0]
    server = _encoded_server(label, COMPRESS[encoding](ANSWER), pieces)
    with trickling_server(server) as (url, _):
        subject = make_subject(url, model=model, timeout=10.0)
        value, error, _ = outcome(lambda: subject.chat(HELLO, model=model), 30)
    assert error is None, f"a {encoding} answer was refused: {error!r}"
    assert Answer.of(value).text == "compressed héllo"
    record_property("evidence", f"{encoding}: {Answer.of(value).text!r}")


@pytest.mark.subject_needs("sync")
def test_an_answer_in_an_encoding_not_asked_for_is_refused_naming_it(
        make_subject: Any, record_property: Any) -> None:
    """A proxy that answers in an encoding the client never advertised (Brotli, ``br``) sent
    something the client cannot read: an error naming the server, the model and the
    encoding, not a parse error about garbage."""
    model = "qwen/qwen3-4b"
    body = b"\x1b\x2f\x00\xf8\x25\x00\xa2\x00" * 8  # bytes that are not JSON, as br's are
    with trickling_server(_encoded_server("br", body)) as (url, _):
        subject = make_subject(url, model=model, timeout=10.0)
        value, error, _ = outcome(lambda: subject.chat(HELLO, model=model), 30)
    refused(value, error, "an answer in br")
    found = assert_failure_names_request(Outcome(error=error), url, model)
    assert "'br'" in str(error) or '"br"' in str(error), str(error)
    record_property("evidence", found)


@pytest.mark.subject_needs("sync")
def test_a_corrupt_compressed_answer_fails_naming_server_and_model(
        make_subject: Any, record_property: Any) -> None:
    """A gzip body that breaks off into garbage (a proxy's truncated buffer) is no answer: the
    client raises an error naming the server and the model."""
    model = "qwen/qwen3-4b"
    body = gzip.compress(ANSWER)[:24] + b"\xff" * 64
    with trickling_server(_encoded_server("gzip", body)) as (url, _):
        subject = make_subject(url, model=model, timeout=10.0)
        value, error, _ = outcome(lambda: subject.chat(HELLO, model=model), 30)
    refused(value, error, "a corrupt gzip answer")
    record_property("evidence", assert_failure_names_request(Outcome(error=error), url, model))


# -- a 200 that is a web page ---------------------------------------------------------------------
PORTAL = b"Please sign in to continue. <a href='/login'>Sign in</a>"


@pytest.mark.subject_needs("sync")
@pytest.mark.parametrize("shape", [
    "plain", pytest.param("stream", marks=pytest.mark.subject_needs("stream"))])
def test_a_200_web_page_is_refused_naming_the_call(make_subject: Any, shape: str,
                                                   record_property: Any) -> None:
    """A proxy or captive portal in front of the server answers 200 with a web page (labelled
    ``text/html``, no ``<html>`` tag to sniff), asked for a plain answer or a stream: no
    answer, and the error names the server and the model."""
    wire = response_head("text/html; charset=utf-8", f"content-length: {len(PORTAL)}") + PORTAL
    value, error, url, _ = answered_with(make_subject, wire, shape, timeout=10.0)
    refused(value, error, f"a web page asked for a {shape} answer")
    record_property("evidence", assert_failure_names_request(Outcome(error=error), url, MODEL))


# -- a stream in unusual but valid SSE framing ---------------------------------------------------
def _odd_sse_body() -> tuple[bytes, bytes, str]:
    """Every framing the SSE standard allows and a reader can get wrong: LF, CRLF and lone CR
    line ends, ``data:`` without its space, one JSON object over two ``data`` lines, a
    ``data`` line without a colon, comments, ``id``/``retry``/unknown fields, an explicit
    ``event: message``, a blank line with no event before it; the text is multibyte, with one
    invalid byte."""
    pieces = ["Hé", "llo, ", "wörld", " 🙂 ", "日本", "!"]
    first, second = chat_chunk({"role": "assistant", "content": pieces[0]}), chat_chunk(
        {"content": pieces[1]})
    half = second.index(b'"choices"')
    body = b"".join([
        b": keep-alive\n\n",
        b"\n",                                     # a blank line with no event: nothing
        b"data: " + first + b"\n\n",               # LF
        b"event: message\r\nid: 7\r\n",
        b"data:" + second[:half] + b"\r\n",       # one object over two data lines, CRLF
        b"data: " + second[half:] + b"\r\n\r\n",
        b"retry: 1000\rfoo: bar\r",               # lone CR; fields a reader must ignore
        b"data: " + chat_chunk({"content": pieces[2]}) + b"\r\r",
        b": comment between events\n",
        b"data: " + chat_chunk({"content": pieces[3]}) + b"\ndata\n\n",  # "data" without a colon
        b"data:  " + chat_chunk({"content": pieces[4]}) + b"\n\n",       # the second space is data
        b"data: " + chat_chunk({"content": pieces[5]}) + b"\r\n\r\n",
        # an invalid byte: the standard decodes it as U+FFFD and the stream goes on (once
        # in a plain LF frame, once in a CRLF one: readers take different paths for them)
        b"data: " + chat_chunk({"content": " @@"}).replace(b"@@", b"\xff") + b"\n\n",
        b"data: " + chat_chunk({"content": " @@ "}).replace(b"@@", b"\xff") + b"\r\n\r\n",
    ])
    # Sent in one write: a lone CR between two data lines of one event, ended by LF LF, then
    # plain frames (a reader must not take that read for plain "data: X" frames).
    last = chat_chunk({"content": "end"})
    split = last.index(b'"choices"')
    whole = b"".join([
        b"data: " + last[:split] + b"\rdata: " + last[split:] + b"\n\n",
        chat_frame({}, "stop"),
        b"data: [DONE]\n\n",
    ])
    return body, whole, "".join(pieces) + " \ufffd \ufffd end"


@pytest.mark.subject_needs("sync", "stream")
def test_stream_in_unusual_but_valid_sse_framing_is_read_exactly(
        make_subject: Any, record_property: Any) -> None:
    """A server may frame its event stream any way the SSE standard allows, and cut it
    anywhere between reads (here every 7 bytes and after each CR: inside characters, between a
    CR and its LF, after a lone CR; the last frames in one read): the client must deliver
    exactly the text the events carry."""
    body, whole, expected = _odd_sse_body()

    # Cut every 7 bytes and after every CR (a lone CR ending a read is a line end too).
    cuts = sorted({*range(7, len(body), 7), *(i + 1 for i, b in enumerate(body) if b == 13)})

    def script(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(SSE_HEAD)
        for start, end in pairwise([0, *cuts, len(body)]):
            conn.sendall(body[start:end])
            time.sleep(0.002)
        conn.sendall(whole)

    model = "qwen/qwen3-4b"
    with trickling_server(script) as (url, _):
        subject = make_subject(url, model=model, timeout=10.0)
        value, error, _ = outcome(lambda: collect(subject.stream_chat(HELLO, model=model)), 30)
    assert error is None, f"the client refused a valid stream: {error!r}"
    pieces, answer = value
    assert "".join(pieces) == answer.text == expected, (pieces, answer.text)
    assert answer.finish_reason in (None, "stop"), answer
    record_property("evidence", f"{len(body + whole)} bytes of odd framing in {len(cuts) + 2} "
                                f"writes -> "
                                f"{answer.text!r}")


@pytest.mark.subject_needs("sync", "stream")
def test_an_event_ended_by_lone_crs_is_delivered_at_once(make_subject: Any,
                                                        record_property: Any) -> None:
    """A lone CR ends a line as an LF does: an event whose lines end with CRs, followed in the
    same read by the start of the next line, is complete, and the client hands its text over
    at once, not when a later read brings a line feed (here the server waits 2 s before the
    rest; order, not speed: the first piece must come well before the end)."""
    event = b"data: " + chat_chunk({"role": "assistant", "content": "now"})
    rest = chat_chunk({}, "stop") + b"\n\ndata: [DONE]\n\n"

    def script(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(SSE_HEAD + event[:20])  # an unfinished line the client must keep
        time.sleep(0.05)
        conn.sendall(event[20:] + b"\r\rdata: ")  # the event ends; the next line begins
        time.sleep(2.0)
        conn.sendall(rest)

    model = "qwen/qwen3-4b"
    arrivals: list[tuple[Any, float]] = []

    def run() -> None:
        for item in subject.stream_chat(HELLO, model=model):
            arrivals.append((item, time.monotonic()))

    with trickling_server(script) as (url, _):
        subject = make_subject(url, model=model, timeout=10.0)
        _, error, _ = outcome(run, 30)
    assert error is None, f"the client refused a valid stream: {error!r}"
    texts = [(item, at) for item, at in arrivals if isinstance(item, str) and item]
    assert texts and texts[0][0] == "now", arrivals
    early = arrivals[-1][1] - texts[0][1]
    assert early > 1.0, f"the first text came {early:.2f}s before the end: held for a line feed"
    record_property("evidence", f"'now' delivered {early:.2f}s before the stream ended")


@pytest.mark.subject_needs("sync", "stream")
def test_a_stream_closed_right_after_a_lone_cr_is_whole(make_subject: Any,
                                                       record_property: Any) -> None:
    """Lines may end in lone CRs, and the server may close the connection right after the
    last one: then no later byte shows that CR is not the first half of a CRLF. At the end of
    the body it ends the line, so the last event (``[DONE]`` here) is dispatched and the
    answer is whole, not a stream that "ended before its end signal"."""
    frames = (chat_chunk({"role": "assistant", "content": "Hi"}), chat_chunk({}, "stop"), b"[DONE]")
    body = b"".join(b"data: " + frame + b"\r\r" for frame in frames)
    model = "qwen/qwen3-4b"
    with trickling_server(lambda conn: conn.sendall(SSE_HEAD + body)) as (url, _):
        subject = make_subject(url, model=model, timeout=10.0)
        value, error, _ = outcome(lambda: collect(subject.stream_chat(HELLO, model=model)), 30)
    assert error is None, f"the client refused a valid stream: {error!r}"
    pieces, answer = value
    assert "".join(pieces) == answer.text == "Hi", (pieces, answer.text)
    record_property("evidence", f"CR-only stream closed after [DONE]\\r\\r -> {answer.text!r}")


@pytest.mark.harness_api
@pytest.mark.parametrize("shell", SHELLS)
def test_a_stream_torn_inside_its_last_event_says_so(shell: str, record_property: Any) -> None:
    """A connection closed in the middle of an event (a proxy's cut buffer) is not a stream
    that merely lacked its end signal: the error says the stream ended in the middle of an
    event, and keeps the text of the events before it."""
    from harness.client import RetryPolicy
    from harness.client.errors import StreamInterrupted

    body = (chat_frame({"role": "assistant", "content": "Hello"})
            + b'data: {"choices": [{"index": 0, "delta": {"content": " wor')
    with trickling_server(lambda conn: conn.sendall(SSE_HEAD + body)) as (url, _), \
            pytest.raises(StreamInterrupted) as caught:
        harness_stream(shell, url, HELLO, model=MODEL, retry=RetryPolicy.none(), timeout=10.0)
    err = caught.value
    assert type(err) is StreamInterrupted, repr(err)
    assert err.message == "stream ended in the middle of an event", err.message
    assert err.partial.text == "Hello" and err.partial.chunks == 1, err.partial
    record_property("evidence", f"{shell}: {err}")


@pytest.mark.harness_api
@pytest.mark.parametrize("shell", SHELLS)
def test_a_stream_cut_after_a_lone_cr_event_keeps_its_text(shell: str) -> None:
    """The connection closes right after an event ended by lone CRs, before any end signal:
    the stream is interrupted for that reason (the end of the body completed the event: none
    was cut in the middle), and the text of that last event is in the partial output."""
    from harness.client import RetryPolicy, TextDelta
    from harness.client.errors import StreamInterrupted

    body = b"".join(b"data: " + chat_chunk(delta) + b"\r\r" for delta in (
        {"role": "assistant", "content": "Hello"}, {"content": " world"}))
    texts: list[str] = []

    def keep(client: Any, event: Any) -> None:
        if isinstance(event, TextDelta):
            texts.append(event.text)

    with trickling_server(lambda conn: conn.sendall(SSE_HEAD + body)) as (url, _), \
            pytest.raises(StreamInterrupted) as caught:
        harness_stream(shell, url, HELLO, on_event=keep, model=MODEL, retry=RetryPolicy.none(),
                       timeout=10.0)
    err = caught.value
    assert err.message == "stream ended before the server's end signal", err.message
    assert err.partial.text == "Hello world" and err.partial.chunks == 2, err.partial
    assert texts[:1] == ["Hello"] and err.partial.text.startswith("".join(texts)), texts


# -- Retry-After above a client's cap is never undercut -----------------------------------------
@pytest.mark.subject_needs("sync")
def test_retry_after_above_the_cap_is_not_undercut(subject: Any, target: Target, faults: Faults,
                                                   truth: Truth, record_property: Any) -> None:
    """A server asking for 20 s (over the harness's 15 s cap) must not see the next attempt
    sooner: waiting it out or giving up at once are both fine; retrying early is not."""
    since = truth.mark()
    faults.set(StatusFault(status=429, retry_after=20), endpoint=CHAT, nth=(1,))
    _, error, _ = outcome(lambda: subject.chat(HELLO, model=target.model(0)), 40)
    attempts = truth.settled(CHAT, since=since)
    times = [r["received_at_s"] for r in attempts]
    early = [round(b - times[0], 2) for b in times[1:] if b - times[0] < 20.0]
    assert not early, f"attempts {early} s after a 429 asking for 20 s"
    record_property("evidence", f"{len(attempts)} attempt(s); "
                                + (f"gave up: {type(error).__name__}" if error else
                                   "waited the full Retry-After"))


# -- a request whose response had started is never silently re-run -----------------------------
@pytest.mark.subject_needs("sync")
@pytest.mark.target_needs("realtime")  # a recorder reads the cut body whole; a replay never cuts
def test_body_cut_after_headers_is_not_re_run(make_subject: Any, record_property: Any) -> None:
    """A non-streamed body cut after the headers means the generation ran; sending it again
    runs it again (the first-generation harness ran it five times)."""
    body = json.dumps({"id": "x", "object": "chat.completion", "model": "qwen/qwen3-4b",
                       "choices": [{"index": 0, "finish_reason": "stop", "message": {
                           "role": "assistant", "content": "a long answer " * 20}}]}).encode()

    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD.replace(b"100000", str(len(body)).encode()) + body[:60])

    with trickling_server(script) as (url, hits):
        subject = make_subject(url, model="qwen/qwen3-4b", timeout=5)
        value, error, _ = outcome(lambda: subject.chat(HELLO, model="qwen/qwen3-4b"), 60)
    assert len(hits) == 1, f"the request was sent {len(hits)} times after its response started"
    record_property("evidence", refused(value, error, "half a body"))


# -- semantic failures: complete on the wire, not an answer -------------------------------------
SEMANTIC = [
    (EmptyReplyFault(), "an empty reply (LM Studio's GGUF context overflow)"),
    (ContentToReasoningFault(), "a reasoning-only reply with empty content"),
]


@pytest.mark.subject_needs("sync")
@pytest.mark.parametrize(("action", "what"), SEMANTIC, ids=["empty_reply", "reasoning_only"])
def test_semantic_non_answers_are_refused(subject: Any, target: Target, faults: Faults,
                                          action: Any, what: str, record_property: Any) -> None:
    """A reply with no content (BT#2339, BT#1602) is not an answer, streamed or not."""
    faults.set(action, endpoint=CHAT)
    value, error, _ = outcome(lambda: subject.chat(HELLO, model=target.model(0)), 30)
    evidence = [refused(value, error, what)]
    if "stream" in subject.capabilities:
        value, error, _ = outcome(lambda: collect(subject.stream_chat(
            HELLO, model=target.model(0)))[1], 30)
        evidence.append(refused(value, error, what + " (streamed)"))
    record_property("evidence", "; ".join(evidence))


@pytest.mark.subject_needs("stream")
def test_overflow_error_frame_in_a_200_stream_is_refused(subject: Any, target: Target,
                                                         faults: Faults,
                                                         record_property: Any) -> None:
    """LM Studio 0.4.21 reports a prompt over the context as ``event: error`` inside a 200
    stream (BT#2322); a client that ignores ``event:`` lines sees an empty reply."""
    faults.set(ErrorFrameFault(message="Input does not fit in context length. The input has "
                                       "31430 tokens, but the context length only supports "
                                       "30000 tokens."), endpoint=CHAT)
    if "sync" in subject.capabilities:
        value, error, _ = outcome(lambda: collect(subject.stream_chat(
            HELLO, model=target.model(0)))[1], 30)
    else:
        import asyncio
        value, error, _ = outcome(lambda: asyncio.run(acollect(subject.astream_chat(
            HELLO, model=target.model(0))))[1], 30)
    record_property("evidence", refused(value, error, "an overflow error frame"))


@pytest.mark.subject_needs("sync")
def test_inline_think_is_not_left_in_the_answer(subject: Any, target: Target, faults: Faults,
                                                record_property: Any) -> None:
    """Without LM Studio's "separate reasoning_content" setting the reasoning arrives inline as
    ``<think>...</think>`` in ``content`` (BT#863): it is not part of the answer."""
    model = "qwen/qwen3-4b-thinking-2507"
    if model not in target.models:
        target.require("emulator")  # the emulator JIT-loads any model of its catalog
    faults.set(InlineThinkFault(), endpoint=CHAT)
    value, error, _ = outcome(lambda: subject.chat(HELLO, model=model), 30)
    if error is not None:
        raise error
    assert "<think>" not in value.text and "</think>" not in value.text, value.text[:200]
    record_property("evidence", f"answer without the think block: {value.text[:80]!r}")


TOOL_FAULTS = [(ToolCallsAsTextFault(), "a tool call returned as plain text"),
               (BlankToolIdFault(), "a tool call with a blank id")]


@pytest.mark.subject_needs("sync", "tools")
@pytest.mark.parametrize(("action", "what"), TOOL_FAULTS, ids=["as_text", "blank_id"])
def test_broken_tool_calls_are_flagged(subject: Any, target: Target, faults: Faults,
                                       action: Any, what: str, record_property: Any) -> None:
    """With tools offered, a call that came back as text (BT#2115) or with an empty id, which
    the next turn cannot echo back (BT#830), must not pass as a good answer."""
    # The fault rewrites a tool call the model made: a live model makes none for SCRIPTED_TOOL
    # (measured on llama.cpp through the proxy: a plain text answer, nothing to break).
    require_emulator_behaviour(target, "a tool call on demand")
    faults.set(action, endpoint=CHAT)
    model = target.model(0)
    value, error, _ = outcome(lambda: subject.chat(SCRIPTED_TOOL, model=model, tools=TOOLS), 30)
    evidence = [refused(value, error, what)]
    if "stream" in subject.capabilities:
        value, error, _ = outcome(lambda: collect(subject.stream_chat(
            SCRIPTED_TOOL, model=model, tools=TOOLS))[1], 30)
        evidence.append(refused(value, error, what + " (streamed)"))
        # Complete on the wire, so the check runs at the end of the stream: its error still
        # names the call it refused.
        assert_failure_names_request(Outcome(error=error), target.base_url, model)
    record_property("evidence", "; ".join(evidence))
