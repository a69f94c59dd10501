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


def run_pytest(tmp_path: Path, *args: str, probe: str | None = PROBE
               ) -> subprocess.CompletedProcess[str]:
    if probe is not None:
        (tmp_path / "test_probe.py").write_text(probe)
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
        proc = run_pytest(tmp_path, "--lmstudio-url", studio.base_url,
                          "--lmstudio-api-token", TOKEN, "--lmstudio-record",
                          "--lmstudio-cassette-dir", str(cassettes))
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
    replay = run_pytest(tmp_path, "--lmstudio-replay", "--lmstudio-cassette-dir",
                        str(cassettes), "-k", "test_client")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "1 passed" in replay.stdout
    # A cassette that was never recorded: the test fails naming it, it is not skipped.
    empty = run_pytest(tmp_path, "--lmstudio-replay", "--lmstudio-cassette-dir",
                       str(tmp_path / "none"), "-k", "test_client")
    assert empty.returncode == 1, empty.stdout + empty.stderr
    assert f"no cassette {tmp_path / 'none' / 'test_probe'}" in empty.stdout, empty.stdout


def test_via_proxy_brings_faults_and_truth_to_a_live_server(tmp_path: Path) -> None:
    with running_studio() as studio:
        proc = run_pytest(tmp_path, "--lmstudio-url", studio.base_url, "--lmstudio-via-proxy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout, proc.stdout


def test_conflicting_options_are_usage_errors(tmp_path: Path) -> None:
    both = run_pytest(tmp_path, "--lmstudio-record", "--lmstudio-replay")
    assert both.returncode == 4 and "exclude each other" in both.stderr
    proxy = run_pytest(tmp_path, "--lmstudio-via-proxy")
    assert proxy.returncode == 4 and "--lmstudio-via-proxy needs --lmstudio-url" in proxy.stderr


OTHER_PLUGIN_PROBE = '''
def test_their_base_url(base_url):
    """pytest-base-url's fixture: the web app's URL, untouched by the harness."""
    assert base_url == "http://webapp.example:8000"

def test_our_target(target, client):
    assert target.kind == "live" and target.openai_base_url == target.base_url + "/v1"
    assert client.chat([{"role": "user", "content": "hi"}], seed=1).text
'''


def test_coexists_with_pytest_base_url(tmp_path: Path) -> None:
    """pytest-base-url (installed by the dev extra, as pytest-playwright would) owns
    ``--base-url``; the harness takes ``--lmstudio-url`` and the run is not broken."""
    import pytest_base_url  # noqa: F401  (the test is about this plugin being loaded)

    (tmp_path / "test_probe.py").write_text(OTHER_PLUGIN_PROBE)
    with running_studio() as studio:
        proc = run_pytest(tmp_path, "--base-url", "http://webapp.example:8000",
                          "--lmstudio-url", studio.base_url, probe=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout
    help_text = run_pytest(tmp_path, "--help", probe=None).stdout
    assert "--lmstudio-url" in help_text and "alias of --lmstudio-url" not in help_text


def test_base_url_alias_when_no_other_plugin_owns_it(tmp_path: Path) -> None:
    with running_studio() as studio:
        proc = run_pytest(tmp_path, "-p", "no:base_url", "--base-url", studio.base_url,
                          "-k", "test_client")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout, proc.stdout


STRICT_PROBE = '''
import pytest

@pytest.mark.asyncio
async def test_aclient_in_strict_mode(aclient, target):
    r = await aclient.chat([{"role": "user", "content": "hi"}], seed=1)
    assert r.model == target.models[0]

@pytest.mark.asyncio
async def test_async_subject_in_strict_mode(subject, target):
    answer = await subject.achat([{"role": "user", "content": "hi"}], model=target.models[0])
    assert answer.text

def test_sync_subject_in_strict_mode(subject, target):
    assert subject.chat([{"role": "user", "content": "hi"}], model=target.models[0]).text
'''


def test_async_fixtures_work_under_pytest_asyncio_strict_mode(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(STRICT_PROBE)
    proc = run_pytest(tmp_path, "-o", "asyncio_mode=strict", "--lmstudio-subject", "openai",
                      "--lmstudio-subject", "harness", probe=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # aclient is harness API (runs once); the subject tests run once per subject.
    assert "5 passed" in proc.stdout, proc.stdout
