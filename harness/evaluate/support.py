"""Helpers shared by the suites: prompts whose answers prove which request they belong to.

They live in the package so the suites, which a wheel carries as ``harness.suites``, import them
the same way in a checkout and in an installation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.capabilities import PROBE_TOOL
from harness.evaluate.target import Target
from harness.subjects import Answer, SubjectError

REASONING_MODELS = ("qwen/qwen3-4b-thinking-2507", "openai/gpt-oss-20b")
TOOLS = [PROBE_TOOL]  # the tool the capability probe forces, so suites and probe agree


def echo_messages(tag: str) -> list[dict[str, Any]]:
    """A conversation the emulator answers with ``tag`` inside a fixed sentence.

    Why: the emulator's scripted-tools contract ends a finished tool round with every tool
    result it was given, so a tag carried as a tool result comes back verbatim in the answer.
    Under heavy concurrency that proves an answer belongs to its request (no cross-talk).
    """
    return [
        {"role": "user", "content": "[[tools: []]] echo the tool result"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "1", "type": "function",
                         "function": {"name": "echo", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": tag},
    ]


def echo_answer(tag: str) -> str:
    return f"Done after 1 round(s). Tool results: {tag}"


def scripted_tool_call(name: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """A user turn that makes the emulator answer with exactly this tool call."""
    import json

    rounds = [[{"name": name, "arguments": arguments}]]
    return [{"role": "user", "content": f"[[tools: {json.dumps(rounds)}]] call the tool"}]


def prompt(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def live_bound(target: Target, max_tokens: int = 48) -> dict[str, Any]:
    """A live model's answer is bounded (it may run to its context's end); the emulator's is
    short and its text is compared whole."""
    return {} if target.can("emulator") else {"max_tokens": max_tokens}


def reasoning_models(target: Target) -> list[str]:
    listed = {m.get("id") for m in target.info.get("models", [])}
    return [m for m in REASONING_MODELS if m in listed]


def require_emulator_behaviour(target: Target, what: str) -> None:
    """Skip when a test relies on a scripted emulator behaviour a live model will not follow."""
    if not target.can("emulator"):
        pytest.skip(f"{what} is scripted by the emulator; target {target.kind} cannot script it")


def client_connections(base_url: str) -> int:
    """Established TCP connections from this process to ``base_url``'s port (Linux).

    Why /proc/net/tcp: it counts the client's side only, whether the server runs in this
    process (emulator, proxy and its upstream legs) or elsewhere.
    """
    from urllib.parse import urlsplit

    port = urlsplit(base_url).port
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def socket_fds() -> int:
    """Open sockets of this process (Linux); the leak checks compare before and after."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


# -- judging a subject by what it did, not by its types ----------------------------------------
@dataclass
class Outcome:
    """How one call of a subject ended: an answer it returned, or whatever it raised.

    ``pieces`` are the text pieces a stream delivered before it ended either way."""

    answer: Answer | None = None
    error: BaseException | None = None
    pieces: list[str] = field(default_factory=list)

    @property
    def raised(self) -> bool:
        return self.error is not None

    def take(self, item: str | Answer) -> bool:
        """Record one item of a stream; True once it was the final answer."""
        if isinstance(item, Answer):
            self.answer = item
            return True
        self.pieces.append(item)
        return False

    def describe(self, limit: int = 160) -> str:
        """Evidence: ``raised Type: message`` or ``returned N chars (finish_reason=..)``."""
        if self.error is not None:
            return f"raised {type(self.error).__name__}: {str(self.error)[:limit]}"
        assert self.answer is not None
        a = self.answer
        return (f"returned {len(a.text)} chars as an answer (finish_reason={a.finish_reason}, "
                f"model={a.model})")


def call_outcome(call: Callable[..., Answer], *args: Any, **kwargs: Any) -> Outcome:
    try:
        return Outcome(answer=Answer.of(call(*args, **kwargs)))
    except Exception as exc:  # judged, not handled: the suite asserts on what was raised
        return Outcome(error=exc)


async def acall_outcome(call: Callable[..., Awaitable[Answer]], *args: Any,
                        **kwargs: Any) -> Outcome:
    try:
        return Outcome(answer=Answer.of(await call(*args, **kwargs)))
    except Exception as exc:
        return Outcome(error=exc)


def _no_answer(subject: Any, method: str) -> SubjectError:
    return SubjectError(f"{method} of subject {subject.name} ended without its final Answer")


def stream_outcome(subject: Any, messages: list[dict[str, Any]], **kwargs: Any) -> Outcome:
    outcome = Outcome()
    try:
        if not any(outcome.take(item) for item in subject.stream_chat(messages, **kwargs)):
            raise _no_answer(subject, "stream_chat")
    except SubjectError:
        raise
    except Exception as exc:  # judged, not handled
        outcome.error = exc
    return outcome


async def astream_outcome(subject: Any, messages: list[dict[str, Any]], **kwargs: Any
                          ) -> Outcome:
    outcome = Outcome()
    try:
        async for item in subject.astream_chat(messages, **kwargs):
            if outcome.take(item):
                return outcome
        raise _no_answer(subject, "astream_chat")
    except SubjectError:
        raise
    except Exception as exc:
        outcome.error = exc
    return outcome


