"""Secrets never leave (registry redaction, one env name, --api-token-file) and control surfaces
are closed (token on /_harness/, fault header only with control, bounded fault durations)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from harness import secrets
from harness.cli import app, review_app
from harness.client import Client, RetryPolicy
from harness.client.errors import LMStudioError
from harness.inputs import InputError
from harness.proxy import create_proxy_app
from harness.studio.app import create_app
from harness.studio.catalog import load_catalog
from harness.studio.engine import Engine, EngineOptions
from harness.studio.server import BackgroundServer, free_port
from harness.studio.testing import running_studio
from tests.client.scripted import ScriptedServer, json_reply, running

# A token of no recognisable shape: only the registry can know it is a secret.
ODD_TOKEN = "plainword7Zq"


# --- where the token comes from ---------------------------------------------------------------

def test_token_precedence_and_aliases(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  from-file-token \n second line ignored\n")
    env = {"HARNESS_API_TOKEN": "harness-env", "LM_API_TOKEN": "lm-env"}
    assert secrets.resolve_token("given-arg", None, env=env) == "given-arg"
    assert secrets.resolve_token(None, token_file, env=env) == "from-file-token"
    assert secrets.resolve_token(None, None, env=env) == "harness-env"
    assert secrets.resolve_token(None, None, env={"LM_API_TOKEN": "lm-env"}) == "lm-env"
    assert secrets.resolve_token(None, None, env={"LMSTUDIO_API_TOKEN": "old-env"}) == "old-env"
    assert secrets.resolve_token(None, None, env={"HARNESS_API_TOKEN": ""}) is None
    for bad in ("", "   ", "tab\there", "nul\x00x", "naïve-token"):
        with pytest.raises(InputError):
            secrets.resolve_token(bad, None, env={})


def test_registered_token_is_redacted_whatever_its_shape() -> None:
    secrets.register(ODD_TOKEN)
    text = f"server said: unknown key {ODD_TOKEN} at http://user:pw@host:1/x, Bearer abc"
    assert secrets.redact(text) == ("server said: unknown key *** at http://***@host:1/x, "
                                    "Bearer ***")


@pytest.fixture()
def echoing() -> Iterator[ScriptedServer]:
    """A server that echoes the caller's token in its error body (some gateways do)."""
    with running(ScriptedServer()) as server:
        server.script("/v1/chat/completions", json_reply(
            {"error": {"message": f"key {ODD_TOKEN} is not allowed here"}}, status=403))
        server.script("/v1/models", json_reply(
            {"error": f"token {ODD_TOKEN} refused"}, status=401))
        yield server


def test_client_errors_never_carry_the_configured_token(echoing: ScriptedServer) -> None:
    with Client(echoing.url, model="m", api_token=ODD_TOKEN, retry=RetryPolicy.none()) as client:
        with pytest.raises(LMStudioError) as info:
            client.chat([{"role": "user", "content": "hi"}])
    assert ODD_TOKEN not in str(info.value) and ODD_TOKEN not in repr(info.value.__dict__)
    assert echoing.seen[-1].headers["authorization"] == f"Bearer {ODD_TOKEN}"


def test_check_with_token_file_never_prints_it(echoing: ScriptedServer, tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text(ODD_TOKEN + "\n")
    result = CliRunner().invoke(app, ["check", "--base-url", echoing.url, "--api-token-file",
                                      str(token_file), "--timeout", "5"])
    assert result.exit_code == 1 and ODD_TOKEN not in result.output, result.output
    assert any(s.headers.get("authorization") == f"Bearer {ODD_TOKEN}" for s in echoing.seen)


def test_typer_never_shows_locals() -> None:
    assert app.pretty_exceptions_show_locals is False
    assert review_app.pretty_exceptions_show_locals is False


# --- control surfaces -------------------------------------------------------------------------

TOKEN = "sk-lm-hardening:controlsecret"


def test_control_requires_the_token_when_one_is_set() -> None:
    with running_studio(api_token=TOKEN, control=True) as studio:
        base = studio.base_url
        for method, path in (("GET", "/_harness/truth"), ("GET", "/_harness/state"),
                             ("GET", "/_harness/faults"), ("POST", "/_harness/reset"),
                             ("GET", "/_harness/counters"), ("DELETE", "/_harness/faults")):
            refused = httpx.request(method, base + path)
            wrong = httpx.request(method, base + path, headers={"Authorization": "Bearer nope"})
            allowed = httpx.request(method, base + path,
                                    headers={"Authorization": f"Bearer {TOKEN}"})
            assert (refused.status_code, wrong.status_code, allowed.status_code) == (
                401, 401, 200), path
            assert TOKEN not in refused.text


FAULT = json.dumps({"kind": "status", "status": 503})
CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4}


