"""Preflight against real servers (the native listing, its fallback, none when down); the cache."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from harness.client import AsyncClient, RetryPolicy
from harness.client.errors import ConnectError
from harness.faults import ErrorBody200Fault, FaultMatch, FaultPlan, FaultRule, StatusFault
from harness.review.errors import PreflightError, ReviewInputError
from harness.review.roster import parse_roster
from harness.review.runner import ResponseCache, preflight
from harness.studio.testing import running_studio

ROSTER = parse_roster('[[reviewers]]\nname = "A"\nmodel = "qwen/qwen3-4b"\nfocus = "all"\n')


def _old_server(action: StatusFault | ErrorBody200Fault) -> FaultPlan:
    """A server before 0.4: no /api/v1, answered with a 404 or LM Studio's 200-with-error."""
    return FaultPlan(rules=(FaultRule(match=FaultMatch(endpoint="/api/v1/models"), action=action),))


@pytest.mark.parametrize(
    "action", [StatusFault(status=404), ErrorBody200Fault(message="Unexpected endpoint or method.")]
)
async def test_servers_without_the_native_listing_fall_back_to_v1_models(
    action: StatusFault | ErrorBody200Fault,
) -> None:
    with running_studio(faults=_old_server(action)) as studio:
        async with AsyncClient(studio.base_url, retry=RetryPolicy.none()) as client:
            found = await preflight(client, ROSTER)
    assert found["qwen/qwen3-4b"].id == "qwen/qwen3-4b"


async def test_missing_model_lists_what_is_available() -> None:
    roster = parse_roster('[[reviewers]]\nname = "A"\nmodel = "nope/none"\nfocus = "all"\n')
    with running_studio() as studio:
        async with AsyncClient(studio.base_url, retry=RetryPolicy.none()) as client:
            with pytest.raises(PreflightError) as caught:
                await preflight(client, roster)
    assert caught.value.missing == ["nope/none"] and "qwen/qwen3-4b" in caught.value.available


async def test_an_unreachable_server_is_not_asked_twice() -> None:
    """Only an old server's answer triggers the fallback; a refused connection is reported as is
    (naming the native listing), not retried through a second endpoint."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncClient(f"http://127.0.0.1:{port}", retry=RetryPolicy.none()) as client:
        with pytest.raises(ConnectError, match=rf"GET http://127\.0\.0\.1:{port}/api/v1/models"):
            await preflight(client, ROSTER)


def test_response_cache_round_trips_and_names_a_broken_entry(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")
    key = ResponseCache.key("m", [{"role": "user", "content": "hi"}], {"seed": 7})
    answer = {
        "text": "{}", "reasoning": "", "finish_reason": "stop", "model": "m",
        "prompt_tokens": 3, "completion_tokens": 1, "latency_s": 0.1, "generation_s": None,
    }  # fmt: skip
    assert cache.get(key) is None
    cache.put(key, answer)
    assert cache.get(key) == answer
    assert [p.name for p in cache.directory.iterdir()] == [f"{key}.json"]  # no leftovers
    entry = cache.directory / f"{key}.json"
    entry.write_text('{"text": "half', encoding="utf-8")  # what an interrupted write leaves
    with pytest.raises(ReviewInputError, match=rf"{key}\.json is unreadable.*--no-cache"):
        cache.get(key)
    entry.write_text('{"unrelated": 1}', encoding="utf-8")
    with pytest.raises(ReviewInputError, match="is not a cached answer"):
        cache.get(key)
