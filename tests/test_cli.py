"""Every user mistake on the command line: one line on stderr, exit 2, no traceback, nothing run.

One row per bad input (>= 50), run in-process through typer's CliRunner (fast; the same click
entry point as the installed ``harness`` script); a few rows also run as real subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.inputs import EXIT_USAGE

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "fixtures" / "load" / "smoke.toml")
DIFF = str(ROOT / "fixtures" / "review" / "sample" / "change.diff")
LONG_HOST = "a" * 5000
NOT_UTF8 = b"title = \"\xff\xfe\xc3\"\n"


def _files(tmp: Path) -> dict[str, str]:
    """The bad (and a few good) files the rows name as ``@name``."""
    def put(name: str, data: bytes | str) -> str:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    deep = "[" * 100_000 + "]" * 100_000
    return {
        "not_utf8.toml": put("not_utf8.toml", NOT_UTF8),
        "not_utf8.json": put("not_utf8.json", b'{"a": "\xff"}'),
        "not_utf8.diff": put("not_utf8.diff", b"--- a\n+++ b\n\xff\xfe\n"),
        "not_json.json": put("not_json.json", "{not json"),
        "bad.toml": put("bad.toml", "rules = [ ="),
        "deep.json": put("deep.json", deep),
        "deep_mcp.json": put("deep_mcp.json", '{"mcpServers": ' + deep + "}"),
        "shape.json": put("shape.json", '{"models": 3}'),
        "stall_plan.json": put("stall_plan.json", json.dumps(
            {"rules": [{"action": {"kind": "stall", "seconds": 1e300}}]})),
        "empty_token": put("empty_token", "\n\n"),
        "token": put("token", "sk-lm-abc:def\n"),
        "mcp.json": put("mcp.json", json.dumps({"mcpServers": {"calc": {
            "command": sys.executable, "args": [str(ROOT / "fixtures/mcp/calculator.py")]}}})),
        "levels_inf.toml": put("levels_inf.toml", (ROOT / "fixtures/load/smoke.toml").read_text()
                               .replace("levels = [2, 4]", "levels = [inf]")),
        "levels_nan.toml": put("levels_nan.toml", (ROOT / "fixtures/load/smoke.toml").read_text()
                               .replace("levels = [2, 4]", "levels = [nan]")),
        "panel/panel.toml": put("panel/panel.toml", NOT_UTF8),
        "a_file": put("a_file", "x"),
        "dir": str(tmp),
        "missing": str(tmp / "missing.file"),
    }


ROWS: list[tuple[str, list[str], str]] = [
    # serve
    ("serve-port-high", ["serve", "--port", "99999"], "--port"),
    ("serve-port-zero", ["serve", "--port", "0"], "--port"),
    ("serve-port-negative", ["serve", "--port", "-1"], "--port"),
    ("serve-port-text", ["serve", "--port", "abc"], "--port"),
    ("serve-parallel-zero", ["serve", "--parallel", "0"], "--parallel"),
    ("serve-parallel-negative", ["serve", "--parallel", "-3"], "--parallel"),
    ("serve-preload-unknown", ["serve", "--preload", "unknown/model"], "--preload"),
    ("serve-catalog-missing", ["serve", "--catalog", "@missing"], "catalog"),
    ("serve-catalog-directory", ["serve", "--catalog", "@dir"], "catalog"),
    ("serve-catalog-not-json", ["serve", "--catalog", "@not_json.json"], "not JSON"),
    ("serve-catalog-not-utf8", ["serve", "--catalog", "@not_utf8.json"], "UTF-8"),
    ("serve-catalog-deep", ["serve", "--catalog", "@deep.json"], "catalog"),
    ("serve-catalog-shape", ["serve", "--catalog", "@shape.json"], "catalog"),
    ("serve-faults-missing", ["serve", "--faults", "@missing"], "fault plan"),
    ("serve-faults-bad-toml", ["serve", "--faults", "@bad.toml"], "fault plan"),
    ("serve-faults-not-utf8", ["serve", "--faults", "@not_utf8.toml"], "UTF-8"),
    ("serve-faults-unbounded", ["serve", "--faults", "@stall_plan.json"], "fault plan"),
    ("serve-token-empty", ["serve", "--api-token", ""], "empty"),
    ("serve-token-space", ["serve", "--api-token", "a b c d"], "whitespace"),
    ("serve-token-short", ["serve", "--api-token", "ab"], "shorter"),
    ("serve-token-file-missing", ["serve", "--api-token-file", "@missing"], "token file"),
    ("serve-token-file-empty", ["serve", "--api-token-file", "@empty_token"], "empty"),
    ("serve-token-both", ["serve", "--api-token", "abcd", "--api-token-file", "@token"],
     "not both"),
    ("serve-host-empty", ["serve", "--host", ""], "--host"),
    ("serve-host-long", ["serve", "--host", LONG_HOST], "--host"),
    ("serve-evict-mode", ["serve", "--evict-mode", "nope"], "--evict-mode"),
    ("serve-cutoff-style", ["serve", "--cutoff-style", "sometimes"], "--cutoff-style"),
    ("serve-unknown-option", ["serve", "--no-such-option"], "no-such-option"),
    # proxy
    ("proxy-no-upstream", ["proxy"], "--upstream"),
    ("proxy-upstream-empty", ["proxy", "--upstream", ""], "--upstream"),
    ("proxy-upstream-scheme", ["proxy", "--upstream", "ftp://host"], "http://"),
    ("proxy-upstream-userinfo", ["proxy", "--upstream", "http://user:pw@h:1"], "credentials"),
    ("proxy-upstream-bracket", ["proxy", "--upstream", "http://[::1"], "--upstream"),
    ("proxy-port", ["proxy", "--upstream", "http://h:1", "--port", "70000"], "--port"),
    ("proxy-faults-missing", ["proxy", "--upstream", "http://h:1", "--faults", "@missing"],
     "fault plan"),
    ("proxy-faults-not-utf8", ["proxy", "--upstream", "http://h:1", "--faults",
                               "@not_utf8.toml"], "UTF-8"),
    # check
    ("check-bracket", ["check", "--base-url", "http://[::1"], "--base-url"),
    ("check-empty-url", ["check", "--base-url", ""], "--base-url"),
    ("check-long-host", ["check", "--base-url", f"http://{LONG_HOST}:1234"], "host"),
    ("check-timeout-nan", ["check", "--timeout", "nan"], "--timeout"),
    ("check-timeout-inf", ["check", "--timeout", "inf"], "--timeout"),
    ("check-timeout-negative", ["check", "--timeout", "-1"], "--timeout"),
    ("check-userinfo", ["check", "--base-url", "http://u:secretpw@localhost:1234"],
     "credentials"),
    ("check-no-scheme", ["check", "--base-url", "localhost:1234"], "http://"),
    ("check-port-range", ["check", "--base-url", "http://localhost:99999"], "--base-url"),
    ("check-token-empty", ["check", "--api-token", ""], "empty"),
    # evaluate
    ("evaluate-empty-url", ["evaluate", "--base-url", ""], "--base-url"),
    ("evaluate-bracket", ["evaluate", "--base-url", "http://[::1"], "--base-url"),
    ("evaluate-via-proxy-alone", ["evaluate", "--via-proxy"], "--base-url"),
    ("evaluate-out-under-file", ["evaluate", "--out", "@a_file/sub"], "is a file"),
    ("evaluate-token-empty", ["evaluate", "--api-token", ""], "empty"),
    # review
    ("review-subject-not-utf8", ["review", "--subject", "@not_utf8.diff"], "UTF-8"),
    ("review-roster-not-utf8", ["review", "--subject", DIFF, "--roster", "@not_utf8.toml"],
     "UTF-8"),
    ("review-roster-missing", ["review", "--subject", DIFF, "--roster", "@missing"], "roster"),
    ("review-bracket", ["review", "--subject", DIFF, "--base-url", "http://[::1"], "--base-url"),
    ("review-out-under-file", ["review", "--subject", DIFF, "--out", "@a_file/sub"],
     "is a file"),
    ("review-no-subject", ["review"], "--subject"),
    ("review-render-panel-not-utf8", ["review", "render", "@dir/panel"], "panel"),
    ("review-render-missing", ["review", "render", "@missing"], "missing"),
    ("review-render-out-under-file", ["review", "render", "@dir/panel", "--out", "@a_file/x"],
     "is a file"),
    # load
    ("load-scenario-missing", ["load", "--scenario", "@missing"], "scenario"),
    ("load-scenario-not-utf8", ["load", "--scenario", "@not_utf8.toml"], "UTF-8"),
    ("load-levels-inf", ["load", "--scenario", "@levels_inf.toml"], "levels"),
    ("load-levels-nan", ["load", "--scenario", "@levels_nan.toml"], "levels"),
    ("load-bracket", ["load", "--scenario", SMOKE, "--base-url", "http://[::1"], "--base-url"),
    ("load-no-workers", ["load", "--scenario", SMOKE, "--workers", "0"], "worker"),
    ("load-users-zero", ["load", "--scenario", SMOKE, "--users", "0"], "--users"),
    ("load-duration-nan", ["load", "--scenario", SMOKE, "--duration", "nan"], "--duration"),
    ("load-master-port", ["load", "--scenario", SMOKE, "--master-port", "70000"],
     "--master-port"),
    ("load-out-under-file", ["load", "--scenario", SMOKE, "--out", "@a_file/o"], "is a file"),
    # agent
    ("agent-config-missing", ["agent", "--mcp-config", "@missing", "--task", "t"],
     "MCP config"),
    ("agent-config-not-utf8", ["agent", "--mcp-config", "@not_utf8.json", "--task", "t"],
     "UTF-8"),
    ("agent-config-deep", ["agent", "--mcp-config", "@deep_mcp.json", "--task", "t"], "error"),
    ("agent-config-not-json", ["agent", "--mcp-config", "@not_json.json", "--task", "t"],
     "not_json.json"),
    ("agent-bracket", ["agent", "--mcp-config", "@mcp.json", "--task", "t", "--base-url",
                       "http://[::1"], "--base-url"),
    ("agent-call-timeout-nan", ["agent", "--mcp-config", "@mcp.json", "--task", "t",
                                "--call-timeout", "nan"], "--call-timeout"),
    ("agent-max-rounds-zero", ["agent", "--mcp-config", "@mcp.json", "--task", "t",
                               "--max-rounds", "0"], "--max-rounds"),
    ("agent-policy", ["agent", "--mcp-config", "@mcp.json", "--task", "t", "--policy", "maybe",
                      "--base-url", "http://127.0.0.1:9"], "policy"),
]


def _resolve(args: list[str], files: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        if arg.startswith("@"):
            name, _, rest = arg[1:].partition("/")
            arg = files[name] + (f"/{rest}" if rest else "")
        out.append(arg)
    return out


def test_the_table_is_big_enough() -> None:
    assert len(ROWS) >= 50 and len({name for name, _, _ in ROWS}) == len(ROWS)


@pytest.mark.parametrize(("name", "args", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, name: str, args: list[str],
                                         expected: str) -> None:
    result = CliRunner().invoke(app, _resolve(args, _files(tmp_path)),
                                env={"HARNESS_API_TOKEN": "", "LM_API_TOKEN": "",
                                     "LMSTUDIO_API_TOKEN": "", "LMSTUDIO_BASE_URL": ""})
    output = result.output.strip()
    assert result.exit_code == EXIT_USAGE, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert expected.lower() in output.lower()
    assert len(output) < 600  # a 5,000-character host is not echoed back whole
    assert "secretpw" not in output


@pytest.mark.parametrize("args", [["serve", "--port", "99999"], ["check", "--timeout", "nan"],
                                  ["evaluate", "--base-url", ""]])
def test_real_process_exits_2_with_one_line(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == EXIT_USAGE
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_internal_errors_are_one_line_with_exit_70(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.check

    def boom(*_: object, **__: object) -> int:
        raise RuntimeError("kaboom token=sk-lm-abc:def")

    monkeypatch.setattr(harness.check, "run_check", boom)
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 70
    assert "internal error: RuntimeError: kaboom" in result.output
    assert "sk-lm-abc:def" not in result.output and "Traceback" not in result.output
