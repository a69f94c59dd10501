"""An emulator in its own process for load tests.

Locust monkey-patches the process with gevent; the in-process ``running_studio`` thread would then
share one hub with the load generator, so load tests talk to ``harness serve`` in a subprocess. It
streams at 100 tokens/s: fast enough for seconds-long tests, slow enough (10 ms between tokens)
that a worker on a busy 2-core machine still reads each token on its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.load.emulator import EmulatorProcess
from harness.load.scenario import EmulatorShape

TEST_SPEED = EmulatorShape(tokens_per_s=100.0, ttft_ms=20.0, parallel=64)


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    with EmulatorProcess(TEST_SPEED) as emulator:
        yield emulator.url
