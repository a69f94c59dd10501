"""Suites recorded on a real llama.cpp engine and replayed with the engine stopped.

The proof that a replay is the recording: the same test ids with the same outcomes, passes and
skips alike. A test that skipped while recording (the engine lacks faults, truth, load/unload,
reasoning models...) has no cassette and must skip again with the recorded reason, not fail on
a missing cassette; a test that ran must replay against the target it was recorded with (the
engine's capabilities, model listing and calibration), never the emulator's.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from harness.engines.llamacpp import LlamaCppServer

ROOT = Path(__file__).resolve().parents[2]
SUITES = ("suites/test_streaming.py", "suites/test_errors.py", "suites/test_cache_expiry.py")


def outcomes(junit: Path) -> dict[str, str]:
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        result[f"{case.get('classname')}::{case.get('name')}"] = kinds[0] if kinds else "passed"
    return result


def run_suites(tmp_path: Path, name: str, *args: str) -> tuple[dict[str, str], str]:
    junit = tmp_path / f"{name}.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-n", "0",
         *SUITES, "--lmstudio-cassette-dir", str(tmp_path / "cassettes"),
         f"--junitxml={junit}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return outcomes(junit), proc.stdout


def test_suites_recorded_on_the_engine_replay_alike_with_the_engine_stopped(
        private_engine: Callable[..., AbstractContextManager[LlamaCppServer]],
        tmp_path: Path) -> None:
    with private_engine(interrupt_requests=False) as server:
        recorded, _ = run_suites(tmp_path, "record", "--lmstudio-url", server.base_url,
                                 "--lmstudio-record")
    assert not server.running()
    replayed, out = run_suites(tmp_path, "replay", "--lmstudio-replay")
    assert replayed == recorded
    counts = {kind: list(recorded.values()).count(kind) for kind in ("passed", "skipped")}
    assert counts["passed"] >= 5 and counts["skipped"] >= 5, counts
    assert "skipped when recorded against OpenAI-compatible server (live)" in out, out
    assert "no cassette" not in out
