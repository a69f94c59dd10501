"""Preflight against real servers: the native listing, its fallback, and no fallback when down."""

from __future__ import annotations

import socket

import pytest

from harness.client import AsyncClient, RetryPolicy
from harness.client.errors import ConnectError
from harness.faults import ErrorBody200Fault, FaultMatch, FaultPlan, FaultRule, StatusFault
from harness.review.errors import PreflightError
from harness.review.roster import parse_roster
from harness.review.runner import preflight
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
