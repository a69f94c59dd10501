"""Helpers shared by the suites: prompts whose answers prove which request they belong to.

They live in the package so the suites, which a wheel carries as ``harness.suites``, import them
the same way in a checkout and in an installation."""

from __future__ import annotations

import os
from typing import Any

import pytest

from harness.capabilities import PROBE_TOOL
from harness.evaluate.target import Target

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
