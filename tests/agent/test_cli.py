"""``harness agent`` end to end: real emulator, real calculator server, JSON transcript on disk."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.studio.testing import StudioHandle, running_studio
from suites.test_agent import directive
from tests.agent.helpers import FIXTURES


@pytest.fixture(scope="module")
def studio() -> Iterator[StudioHandle]:
    with running_studio() as handle:
        yield handle


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / ".mcp.json"
    path.write_text(json.dumps({"mcpServers": {
        "calc": {"command": sys.executable, "args": [str(FIXTURES / "calculator.py")]}}}))
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["agent", *args])
    return result.exit_code, result.output


def test_run_prints_rounds_and_writes_transcript(
    studio: StudioHandle, config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run.json"
    task = "sum " + directive([{"name": "calc__add", "arguments": {"a": 20, "b": 22}}])
    code, output = invoke("--mcp-config", str(config_file), "--task", task, "--model",
                          "qwen/qwen3-4b", "--base-url", studio.base_url, "--out", str(out))
    assert code == 0, output
    assert "Round 1" in output and "calc/add" in output and "42.0" in output
    assert "1 tool round(s), 2 model turn(s), 1 call(s): 1 ok, 0 failed" in " ".join(output.split())
    transcript = json.loads(out.read_text())
    assert transcript["outcome"] == "completed" and transcript["model"] == "qwen/qwen3-4b"
    assert transcript["rounds"][0]["calls"][0]["output"] == "42.0"
    assert transcript["final_text"] == "Done after 1 round(s). Tool results: 42.0"


def test_failed_run_exits_1_and_still_writes_transcript(
    studio: StudioHandle, config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "failed.json"
    task = directive([{"name": "calc__divide", "arguments": {"a": 1, "b": 0}}])
    code, output = invoke("--mcp-config", str(config_file), "--task", task, "--model",
                          "qwen/qwen3-4b", "--base-url", studio.base_url, "--out", str(out),
                          "--policy", "fail_fast")
    assert code == 1, output
    assert "Run failed" in output and "division by zero" in output
    transcript = json.loads(out.read_text())
    assert transcript["outcome"] == "failed" and "server 'calc'" in transcript["error"]
    assert transcript["rounds"][0]["calls"][0]["status"] == "tool_error"


def test_bad_input_exits_2_without_starting_anything(tmp_path: Path, config_file: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"mcpServers": {"calc": {"command": 5}}}')
    code, output = invoke("--mcp-config", str(broken), "--task", "t")
    assert code == 2 and "broken.json: mcpServers.calc.command" in output.replace("\n", "")
    code, output = invoke("--mcp-config", str(config_file), "--task", "t", "--server", "nope")
    assert code == 2 and "unknown server 'nope'" in output
    code, output = invoke("--mcp-config", str(config_file), "--task", "t", "--policy", "retry")
    assert code == 2 and "fail_fast, continue" in output
