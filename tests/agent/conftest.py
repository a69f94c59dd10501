"""Fixtures for the agent's unit tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.helpers import FIXTURES


@pytest.fixture
def notes_root(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def http_calculator() -> Iterator[str]:
    """The calculator fixture as a real process serving streamable HTTP on 127.0.0.1."""
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "calculator.py"), "--http", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), line
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
