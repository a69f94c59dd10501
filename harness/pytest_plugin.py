"""Pytest plugin of the harness (entry point ``pytest11``): run suites against a target.

The plugin is loaded by every pytest run in an environment where the harness is installed, so it
is inert until a test asks for one of its fixtures: adding options and reading them costs nothing,
and the emulator, vcrpy and the client are imported and started only inside fixtures.

Options (all prefixed by what they configure; none shadows a pytest built-in):

``--base-url URL``   a live server instead of the embedded emulator
``--api-token TOK``  its token (or ``LMSTUDIO_API_TOKEN``); never written to logs or cassettes
``--models a,b,c``   which live models to use (default: the LLMs the server lists)
``--record``         record every test's HTTP exchanges to ``fixtures/cassettes/``
``--replay``         replay them instead of opening sockets
``--via-proxy``      put the fault proxy in front of ``--base-url`` (faults + truth on a live one)

Fixtures: ``target`` (URL, models, capabilities; reset between tests), ``client``, ``aclient``,
``faults``, ``truth``, ``private_studio`` (a dedicated emulator with other engine settings).
Markers ``needs_faults`` / ``needs_truth`` skip, with the reason, where the target cannot help.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.client import AsyncClient, Client
    from harness.evaluate.target import Faults, Target, Truth
    from harness.studio.testing import StudioHandle

TARGET_KEY: pytest.StashKey[Target] = pytest.StashKey()
_STACK_KEY: pytest.StashKey[ExitStack] = pytest.StashKey()
DEFAULT_CASSETTES = Path("fixtures") / "cassettes"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "LM Studio Harness target")
    group.addoption("--base-url", dest="harness_base_url", default=None, metavar="URL",
                    help="run suites against this live server (default: embedded emulator)")
    group.addoption("--api-token", dest="harness_api_token", default=None, metavar="TOKEN",
                    help="API token of the live server (default: $LMSTUDIO_API_TOKEN)")
    group.addoption("--models", dest="harness_models", default=None, metavar="A,B,C",
                    help="comma-separated chat models of the live server to use")
    group.addoption("--record", dest="harness_record", action="store_true", default=False,
                   help="record HTTP exchanges to cassettes (tokens filtered out)")
    group.addoption("--replay", dest="harness_replay", action="store_true", default=False,
                   help="replay recorded cassettes instead of talking to a server")
    group.addoption("--cassette-dir", dest="harness_cassette_dir", default=None, metavar="DIR",
                    help="cassette directory (default: <rootdir>/fixtures/cassettes)")
    group.addoption("--via-proxy", dest="harness_via_proxy", action="store_true", default=False,
                    help="put the harness fault proxy in front of --base-url")


MARKERS = {
    "streaming": "streaming gap", "switching": "mid-request model switching gap",
    "concurrency": "concurrency and async-safety gap", "backoff": "capped retries under 429",
    "cache": "model catalog expiry", "errors": "error context",
    "agent": "MCP agent error policy", "needs_faults": "target must inject faults",
    "needs_truth": "target must expose ground truth", "slow": "slower than a few seconds",
    "target_needs(*capabilities, models=0)": "the target must offer these (faults, truth, "
                                             "realtime, emulator, native_v0, native_v1, "
                                             "load_unload, auth, stream_usage, tools, "
                                             "reasoning) and this many chat models",
}
TARGET_ERROR_EXIT = pytest.ExitCode.USAGE_ERROR  # a target that cannot be used is bad input
_TARGET_ERROR_KEY: pytest.StashKey[str] = pytest.StashKey()


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():  # also for suites run outside this repository
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.getoption("harness_record", False) and config.getoption("harness_replay", False):
        raise pytest.UsageError("--record and --replay exclude each other")
    if config.getoption("harness_via_proxy", False) and not config.getoption("harness_base_url"):
        raise pytest.UsageError("--via-proxy needs --base-url (the live server to put it before)")


def _models(config: pytest.Config) -> tuple[str, ...]:
    raw = config.getoption("harness_models") or ""
    return tuple(m.strip() for m in raw.split(",") if m.strip())


def api_token(config: pytest.Config) -> str | None:
    return config.getoption("harness_api_token") or os.environ.get("LMSTUDIO_API_TOKEN") or None


def _open_target(config: pytest.Config, stack: ExitStack) -> Target:
    from harness.evaluate import target as t

    base_url = config.getoption("harness_base_url")
    token = api_token(config)
    if config.getoption("harness_replay"):
        return t.replay_target(_models(config))
    if base_url and config.getoption("harness_via_proxy"):
        return stack.enter_context(t.proxied_target(base_url, token, _models(config)))
    if base_url:
        return t.live_target(base_url, token, _models(config))
    return stack.enter_context(t.embedded_emulator())


def session_target(config: pytest.Config) -> Target | None:
    """The target of this session if a test has started it (for the evaluate collector)."""
    return config.stash.get(TARGET_KEY, None)


def session_target_error(config: pytest.Config) -> str | None:
    """Why the session's target could not be opened, if it could not (one line)."""
    return config.stash.get(_TARGET_ERROR_KEY, None)


