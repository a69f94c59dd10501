from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.scripted import ScriptedServer, running


@pytest.fixture(scope="session")
def _server() -> Iterator[ScriptedServer]:
    with running(ScriptedServer()) as server:
        yield server


@pytest.fixture
def server(_server: ScriptedServer) -> ScriptedServer:
    _server.replies.clear()
    _server.seen.clear()
    return _server
