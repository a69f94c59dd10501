"""Configs that start the real fixture MCP servers, and a child-process probe."""

from __future__ import annotations

import os
from pathlib import Path

from harness.agent import McpConfig, parse_mcp_config
from suites.test_agent import FIXTURES, stdio

__all__ = ["FIXTURES", "fixture_config", "live_children", "stdio"]


def fixture_config(notes_root: Path, **extra: dict[str, object]) -> McpConfig:
    servers = {
        "notes": stdio("notes.py", "--root", str(notes_root)),
        "calc": stdio("calculator.py"),
        "flaky": stdio("flaky.py"),
        **extra,
    }
    return parse_mcp_config({"mcpServers": servers}, source="test.mcp.json")


def live_children() -> list[int]:
    """Our child processes that are still running (zombies excluded)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry.name))
    return found


