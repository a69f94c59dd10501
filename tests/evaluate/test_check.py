"""``harness check`` against the emulator (open, token-protected) and a closed port."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from harness.check import run_probes
from harness.cli import app
from harness.studio.testing import running_studio

TOKEN = "sk-lm-check:D0CT0R-secret"


def test_check_passes_against_the_emulator() -> None:
    with running_studio() as studio:
        report = run_probes(studio.base_url, timeout=5)
        result = CliRunner().invoke(app, ["check", "--base-url", studio.base_url])
    assert report.ok, report.probes
    names = [p.name for p in report.probes]
    assert names[:2] == ["reachable", "auth"] and "stream" in names and "models" in names
    assert any("/api/v0/models" in n for n in names) and any("/api/v1/models" in n for n in names)
    stream = next(p for p in report.probes if p.name == "stream")
    assert "first token" in stream.detail and "finish_reason=" in stream.detail
    assert result.exit_code == 0, result.output
    assert "qwen/qwen3-4b" in result.output and "OK" in result.output


def test_check_reports_auth_state_without_leaking_the_token() -> None:
    with running_studio(api_token=TOKEN) as studio:
        missing = CliRunner().invoke(app, ["check", "--base-url", studio.base_url],
                                     env={"LMSTUDIO_API_TOKEN": ""})
        wrong = CliRunner().invoke(app, ["check", "--base-url", studio.base_url],
                                   env={"LMSTUDIO_API_TOKEN": TOKEN + "x"})
        right = CliRunner().invoke(app, ["check", "--base-url", studio.base_url],
                                   env={"LMSTUDIO_API_TOKEN": TOKEN})
    assert missing.exit_code == 1 and "requires an API token" in missing.output
    assert wrong.exit_code == 1 and "token refused" in wrong.output
    assert right.exit_code == 0, right.output
    assert "token required and accepted" in right.output
    for result in (missing, wrong, right):
        assert "D0CT0R" not in result.output


def test_check_fails_on_a_closed_port_and_an_unknown_model() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = CliRunner().invoke(app, ["check", "--base-url", f"http://127.0.0.1:{port}"])
    assert closed.exit_code == 1
    assert f"127.0.0.1:{port}" in closed.output and "refused" in closed.output.lower()
    [reachable] = run_probes(f"http://127.0.0.1:{port}", timeout=5).probes
    assert reachable.name == "reachable" and reachable.status == "fail"
    # The client core's typed one-line error, not httpx's raw message.
    assert reachable.detail.startswith(f"GET http://127.0.0.1:{port}/v1/models (model=-, "
                                       "attempt 1/1"), reachable.detail
    assert f"connection refused by 127.0.0.1:{port}" in reachable.detail
    with running_studio() as studio:
        report = run_probes(studio.base_url, model="acme/none", timeout=5)
    assert not report.ok and "acme/none" in report.probes[-1].detail
