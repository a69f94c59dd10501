"""Text from servers and models is untrusted: a lone surrogate, NUL or invalid UTF-8 from one
reviewer never crashes ``harness review`` and never costs the other reviewers their results."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.studio.app import create_app
from harness.studio.catalog import load_catalog
from harness.studio.engine import Engine, EngineOptions
from harness.studio.server import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]
ROSTER = ROOT / "fixtures" / "review" / "roster-offline.toml"
SUBJECT = ROOT / "fixtures" / "review" / "sample" / "change.diff"
VICTIM = b"qwen/qwen3-coder-30b"

ASGI = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                 Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


def _injecting(inner: ASGI, payload: bytes) -> ASGI:
    """The emulator, but every streamed text delta for VICTIM starts with ``payload`` (raw JSON
    string content, e.g. ``\\ud800``): what a broken server or tokenizer sends."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await inner(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        hit = VICTIM in body
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def forward(message: dict[str, Any]) -> None:
            if hit and message["type"] == "http.response.body":
                message = {**message, "body": message["body"].replace(
                    b'"content":"', b'"content":"' + payload)}
            await send(message)

        await inner(scope, replay, forward)

    return wrapped


@contextmanager
def _studio(payload: bytes) -> Iterator[str]:
    engine = Engine(load_catalog(), EngineOptions(auto_evict=False))
    server = BackgroundServer(_injecting(create_app(engine), payload))
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.mark.parametrize("payload", [
    b"\\ud800", b"\\udfff tail \\ud83d", b"NUL\\u0000 ESC\\u001b[2J", b"\\u202eRTL",
    b"\xff\xfe\xc3 bytes",
], ids=["lone", "mixed", "controls", "bidi", "invalid-utf8"])
def test_one_reviewer_sending_broken_text_loses_nobody(tmp_path: Path, payload: bytes) -> None:
    with _studio(payload) as base_url:
        result = CliRunner().invoke(app, [
            "review", "--subject", str(SUBJECT), "--roster", str(ROSTER), "--out",
            str(tmp_path), "--base-url", base_url, "--no-cache", "--quiet"])
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    run = json.loads((tmp_path / "review.json").read_text("utf-8"))
    statuses = {r["name"]: r["status"] for r in run["reviewers"]}
    assert len(statuses) == 6 and "error" not in statuses.values(), statuses
    for suffix in ("md", "html"):
        text = (tmp_path / f"review.{suffix}").read_text("utf-8")
        assert "\x00" not in text and "\x1b" not in text and "\u202e" not in text


def test_cache_keeps_working_with_broken_text(tmp_path: Path) -> None:
    """The response cache (on by default) keys and stores the answer of the broken reviewer."""
    with _studio(b"\\ud800") as base_url:
        args = ["review", "--subject", str(SUBJECT), "--roster", str(ROSTER), "--out",
                str(tmp_path / "o"), "--base-url", base_url, "--quiet"]
        first = CliRunner().invoke(app, args)
        second = CliRunner().invoke(app, args)
    assert first.exit_code in (0, 1) and second.exit_code == first.exit_code, second.output
