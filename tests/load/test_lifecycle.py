"""A run's life and death with real processes: signals, a server that dies, a token-protected
server. Every process the run started must be gone at the end, and the outputs of what ran must
be written, whatever ended the run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.load.emulator import EmulatorProcess
from harness.load.runner import LoadOptions, run_load
from harness.load.server import TargetUnreachable

from .conftest import TEST_SPEED

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "load"


def _harness_load(out: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "load", "--scenario", str(FIXTURES / "smoke.toml"),
         "--out", str(out), "--duration", "20", *args],  # a 40 s plan, interrupted long before
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for_records(out: Path, proc: subprocess.Popen[bytes], timeout: float = 40) -> None:
    records = out / "requests.jsonl"
    deadline = time.time() + timeout
    while not (records.exists() and records.stat().st_size > 200):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
        assert time.time() < deadline, "no records within the timeout"
        time.sleep(0.1)


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _gone(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_process_and_writes_what_ran_marked_interrupted(
        tmp_path: Path, signum: int) -> None:
    proc = _harness_load(tmp_path, "--emulator", "--workers", "2")
    try:
        _wait_for_records(tmp_path, proc)
        children = _descendants(proc.pid)
        commands = [" ".join(c.cmdline()) for c in children]
        assert sum(" --master " in c for c in commands) == 1, commands
        assert sum(" --worker " in c for c in commands) == 2, commands
        assert sum(" serve " in c for c in commands) == 1, commands  # the emulator
        started = time.time()
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
        took = time.time() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + signum
    assert took < 35  # long before the 40 s plan would have ended
    psutil.wait_procs(children, timeout=5)
    assert _gone(children) == []  # no master, worker or emulator left behind
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "interrupted" and summary["exit_code"] == 128 + signum
    assert any(r.startswith("interrupted: " + signal.Signals(signum).name)
               for r in summary["reasons"]), summary["reasons"]
    assert summary["records_total"] > 0 and summary["ran_s"] < 40
    assert "INTERRUPTED" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_server_that_dies_mid_run_ends_it_early_as_a_target_error(tmp_path: Path) -> None:
    emulator = EmulatorProcess(TEST_SPEED)
    url = emulator.start()
    proc = _harness_load(tmp_path, "--base-url", url, "--workers", "1")
    try:
        _wait_for_records(tmp_path, proc)
        emulator.stop()  # the server is gone: every request is refused from now on
        started = time.time()
        code = proc.wait(timeout=60)
        took = time.time() - started
    finally:
        emulator.stop()
        if proc.poll() is None:
            proc.kill()
    assert code == 4
    assert took < 30  # not the rest of a 40 s plan at a thousand refused requests a second
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "target-error"
    assert summary["reasons"][0].startswith("target error: "), summary["reasons"]
    assert "got no answer from the server" in summary["reasons"][0]
    rows = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    refused = sum(not r["ok"] for r in rows)
    assert 20 <= refused < 2000, refused  # a short streak, then stop


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_precheck_and_every_request_send_the_token(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    token = "load-test-secret-7f3a"
    with EmulatorProcess(TEST_SPEED, api_token=token) as emulator:
        options = LoadOptions(scenario_path=FIXTURES / "smoke.toml", base_url=emulator.url,
                              out_dir=tmp_path / "without", workers=1)
        for name in ("HARNESS_API_TOKEN", "LM_API_TOKEN", "LMSTUDIO_API_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(TargetUnreachable, match="HTTP 401"):
            run_load(options)
        monkeypatch.setenv("HARNESS_API_TOKEN", token)
        out = tmp_path / "with"
        _, summary = run_load(LoadOptions(scenario_path=FIXTURES / "smoke.toml",
                                          base_url=emulator.url, out_dir=out, workers=1))
    assert summary["verdict"] in ("pass", "invalid"), summary["reasons"]
    assert all(lv["errors"] == 0 and lv["requests"] > 0 for lv in summary["levels"])
    assert summary["truth"]["paired"] > 0  # control endpoints reached with the token too
    for path in out.rglob("*"):
        if path.is_file():
            assert token not in path.read_text("utf-8", "replace"), path

