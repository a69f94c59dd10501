"""Fixtures for the agent's unit tests (the HTTP calculator process is the agent suite's own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from suites.test_agent import http_calculator

__all__ = ["http_calculator", "notes_root"]


@pytest.fixture
def notes_root(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    return root
