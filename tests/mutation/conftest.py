"""Fixtures the killer tests share with the unit tests they extend."""

from __future__ import annotations

from tests.agent.conftest import notes_root

__all__ = ["notes_root"]
