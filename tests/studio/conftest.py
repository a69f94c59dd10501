"""Fixtures for the emulator's own tests: a running emulator per module, reset per test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.studio.testing import StudioHandle, running_studio


@pytest.fixture(scope="module")
def studio() -> Iterator[StudioHandle]:
    with running_studio() as handle:
        yield handle


@pytest.fixture()
def fresh(studio: StudioHandle) -> StudioHandle:
    studio.reset()
    return studio


@pytest.fixture()
def http(fresh: StudioHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fresh.base_url, timeout=10) as client:
        yield client


CALCULATOR = Path(__file__).resolve().parents[2] / "fixtures" / "mcp" / "calculator.py"


@pytest.fixture(scope="module")
def calculator_url() -> Iterator[str]:
    """The calculator MCP fixture as a real process over streamable HTTP (what LM Studio's
    ephemeral MCP integrations reach)."""
    proc = subprocess.Popen([sys.executable, str(CALCULATOR), "--http", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), line
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
