"""Errors of the review runner.

Tree::

    ReviewError                 root; every message names the file, reviewer or model concerned
    ├── ReviewInputError        bad roster, subject, panel or run record (file, line, field)
    ├── PreflightError          a roster model is not served (lists what is available)
    └── ReviewOutputError       an output path would escape the output directory
"""

from __future__ import annotations


class ReviewError(Exception):
    """Root of the review runner's errors."""


class ReviewInputError(ReviewError, ValueError):
    """A roster, subject, panel or run record is malformed."""


class PreflightError(ReviewError):
    """A model named in the roster is not available on the server."""

    def __init__(self, message: str, *, missing: list[str], available: list[str]) -> None:
        super().__init__(message)
        self.missing = missing
        self.available = available


class ReviewOutputError(ReviewError, ValueError):
    """Output would be written outside the chosen directory."""
