"""The shared ``/_harness/`` client: real control on the emulator, none on LM Studio's shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.control import ControlClient, ControlError
from harness.faults import FaultPlan
from harness.studio.testing import running_studio
from tests.client.scripted import Reply, ScriptedServer, json_reply, running

TOKEN = "sk-lm-abcdefgh:verysecret"


@pytest.fixture(scope="module")
def lmstudio_like() -> Iterator[ScriptedServer]:
    with running(ScriptedServer()) as server:  # unknown paths: 200 {"error": "Unexpected ..."}
        yield server


def test_no_control_on_a_server_without_it(lmstudio_like: ScriptedServer) -> None:
    control = ControlClient(lmstudio_like.url, api_token=TOKEN)
    assert control.available() is False
    with pytest.raises(ControlError, match="no 'records' list"):
        control.truth()
    assert lmstudio_like.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"
    lmstudio_like.script("/_harness/state", Reply(status=200, chunks=[(0, b"<html>")]))
    with pytest.raises(ControlError, match="not JSON") as info:
        control.state()
    lmstudio_like.script("/_harness/reset", json_reply({"error": TOKEN}, 500))
    with pytest.raises(ControlError) as info:
        control.reset()
    assert "verysecret" not in str(info.value) and "HTTP 500" in str(info.value)


def test_faults_and_truth_on_the_emulator() -> None:
    with running_studio() as studio:
        control = ControlClient(studio.base_url)
        assert control.available()
        control.set_faults(FaultPlan.model_validate({"rules": [{"action": {"kind": "status"}}]}))
        assert control.fault_stats()
        control.clear_faults()
        assert control.truth() == [] and isinstance(control.state(), dict)
        control.close()
