"""LM Studio Harness: a client core, an emulator and evaluation suites for LM Studio."""

from __future__ import annotations

__version__ = "0.1.0"
