"""The worked example (examples/own_app) runs the way its README says: its own tests with its own
project file, through ``harness evaluate --suites``, and its client judged by the suites as a
subject (``supportbot.subject:create``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.evaluate.runner import EvaluationOptions, run_suites

APP = Path(__file__).resolve().parents[2] / "examples" / "own_app"


def test_the_apps_own_tests_pass_with_its_own_config() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LMSTUDIO_API_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=APP, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "7 passed" in proc.stdout, proc.stdout


def test_harness_evaluate_runs_the_apps_suites() -> None:
    report, code = run_suites(EvaluationOptions(suites=APP / "tests"))
    assert code == 0 and report.verdict == "PASS", report.problems
    names = {t.name for t in report.other_tests}
    assert "test_a_cut_off_stream_is_not_an_answer" in names and len(names) == 7


def test_the_suites_judge_the_apps_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bot checks the finish reason and the model, so it passes those gaps; through the
    SDK it cannot see whether ``[DONE]`` arrived, and the suites say so."""
    monkeypatch.chdir(APP)  # where a user runs it: supportbot is importable from here
    subject = "supportbot.subject:create"
    report, _ = run_suites(EvaluationOptions(
        subjects=(subject,),
        select="test_broken_stream_is_never or test_streamed_answer_from_another_model"))
    assert not report.problems, report.problems
    cells = {row.marker: {c.subject: c for c in row.cells} for row in report.matrix}
    streaming = {e.test: e.outcome for e in cells["streaming"][subject].evidence}
    assert streaming.pop("test_broken_stream_is_never_a_complete_answer[missing-done]") == \
        "failed"
    assert set(streaming.values()) == {"passed"}, streaming
    assert cells["switching"][subject].status == "PASS"