@pytest.fixture(scope="session")
def harness_target(pytestconfig: pytest.Config) -> Iterator[Target]:
    """The session's target, started on first use (the emulator: once per session/worker)."""
    from dataclasses import replace

    from harness.evaluate.target import TargetError

    with ExitStack() as stack:
        try:
            target = _open_target(pytestconfig, stack)
        except TargetError as exc:
            # One line for the whole run, not the same error on every test: a wrong URL,
            # token or model name is a set-up mistake, not a regression.
            pytestconfig.stash[_TARGET_ERROR_KEY] = str(exc)
            pytest.exit(f"target error: {exc}", returncode=TARGET_ERROR_EXIT)
        if pytestconfig.getoption("harness_record"):
            # vcrpy reads each response whole before the client sees it: no real streaming,
            # so tests whose proof is timing (in-flight switches, early close) cannot run.
            target = replace(target, capabilities=target.capabilities - {"realtime"})
        pytestconfig.stash[TARGET_KEY] = target
        yield target


def _cassette(request: pytest.FixtureRequest, target: Target) -> AbstractContextManager[Any]:
    from contextlib import nullcontext

    config = request.config
    from harness.evaluate.cassettes import Mode, cassette_path, use_cassette

    mode: Mode
    if config.getoption("harness_record"):
        mode = "record"
    elif config.getoption("harness_replay"):
        mode = "replay"
    else:
        return nullcontext()

    root = Path(config.getoption("harness_cassette_dir") or config.rootpath / DEFAULT_CASSETTES)
    module = Path(str(request.node.path)).stem
    secrets = (target.api_token,) if target.api_token else ()
    path = cassette_path(root, module, request.node.name)
    if mode == "replay" and not path.exists():
        pytest.skip(f"target replay has no cassette {path}: record it with --record")
    return use_cassette(path, mode, secrets)


@pytest.fixture
def target(request: pytest.FixtureRequest, harness_target: Target) -> Iterator[Target]:
    """The target, clean for this test; skips when the test's ``needs_*`` markers cannot be met.

    Cleaning happens before the test (``reset`` drops faults and truth); faults a test sets go
    through the ``faults`` fixture, which clears them as it ends.
    """
    harness_target.require_needs(request.node)
    harness_target.reset()
    with _cassette(request, harness_target):
        yield harness_target


def fast_retry() -> Any:
    """Retries that keep the policy's caps but wait milliseconds, for tests not about waiting."""
    from harness.client import RetryPolicy

    return RetryPolicy(backoff_base=0.005, backoff_max=0.05, retry_after_max=0.05)


def suite_timeouts(target: Target | None = None) -> Any:
    """The suites' client time limits, stretched by the target's calibration scale."""
    from harness.calibration import UNSCALED

    return (target.calibration if target is not None else UNSCALED).timeouts()


@pytest.fixture
def client(target: Target) -> Iterator[Client]:
    """A sync client on the target, default model ``target.models[0]``, fast retries."""
    from harness.client import Client

    with Client(target.base_url, model=target.model(0), api_token=target.api_token,
                timeout=suite_timeouts(target), retry=fast_retry()) as c:
        yield c


@pytest.fixture
async def aclient(target: Target) -> AsyncIterator[AsyncClient]:
    """An async client on the target, default model ``target.models[0]``, fast retries."""
    from harness.client import AsyncClient

    async with AsyncClient(target.base_url, model=target.model(0), api_token=target.api_token,
                           timeout=suite_timeouts(target), retry=fast_retry()) as c:
        yield c


@pytest.fixture
def faults(target: Target) -> Iterator[Faults]:
    """Install fault plans for this test (cleared afterwards); skips if the target cannot."""
    from harness.evaluate.target import Faults

    target.require("faults")
    assert target.control is not None
    plan = Faults(target.control)
    yield plan
    plan.clear()


@pytest.fixture
def truth(target: Target) -> Truth:
    """The server's per-request ground truth; skips if the target keeps none."""
    from harness.evaluate.target import Truth

    target.require("truth")
    assert target.control is not None
    return Truth(target.control)


@pytest.fixture
def private_studio(target: Target) -> Iterator[Callable[..., StudioHandle]]:
    """A factory for dedicated emulators with other engine settings (``parallel``,
    ``evict_mode``, ``api_token`` ...); emulator targets only, each stopped after the test."""
    target.require("emulator")
    from harness.studio.testing import running_studio

    with ExitStack() as stack:

        def start(**options: Any) -> StudioHandle:
            return stack.enter_context(running_studio(**options))

        yield start