@pytest.mark.parametrize("control", [False, True])
def test_fault_header_only_with_control(control: bool) -> None:
    with running_studio(control=control) as studio:
        answer = httpx.post(studio.base_url + "/v1/chat/completions", json=CHAT,
                            headers={"X-Harness-Fault": FAULT}, timeout=30)
    assert answer.status_code == (503 if control else 200)


@pytest.mark.parametrize("action", [
    {"kind": "stall", "seconds": 1e300}, {"kind": "latency", "before_headers_s": 601},
    {"kind": "status", "delay_s": float("inf")},
])
def test_fault_durations_are_bounded(action: dict[str, object]) -> None:
    with running_studio(control=True) as studio:
        started = time.monotonic()
        answer = httpx.post(studio.base_url + "/v1/chat/completions", json=CHAT,
                            headers={"X-Harness-Fault": json.dumps(action)}, timeout=30)
        assert time.monotonic() - started < 10
        assert answer.status_code == 400, answer.text
        plan = {"rules": [{"action": action}]}
        put = httpx.put(studio.base_url + "/_harness/faults", content=json.dumps(plan))
        assert put.status_code == 400


def _proxy(upstream: str, **options: object) -> BackgroundServer:
    server = BackgroundServer(create_proxy_app(upstream, **options))  # type: ignore[arg-type]
    server.start()
    return server


def test_proxy_control_and_fault_header_need_control() -> None:
    engine = Engine(load_catalog(), EngineOptions())
    upstream = BackgroundServer(create_app(engine))
    upstream.start()
    closed = _proxy(upstream.base_url, control=False)
    guarded = _proxy(upstream.base_url, control=True, api_token=TOKEN)
    try:
        # control off: /_harness/ is just forwarded (LM Studio's 200 "Unexpected endpoint")
        assert "Unexpected endpoint" in httpx.get(closed.base_url + "/_harness/truth").text
        ok = httpx.post(closed.base_url + "/v1/chat/completions", json=CHAT,
                        headers={"X-Harness-Fault": FAULT}, timeout=30)
        assert ok.status_code == 200
        assert httpx.get(guarded.base_url + "/_harness/truth").status_code == 401
        assert httpx.get(guarded.base_url + "/_harness/truth",
                         headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        closed.stop()
        guarded.stop()
        upstream.stop()


def test_proxy_refuses_upstream_credentials_and_redacts_its_502() -> None:
    with pytest.raises(ValueError, match="credentials"):
        create_proxy_app("http://user:pw@127.0.0.1:9")
    secrets.register(ODD_TOKEN)
    dead = f"http://127.0.0.1:{free_port()}"
    server = _proxy(dead, control=False)
    try:
        answer = httpx.post(server.base_url + f"/v1/chat/{ODD_TOKEN}", json=CHAT, timeout=30)
    finally:
        server.stop()
    assert answer.status_code == 502 and ODD_TOKEN not in answer.text


def test_non_loopback_bind_warns_naming_what_is_exposed() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
         "--control", "--api-token", TOKEN], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert process.stderr is not None
        warning = process.stderr.readline()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "warning: --host 0.0.0.0 exposes the emulator's API and /_harness/" in warning
    assert TOKEN not in warning


def test_reports_never_carry_a_registered_token(tmp_path: Path) -> None:
    """A model or server that echoes the token into its text: every report file drops it."""
    from harness.evaluate.report import TargetInfo, TestEvidence, build_report, write_evaluation

    secrets.register(ODD_TOKEN)
    echoed = f"the server says your key is {ODD_TOKEN}"
    report = build_report([TestEvidence(nodeid="suites/x.py::t", name="t", gap="streaming",
                                        outcome="failed", duration_s=0.1, message=echoed)],
                          TargetInfo(kind="live", base_url="http://h:1", server=echoed),
                          duration_s=1)
    for path in write_evaluation(report, tmp_path).values():
        body = path.read_text("utf-8")
        assert ODD_TOKEN not in body and "your key is ***" in body, path.name
