"""A tiny real HTTP server whose answers a test scripts byte by byte.

The client's unit tests need exact control over framing (split reads, CRLF, a stall after chunk 3,
a connection dropped mid-stream) that a faithful emulator should not offer by default, so they run
against this raw ASGI app on uvicorn over loopback instead.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness.studio.server import BackgroundServer

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]
MODEL = "qwen/qwen3-4b"


class Sleeps:
    """An injected sleep that records waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (delay before, bytes)
    drop: bool = False  # end the connection abruptly after the chunks (no terminating chunk)
    delay_headers: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    disconnected: bool = False
    finished: bool = False


def sse(*frames: Any, done: bool = True, delay: float = 0.0) -> Reply:
    """A streamed reply: each frame is a dict (JSON data frame) or raw bytes."""
    chunks = []
    for frame in frames:
        if not isinstance(frame, bytes):
            frame = b"data: " + json.dumps(frame).encode() + b"\n\n"
        data = frame
        chunks.append((delay, data))
    if done:
        chunks.append((delay, b"data: [DONE]\n\n"))
    return Reply(headers=[("content-type", "text/event-stream")], chunks=chunks)


def json_reply(body: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status=status, headers=[("content-type", "application/json"), *(headers or [])],
                 chunks=[(0.0, json.dumps(body).encode())])


def chunk(content: str | None = None, *, model: str = "qwen/qwen3-4b", finish: str | None = None,
          reasoning: str | None = None, tool_calls: list[dict[str, Any]] | None = None,
          usage: dict[str, int] | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return body


def completion(text: str, *, model: str = "qwen/qwen3-4b", finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "reasoning_content": "", "tool_calls": []},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


class ScriptedServer:
    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        self.port = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for ``path``; the last one repeats."""
        with self._lock:
            self.replies[path] = list(replies)

    def _next(self, path: str) -> Reply | None:
        with self._lock:
            queue = self.replies.get(path)
            if not queue:
                return None
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def hits(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = Seen(scope["method"], scope["path"],
                    {k.decode(): v.decode() for k, v in scope["headers"]}, body)
        self.seen.append(seen)
        reply = self._next(scope["path"])
        if reply is None:
            reply = json_reply({"error": f"Unexpected endpoint or method. ({scope['method']} "
                                         f"{scope['path']})"})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            seen.disconnected = True

        watcher = asyncio.create_task(watch())
        try:
            if reply.delay_headers:
                await asyncio.sleep(reply.delay_headers)
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": [(k.encode(), v.encode()) for k, v in reply.headers]})
            for delay, data in reply.chunks:
                if delay:
                    await asyncio.sleep(delay)
                if seen.disconnected:
                    return
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if reply.drop:
                raise RuntimeError("scripted connection drop")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            seen.finished = True
        finally:
            watcher.cancel()


@contextmanager
def running(app: ScriptedServer) -> Iterator[ScriptedServer]:
    """Serve ``app`` on a free loopback port with the product's own background server."""
    server = BackgroundServer(app)
    server.start()
    app.port = server.port
    try:
        yield app
    finally:
        server.stop()
