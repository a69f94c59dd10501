"""Tests against a real llama.cpp server (llama-cpp-python): those using an engine fixture
run only with ``--llama-cpp``.

Why gated: the engine is an optional extra that builds llama.cpp from source, and each server
start loads weights; the default run (CI) never starts one. ``tox -e llama`` passes the option.
Without the engine installed, ``--llama-cpp`` stops the run with what to install.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from harness.engines.llamacpp import LlamaCppServer, running_llama_cpp
from harness.engines.llamaserver import LlamaServer

ENGINE_FIXTURES = frozenset({"engine", "queued_engine", "llama_server", "private_engine"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("llama_cpp", False):
        return
    skip = pytest.mark.skip(reason="real llama.cpp engine: run with --llama-cpp "
                                   "(tox -e llama; needs pip install -e '.[llama]')")
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def engine() -> Iterator[LlamaCppServer]:
    """llama-cpp-python's server as shipped: a new request interrupts the running stream."""
    with running_llama_cpp() as server:
        yield server


@pytest.fixture(scope="session")
def queued_engine() -> Iterator[LlamaCppServer]:
    """The same server with ``interrupt_requests`` off: concurrent requests wait their turn."""
    with running_llama_cpp(interrupt_requests=False) as server:
        yield server


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """llama.cpp's C++ ``llama-server`` (built with ``python -m harness.engines.llamaserver
    --build``); skipped, with how to build it, where there is none."""
    from harness.engines.llamaserver import missing

    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    server = LlamaServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def private_engine() -> Callable[..., AbstractContextManager[LlamaCppServer]]:
    """``running_llama_cpp`` for a test that starts and stops an engine of its own."""
    return running_llama_cpp
