"""``harness evaluate``: in-process runs of the suites (a selection, to stay fast), a failing gap,
missing suites, and where the suites are found."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from harness.cli import app
from harness.evaluate.runner import EvaluationError, locate_suites

FAST = "test_error_tree_aligns_with_python_exceptions or test_hit_within_ttl_and_refresh_after_it"

FAILING_SUITE = '''
import pytest

@pytest.mark.streaming
def test_stream_gap_is_broken():
    """Gap: streaming. Fails on purpose."""
    assert 1 == 2, "stream came back truncated"

@pytest.mark.cache
def test_cache_gap_holds(target):
    """Gap: cache. Passes and touches the target."""
    assert target.kind == "emulator"
'''


def test_evaluate_selection_writes_reports_and_exits_zero(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--out", str(tmp_path), "-k", FAST])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "evaluation.json").read_text())
    status = {g["marker"]: g["status"] for g in data["gaps"]}
    assert status["errors"] == "PASS" and status["cache"] == "PASS"
    assert status["streaming"] == "SKIP"  # deselected: nothing proved, not a pass
    assert data["target"]["kind"] == "emulator" and data["target"]["models"]
    [test] = [t for g in data["gaps"] if g["marker"] == "cache" for t in g["tests"]]
    assert test["doc"].startswith("Gap: model cache expiration") and test["evidence"]
    assert (tmp_path / "evaluation.md").read_text().startswith("# LM Studio Harness evaluation")
    assert "<!DOCTYPE html>" in (tmp_path / "evaluation.html").read_text()


def test_failing_gap_exits_non_zero(tmp_path: Path) -> None:
    # Not named "suites": this process already imported the repo's ``suites.test_streaming``.
    suites = tmp_path / "broken_suites"
    suites.mkdir()
    (suites / "test_streaming.py").write_text(FAILING_SUITE)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate", "--suites", str(suites), "--out", str(out)])
    assert result.exit_code == 1, result.output
    data = json.loads((out / "evaluation.json").read_text())
    status = {g["marker"]: g["status"] for g in data["gaps"]}
    assert status["streaming"] == "FAIL" and status["cache"] == "PASS"
    [failed] = [t for g in data["gaps"] if g["marker"] == "streaming" for t in g["tests"]]
    assert "stream came back truncated" in failed["message"]
    assert "test_stream_gap_is_broken" in result.output


def test_missing_suites_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--suites", str(tmp_path / "none"),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "suites not found" in result.output


def test_suites_are_found_next_to_the_package() -> None:
    found = locate_suites()
    assert (found / "test_streaming.py").is_file() and found.name == "suites"
    try:
        locate_suites(Path("/nonexistent"))
    except EvaluationError as exc:
        assert "--suites" in str(exc)
    else:
        raise AssertionError("a missing suites directory must raise")


def test_bad_subject_stops_the_evaluation_in_one_line(tmp_path: Path) -> None:
    for args, message in ((["--subject", "nosuch"], "unknown subject 'nosuch'"),
                          (["--subject", "no_such_module_qq:make"],
                           "cannot import no_such_module_qq"),
                          (["--subject", "openai", "--subject", "openai"], "named twice")):
        result = CliRunner().invoke(app, ["evaluate", "--out", str(tmp_path), *args])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())  # rich wraps long lines
        assert message in text and "Traceback" not in text, result.output
    assert not (tmp_path / "evaluation.json").exists()
