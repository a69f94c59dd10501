"""The pytest plugin, exercised the way users run it: pytest in a subprocess on a small test file,
against the emulator, a "live" server (an emulator with a token, reached by --base-url), the fault
proxy in front of it, and recorded cassettes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.studio.testing import running_studio

TOKEN = "sk-lm-plugin:V3RY-secret-token"

PROBE = '''
import threading
import pytest

def test_inert():
    """No fixture used: no emulator may be running."""
    assert not [t for t in threading.enumerate() if t.name.startswith("harness-server")]

def test_client(client, target):
    r = client.chat([{"role": "user", "content": "hi"}], seed=1)
    assert r.finish_reason in ("stop", "length") and r.model == target.models[0]

@pytest.mark.needs_faults
def test_needs_faults(target):
    pass

def test_faults_and_truth(target, faults, truth, client):
    from harness.faults import StatusFault
    from harness.client.errors import HTTPStatusError
    faults.set(StatusFault(status=418), endpoint="/v1/chat/completions")
    with pytest.raises(HTTPStatusError):
        client.chat([{"role": "user", "content": "hi"}])
    assert [r["status"] for r in truth.records("/v1/chat/completions")] == [418]
'''


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "LMSTUDIO_API_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
         "--rootdir", str(tmp_path), "-o", "asyncio_mode=auto", "-o", "addopts=",
         "-o", "asyncio_default_fixture_loop_scope=function",
         str(tmp_path / "test_probe.py"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)


def test_default_target_is_the_embedded_emulator(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout, proc.stdout


def test_live_target_skips_fault_tests_with_reason_and_records_no_token(tmp_path: Path) -> None:
    cassettes = tmp_path / "cassettes"
    with running_studio(api_token=TOKEN) as studio:
        proc = run_pytest(tmp_path, "--base-url", studio.base_url, "--api-token", TOKEN,
                          "--record", "--cassette-dir", str(cassettes))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed, 2 skipped" in proc.stdout, proc.stdout
    assert "cannot provide: faults" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
    files = list(cassettes.rglob("*.yaml"))
    assert files, "nothing recorded"
    for path in files:
        text = path.read_text()
        assert TOKEN not in text and "V3RY-secret" not in text, path
    # The server is gone: replay answers from the cassettes.
    replay = run_pytest(tmp_path, "--replay", "--cassette-dir", str(cassettes), "-k",
                        "test_client")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "1 passed" in replay.stdout


def test_via_proxy_brings_faults_and_truth_to_a_live_server(tmp_path: Path) -> None:
    with running_studio() as studio:
        proc = run_pytest(tmp_path, "--base-url", studio.base_url, "--via-proxy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout, proc.stdout


def test_conflicting_options_are_usage_errors(tmp_path: Path) -> None:
    both = run_pytest(tmp_path, "--record", "--replay")
    assert both.returncode == 4 and "exclude each other" in both.stderr
    proxy = run_pytest(tmp_path, "--via-proxy")
    assert proxy.returncode == 4 and "--via-proxy needs --base-url" in proxy.stderr
