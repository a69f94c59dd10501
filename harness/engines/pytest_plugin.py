"""Pytest plugin (entry point ``pytest11``): ``--llama-cpp`` runs the suites on a real engine.

``pytest suites --llama-cpp`` starts llama.cpp's server (``harness.engines.llamacpp``) once, on
the controlling process, and points the harness target at it as if ``--base-url`` had been
given (``--via-proxy`` works on top). Without the option the plugin does nothing; with it and no
engine installed the run stops with one line saying what to install.

``--llama-cpp-queue`` starts it with ``interrupt_requests`` off: concurrent requests queue on
the server's lock instead of cutting the running stream (llama-cpp-python's default).
"""

from __future__ import annotations

import os

import pytest

from harness.engines.llamacpp import EngineError, LlamaCppOptions, LlamaCppServer, missing

_SERVER_KEY: pytest.StashKey[LlamaCppServer] = pytest.StashKey()
URL_ENV = "HARNESS_LLAMA_CPP_URL"
MODELS_ENV = "HARNESS_LLAMA_CPP_MODELS"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lmstudio")
    group.addoption("--llama-cpp", dest="llama_cpp", action="store_true", default=False,
                    help="start llama.cpp's server (llama-cpp-python, SmolLM2 under three "
                         "aliases) and run against it")
    group.addoption("--llama-cpp-queue", dest="llama_cpp_queue", action="store_true",
                    default=False, help="with --llama-cpp: queue concurrent requests instead "
                                        "of interrupting the running stream")


def engine(config: pytest.Config) -> LlamaCppServer | None:
    """The engine this run started, if any (controller process only)."""
    return config.stash.get(_SERVER_KEY, None)


@pytest.hookimpl(tryfirst=True)  # before the harness plugin checks --via-proxy's --base-url
def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("llama_cpp", False):
        return
    if hasattr(config, "workerinput"):  # an xdist worker: the controller's engine
        _point_at(config, os.environ[URL_ENV], os.environ[MODELS_ENV])
        return
    if config.getoption("harness_base_url", None):
        raise pytest.UsageError("--llama-cpp starts its own server: drop --base-url")
    reason = missing()
    if reason is not None:
        raise pytest.UsageError(f"--llama-cpp: {reason}")
    server = LlamaCppServer(LlamaCppOptions(
        interrupt_requests=not config.getoption("llama_cpp_queue", False)))
    try:
        server.start()
    except EngineError as exc:
        server.close()
        raise pytest.UsageError(f"--llama-cpp: {exc}") from None
    config.stash[_SERVER_KEY] = server
    # Workers are spawned after this hook and inherit the environment.
    os.environ[URL_ENV] = server.base_url
    os.environ[MODELS_ENV] = ",".join(server.models)
    _point_at(config, server.base_url, os.environ[MODELS_ENV])


def _point_at(config: pytest.Config, base_url: str, models: str) -> None:
    config.option.harness_base_url = base_url
    if not config.getoption("harness_models", None):
        config.option.harness_models = models


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_SERVER_KEY, None)
    if server is not None:
        server.close()
        os.environ.pop(URL_ENV, None)
        os.environ.pop(MODELS_ENV, None)


def pytest_report_header(config: pytest.Config) -> str | None:
    server = engine(config)
    if server is None:
        return None
    mode = "queue" if not server.options.interrupt_requests else "interrupt_requests"
    return (f"llama.cpp engine: {server.base_url} ({', '.join(server.models)}; {mode}; "
            f"started in {server.started_in_s:.1f}s)")
