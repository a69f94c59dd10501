"""Fixtures for the emulator's own tests: a running emulator per module, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness.studio.testing import StudioHandle, running_studio
from suites.test_agent import http_calculator

__all__ = ["fresh", "http", "http_calculator", "studio"]


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