def host_port(url: str) -> str:
    """``http://127.0.0.1:1234/v1`` -> ``127.0.0.1:1234`` (what an error must name)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def unnamed(text: str, url: str, model: str | None) -> list[str]:
    """What of (server address, model) a failure message leaves out."""
    missing = []
    if host_port(url) not in text:
        missing.append(f"the server ({host_port(url)})")
    if model and model not in text:
        missing.append(f"the model ({model})")
    return missing


def assert_failure_names_request(outcome: Outcome, url: str, model: str | None) -> str:
    """The subject must have raised, and ``str(error)`` must name the server and the model.

    A value returned for a request that failed is judged as an answer: there was none."""
    assert outcome.error is not None, (
        f"the request failed on the server but the client {outcome.describe()}")
    text = str(outcome.error)
    missing = unnamed(text, url, model)
    assert not missing, (f"{type(outcome.error).__name__} does not name "
                         f"{' or '.join(missing)}: {text[:200]!r}")
    return f"{type(outcome.error).__name__}: {text[:200]}"


def bare_model(model: str | None) -> str | None:
    """``qwen/qwen3-4b:2`` -> ``qwen/qwen3-4b`` (an instance suffix is the same model)."""
    if model is None:
        return None
    head, sep, tail = model.rpartition(":")
    return head if sep and tail.isdigit() else model


def load_models(target: Target, models: list[str]) -> None:
    """Load explicitly (not JIT) through the native API, so LM Studio's auto-evict cannot
    unload one for another. Setup, not judgement: done with the harness's own client."""
    from harness.client import Client

    with Client(target.base_url, api_token=target.api_token) as client:
        for model in models:
            client.load_model(model)


def chat_chunk(delta: dict[str, Any], finish: str | None = None, *,
               model: str = "qwen/qwen3-4b") -> bytes:
    """One chat stream chunk's JSON in LM Studio's shape, for ``trickling_server`` scripts."""
    return json.dumps({"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1,
                       "model": model, "choices": [
                           {"index": 0, "delta": delta, "finish_reason": finish}]},
                      ensure_ascii=False).encode("utf-8")


def chat_frame(delta: dict[str, Any], finish: str | None = None, *,
               model: str = "qwen/qwen3-4b") -> bytes:
    """``chat_chunk`` as one SSE frame (``data: ...`` and its blank line)."""
    return b"data: " + chat_chunk(delta, finish, model=model) + b"\n\n"


def harness_stream(shell: str, base_url: str, messages: Any, *,
                   on_event: Callable[[Any, Any], None] | None = None, native: bool = False,
                   **options: Any) -> Any:
    """One chat streamed by the harness's own client on ``shell`` ("sync" or "async"; on
    ``/api/v1/chat`` with ``native``), made with ``options``. Each event goes to
    ``on_event(client, event)`` as it arrives, so what a stream that raises midway delivered
    stays delivered; returns the stream's result, or raises its error."""
    from harness.client import AsyncClient, Client

    def opened(client: Any) -> Any:
        return client.stream_native_chat(messages) if native else client.stream_chat(messages)

    if shell == "sync":
        with Client(base_url, **options) as client, opened(client) as stream:
            for event in stream:
                if on_event is not None:
                    on_event(client, event)
            return stream.result()

    async def run() -> Any:
        async with AsyncClient(base_url, **options) as client, opened(client) as stream:
            async for event in stream:
                if on_event is not None:
                    on_event(client, event)
            return await stream.result()

    return asyncio.run(run())


def response_head(content_type: str, *fields: str) -> bytes:
    """A ``200 OK`` head for ``trickling_server`` scripts: the content type, more header lines,
    and ``connection: close`` (each answer on its own connection)."""
    lines = ["HTTP/1.1 200 OK", f"content-type: {content_type}", *fields, "connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextmanager
def trickling_server(script: Callable[[socket.socket], None], *, busy_s: float = 0.0
                     ) -> Iterator[tuple[str, list[int]]]:
    """A raw loopback server answering every request with ``script``; yields (url, hits).

    The request is read whole (head and ``Content-Length`` body) before ``script`` runs: a
    socket closed with unread bytes sends a reset instead of an end of stream, and the client
    would see a lost connection where the script meant a clean end of the body. With
    ``busy_s`` the server reads nothing of a connection for that long first (a busy server:
    a large request then waits in the client's send)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    hits: list[int] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5 + busy_s)
                time.sleep(busy_s)
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    data += piece
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                left = int(length.group(1)) - len(body) if length else 0
                while left > 0:
                    piece = conn.recv(min(left, 65536))
                    if not piece:
                        return
                    left -= len(piece)
                hits.append(1)
                script(conn)
            except OSError:
                pass  # the client hung up: what the test provokes

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", hits
    finally:
        stop.set()
        listener.close()
        acceptor.join(2)


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released): connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: connects hang until they time out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(4):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # non-blocking connect: in progress
            sock.connect(("127.0.0.1", port))
        fillers.append(sock)
    try:
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()
