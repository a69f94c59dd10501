"""Pytest plugin of the harness (entry point ``pytest11``): run suites against a target.

The plugin is loaded by every pytest run in an environment where the harness is installed, so it
must never get in another project's way: it is inert until a test asks for one of its fixtures
(the emulator, vcrpy and the clients are imported and started only inside fixtures), and its
options never take a name another plugin owns. Every option has a name of our own
(``--lmstudio-...``); the short generic spelling (``--base-url``, ``--models`` ...) is added as an
alias only when, after every plugin and the initial conftests are loaded, no one else has it.
With ``pytest-base-url`` (pulled in by pytest-playwright and pytest-selenium) installed,
``--base-url`` is that plugin's and ours is ``--lmstudio-url``.

Options:

``--lmstudio-url URL``         (``--base-url``) a live server instead of the embedded emulator
``--lmstudio-api-token TOK``   (``--api-token``) its token (or ``HARNESS_API_TOKEN`` /
                               ``LM_API_TOKEN``); never written to logs or cassettes
``--lmstudio-models a,b,c``    (``--models``) which live models to use (default: the listed LLMs)
``--lmstudio-via-proxy``       (``--via-proxy``) the fault proxy in front of the live server
``--lmstudio-subject NAME``    (``--subject``, repeatable) which client the suites judge:
                               ``harness`` (default), ``openai``, ``litellm``, an entry point of
                               group ``harness.subjects`` or ``module:factory``
``--lmstudio-record`` / ``--lmstudio-replay`` (``--record`` / ``--replay``) every test records
                               to / replays from cassettes (replay: no server at all); each
                               test's outcome and target are kept beside its cassette
                               (``<test>.target.json``), so a replay skips what skipped
``--lmstudio-cassette-dir DIR`` (``--cassette-dir``) where ``--record``/``--replay`` keep them
``--record-mode MODE``         for ``@pytest.mark.vcr`` tests, as in pytest-recording
                               (``none`` / ``once`` / ``new_episodes`` / ``all`` / ``rewrite``)

Fixtures: ``target`` (URLs, models, capabilities; reset between tests), ``subject`` (the client
under evaluation, one run per ``--subject``), ``make_subject`` (the same client on another URL),
``client`` / ``aclient`` (the harness's own clients), ``faults``, ``truth``, ``private_studio``,
``vcr_config`` / ``vcr`` (cassettes). Markers ``needs_faults`` / ``needs_truth`` skip, with the
reason, where the target cannot help; ``subject_needs(...)`` where the subject cannot;
``harness_api`` marks tests of the harness's own API (not applicable to other subjects).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from harness.client import AsyncClient, Client
    from harness.evaluate.target import Faults, Target, Truth
    from harness.studio.testing import StudioHandle
    from harness.subjects import SubjectSpec

async_fixture = pytest_asyncio.fixture  # async fixtures that work in strict mode too
TARGET_KEY: pytest.StashKey[Target] = pytest.StashKey()
SUBJECTS_KEY: pytest.StashKey[list[SubjectSpec]] = pytest.StashKey()
DEFAULT_CASSETTES = Path("fixtures") / "cassettes"
DEFAULT_SUBJECT = "harness"
RECORD_MODES = ("none", "once", "new_episodes", "all", "rewrite")

# (own name, generic alias, dest, argparse attributes)
OPTIONS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("--lmstudio-url", "--base-url", "harness_base_url",
     {"default": None, "metavar": "URL",
      "help": "run suites against this live server (default: embedded emulator)"}),
    ("--lmstudio-api-token", "--api-token", "harness_api_token",
     {"default": None, "metavar": "TOKEN",
      "help": "API token of the live server (default: $HARNESS_API_TOKEN, or LM Studio's "
              "$LM_API_TOKEN)"}),
    ("--lmstudio-models", "--models", "harness_models",
     {"default": None, "metavar": "A,B,C",
      "help": "comma-separated chat models of the live server to use"}),
    ("--lmstudio-via-proxy", "--via-proxy", "harness_via_proxy",
     {"action": "store_true", "default": False,
      "help": "put the harness fault proxy in front of --lmstudio-url"}),
    ("--lmstudio-subject", "--subject", "harness_subjects",
     {"action": "append", "default": None, "metavar": "NAME",
      "help": "client the suites judge: harness (default), openai, litellm, an entry point "
              "of group harness.subjects, or module:factory; repeat to compare"}),
    ("--lmstudio-record", "--record", "harness_record",
     {"action": "store_true", "default": False,
      "help": "record every test's HTTP exchanges to cassettes (tokens filtered out)"}),
    ("--lmstudio-replay", "--replay", "harness_replay",
     {"action": "store_true", "default": False,
      "help": "replay recorded cassettes instead of talking to a server"}),
    ("--lmstudio-cassette-dir", "--cassette-dir", "harness_cassette_dir",
     {"default": None, "metavar": "DIR",
      "help": "cassette directory of --record/--replay (default: <rootdir>/fixtures/cassettes)"}),
    ("--lmstudio-record-mode", "--record-mode", "record_mode",  # pytest-recording's dest
     {"default": None, "choices": RECORD_MODES,
      "help": "record mode of @pytest.mark.vcr tests (default: none = replay only)"}),
)

MARKERS = {
    "streaming": "streaming gap", "switching": "mid-request model switching gap",
    "concurrency": "concurrency and async-safety gap", "backoff": "capped retries under 429",
    "cache": "model catalog expiry", "errors": "error context",
    "agent": "MCP agent error policy", "needs_faults": "target must inject faults",
    "needs_truth": "target must expose ground truth", "slow": "slower than a few seconds",
    "harness_api": "tests the harness's own API: not applicable to other subjects",
    "subject_needs(*capabilities)": "the subject must offer these (sync, async, stream, "
                                    "tools, list_models)",
    "vcr(*cassettes, **config)": "record/replay this test's HTTP with a cassette "
                                 "(--record-mode)",
    "target_needs(*capabilities, models=0)": "the target must offer these (faults, truth, "
                                             "realtime, emulator, concurrent, native_v0, "
                                             "native_v1, load_unload, auth, stream_usage, "
                                             "tools, "
                                             "reasoning) and this many chat models",
}
TARGET_ERROR_EXIT = pytest.ExitCode.USAGE_ERROR  # a target that cannot be used is bad input
_TARGET_ERROR_KEY: pytest.StashKey[str] = pytest.StashKey()
HARNESS_FIXTURES = frozenset({"client", "aclient"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lmstudio", "LM Studio Harness target")
    for own, _alias, dest, attrs in OPTIONS:
        group.addoption(own, dest=dest, **attrs)


def _taken(parser: pytest.Parser, name: str) -> bool:
    """Whether an option string is already registered (by pytest, a plugin or a conftest)."""
    opt2dest = getattr(parser, "_opt2dest", None)
    if isinstance(opt2dest, dict):
        return name in opt2dest
    groups = [getattr(parser, "_anonymous", None), *getattr(parser, "_groups", [])]
    return any(name in opt.names() for g in groups if g is not None for opt in g.options)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> Any:
    """After every plugin and the initial conftests registered their options: add the generic
    aliases nobody else owns (the final command-line parse happens after this hook)."""
    result = yield
    group = parser.getgroup("lmstudio")
    for own, alias, dest, attrs in OPTIONS:
        if not _taken(parser, alias):
            group.addoption(alias, dest=dest, **{**attrs, "help": f"alias of {own}"})
    return result


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():  # also for suites run outside this repository
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.getoption("harness_record", False) and config.getoption("harness_replay", False):
        raise pytest.UsageError("--lmstudio-record and --lmstudio-replay exclude each other")
    if (config.getoption("harness_via_proxy", False)
            and not config.getoption("harness_base_url", None)):
        raise pytest.UsageError("--lmstudio-via-proxy needs --lmstudio-url (the live server "
                                "to put it before)")
    names = config.getoption("harness_subjects", None)
    if names:  # resolved now: an unknown name or a failing import is one line, before anything
        from harness.subjects import SubjectError, resolve

        paths = tuple(dict.fromkeys((str(config.invocation_params.dir), str(config.rootpath))))
        try:
            config.stash[SUBJECTS_KEY] = [resolve(n, paths) for n in names]
        except SubjectError as exc:
            raise pytest.UsageError(str(exc)) from None


def subject_specs(config: pytest.Config) -> list[SubjectSpec]:
    """The ``--subject`` values of this run (default: ``harness``), resolved once."""
    specs = config.stash.get(SUBJECTS_KEY, None)
    if specs is None:
        from harness.subjects import resolve

        specs = config.stash[SUBJECTS_KEY] = [resolve(DEFAULT_SUBJECT)]
    return specs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One run of every subject-driven test per ``--subject`` (ids: the subject names)."""
    if "subject_spec" in metafunc.fixturenames:
        specs = subject_specs(metafunc.config)
        metafunc.parametrize("subject_spec", specs, indirect=True,
                             ids=[s.name for s in specs])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that drives the harness's own clients is a harness API test."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & HARNESS_FIXTURES and "subject_spec" not in names:
            item.add_marker(pytest.mark.harness_api)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Harness API tests are not applicable when the harness is not among the subjects."""
    if item.get_closest_marker("harness_api") is None:
        return
    names = [s.name for s in subject_specs(item.config)]
    if DEFAULT_SUBJECT not in names:
        pytest.skip(f"not applicable: tests the harness's own API, subjects are "
                    f"{', '.join(names)}")


def _models(config: pytest.Config) -> tuple[str, ...]:
    raw = config.getoption("harness_models") or ""
    return tuple(m.strip() for m in raw.split(",") if m.strip())


def api_token(config: pytest.Config) -> str | None:
    from harness.secrets import register, token_from_env

    return register(config.getoption("harness_api_token")) or token_from_env()


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


def _cassette_of(config: pytest.Config, node: pytest.Item) -> Path:
    """Where ``--lmstudio-record`` / ``--lmstudio-replay`` keep this test's exchanges."""
    from harness.evaluate.cassettes import cassette_path

    root = Path(config.getoption("harness_cassette_dir") or config.rootpath / DEFAULT_CASSETTES)
    return cassette_path(root, Path(str(node.path)).stem, node.name)


def _suite_cassette(request: pytest.FixtureRequest, target: Target
                    ) -> AbstractContextManager[Any]:
    """``--lmstudio-record`` / ``--lmstudio-replay``: every test's exchanges in one cassette."""
    from contextlib import nullcontext

    config = request.config
    if config.getoption("harness_record"):
        mode = "all"
    elif config.getoption("harness_replay"):
        mode = "none"
    else:
        return nullcontext()
    from harness.evaluate.cassettes import use_cassette

    secrets = (target.api_token,) if target.api_token else ()
    path = _cassette_of(config, request.node)
    if mode == "none" and not path.exists():
        pytest.fail(f"no cassette {path} to replay; record it with --lmstudio-record",
                    pytrace=False)
    return use_cassette(path, mode, secrets)


def _replayed(request: pytest.FixtureRequest, target: Target) -> Target:
    """On replay, the target as this test's recording saw it; a test that skipped while
    recording (no cassette) skips again with the recorded reason."""
    from harness.evaluate.target import RecordedRun

    path = _cassette_of(request.config, request.node)
    recorded = RecordedRun.read(path)
    if recorded is None:  # recorded before runs were kept: the plain replay target
        return target
    if recorded.outcome == "skipped" and not path.exists():
        pytest.skip(recorded.skip_reason)
    return recorded.replay(target)


_RAN_KEY: pytest.StashKey[bool] = pytest.StashKey()
# What a recorded test that sent nothing replays from: any request it sends on replay fails.
EMPTY_CASSETTE = "interactions: []\nversion: 1\n"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """``--lmstudio-record``: keep each target test's outcome and target beside its cassette
    (``RecordedRun``), so ``--lmstudio-replay`` skips what skipped while recording; a test
    that ran without a single exchange (vcrpy writes nothing then) gets an empty cassette."""
    report = yield
    if (not item.config.getoption("harness_record", False)
            or "target" not in getattr(item, "fixturenames", ())):
        return report
    path = _cassette_of(item.config, item)
    if call.when == "teardown":
        if item.stash.get(_RAN_KEY, False) and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(EMPTY_CASSETTE, encoding="utf-8")
        return report
    if not (call.when == "call" or (call.when == "setup" and report.skipped)):
        return report
    from harness.evaluate.target import RecordedRun

    funcargs = getattr(item, "funcargs", {})
    target = funcargs.get("target") or item.config.stash.get(TARGET_KEY, None)
    if target is None:  # the target itself failed to open: nothing ran against it
        return report
    reason = None
    if report.skipped:
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
        reason = reason.removeprefix("Skipped: ")
        # A stale recording of a run that no longer happens (exchanges made before a skip in
        # the test's body are still written, fresh, when its cassette closes).
        path.unlink(missing_ok=True)
    else:
        item.stash[_RAN_KEY] = True
    RecordedRun.of(target, report.outcome, reason).write(path)
    return report


@pytest.fixture
def target(request: pytest.FixtureRequest, harness_target: Target) -> Iterator[Target]:
    """The target, clean for this test; skips when the test's ``needs_*`` markers cannot be met.

    ``target.base_url`` is the server root, ``target.openai_base_url`` the same with ``/v1``
    (what OpenAI-style clients take). Cleaning happens before the test (``reset`` drops faults
    and truth); faults a test sets go through the ``faults`` fixture, which clears them after.
    """
    current = (_replayed(request, harness_target) if request.config.getoption("harness_replay")
               else harness_target)
    current.require_needs(request.node)
    current.reset()
    with _suite_cassette(request, current):
        yield current


def fast_retry() -> Any:
    """Retries that keep the policy's caps but wait milliseconds, for tests not about waiting."""
    from harness.client import RetryPolicy

    return RetryPolicy(backoff_base=0.005, backoff_max=0.05, retry_after_max=0.05)


def suite_timeouts(target: Target | None = None) -> Any:
    """The suites' client time limits, stretched by the target's calibration scale."""
    from harness.calibration import UNSCALED

    # connect 5 s: a busy 2-core machine running the suites in parallel took over 2 s to accept
    # one of 200 concurrent connections
    return (target.calibration if target is not None else UNSCALED).timeouts(connect=5.0)


def _client_options(target: Target) -> dict[str, Any]:
    """What the ``client`` and ``aclient`` fixtures both pass: default model, token, the
    suites' time limits and fast retries."""
    return {"model": target.model(0), "api_token": target.api_token,
            "timeout": suite_timeouts(target), "retry": fast_retry()}


@pytest.fixture
def client(target: Target) -> Iterator[Client]:
    """A sync harness client on the target, default model ``target.models[0]``, fast retries."""
    from harness.client import Client

    with Client(target.base_url, **_client_options(target)) as c:
        yield c


@async_fixture
async def aclient(target: Target) -> AsyncIterator[AsyncClient]:
    """An async harness client on the target (works under pytest-asyncio strict mode too)."""
    from harness.client import AsyncClient

    async with AsyncClient(target.base_url, **_client_options(target)) as c:
        yield c


# -- subjects --------------------------------------------------------------------------------
@pytest.fixture
def subject_spec(request: pytest.FixtureRequest) -> SubjectSpec:
    """The subject this test runs for (parametrized by ``pytest_generate_tests``)."""
    spec: SubjectSpec = request.param
    return spec


class SubjectMaker:
    """Builds the test's subject on any server (the target by default) and closes them all."""

    def __init__(self, spec: SubjectSpec, target: Target, needs: tuple[str, ...]) -> None:
        self.spec, self.target, self.needs = spec, target, needs
        self.made: list[Any] = []

    def __call__(self, base_url: str | None = None, *, api_token: str | None = None,
                 model: str | None = None, timeout: float | None = None) -> Any:
        from harness.subjects import SubjectConfig, SubjectError, missing_capabilities

        config = SubjectConfig(base_url or self.target.base_url,
                               api_token if base_url else (api_token or self.target.api_token),
                               model or (self.target.models[0] if self.target.models else None),
                               timeout if timeout is not None
                               else self.target.calibration.seconds(15.0))
        try:
            subject = self.spec.build(config)
        except SubjectError as exc:
            pytest.fail(str(exc), pytrace=False)
        except Exception as exc:  # the user's factory itself failed: say so in one line
            pytest.fail(f"subject {self.spec.spec!r}: factory failed: "
                        f"{type(exc).__name__}: {exc}", pytrace=False)
        self.made.append(subject)
        reason = missing_capabilities(subject, self.needs)
        if reason is not None:
            pytest.skip(reason)
        return subject

    async def aclose(self) -> None:
        for subject in self.made:
            subject.close()
            if "async" in subject.capabilities:
                await subject.aclose()


def _needs(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return tuple(n for m in request.node.iter_markers("subject_needs") for n in m.args)


@async_fixture
async def make_subject(request: pytest.FixtureRequest, subject_spec: SubjectSpec,
                       target: Target) -> AsyncIterator[SubjectMaker]:
    """``make_subject(base_url=None, api_token=None, model=None, timeout=None)``: the subject
    under evaluation on another server (a closed port, a token-protected emulator ...). The
    default timeout (15 s) is stretched by the target's calibration like the suites' limits;
    one given is taken as it is."""
    maker = SubjectMaker(subject_spec, target, _needs(request))
    yield maker
    await maker.aclose()


@pytest.fixture
def subject(make_subject: SubjectMaker) -> Any:
    """The client under evaluation (``--subject``) on the target; closed after the test.

    Skips with the reason when the test's ``subject_needs(...)`` are not all offered."""
    return make_subject()


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


# -- cassettes the way pytest-recording users expect -------------------------------------------
@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    """Override in a conftest to pass options to vcrpy (``match_on``, ``filter_headers`` ...);
    tokens and auth headers are filtered whatever it says."""
    return {}


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    """``cassettes/<module>/`` next to the test module (as pytest-recording does)."""
    module = Path(str(request.node.path))
    return str(module.parent / "cassettes" / module.stem)


def record_mode(config: pytest.Config) -> str:
    mode: str = config.getoption("record_mode", None) or "none"
    return mode


@pytest.fixture
def vcr(request: pytest.FixtureRequest, vcr_config: dict[str, Any],
        vcr_cassette_dir: str) -> Iterator[Any]:
    """The test's cassette (a ``vcr.cassette.Cassette``): ``<vcr_cassette_dir>/<test>.yaml``
    plus any extra cassettes named in ``@pytest.mark.vcr(...)``; mode from ``--record-mode``.

    Replaying (``none``) a cassette that does not exist fails naming its path instead of
    letting the test reach a server it was promised it would not."""
    from harness.evaluate.cassettes import cassette_path, use_cassette

    mode = record_mode(request.config)
    marker = request.node.get_closest_marker("vcr")
    overrides = {**vcr_config, **(marker.kwargs if marker else {})}
    mode = overrides.pop("record_mode", mode)
    if mode not in RECORD_MODES:
        pytest.fail(f"record mode {mode!r} is not one of {', '.join(RECORD_MODES)}",
                    pytrace=False)
    path = cassette_path(Path(vcr_cassette_dir), "", request.node.name)
    extra = [Path(vcr_cassette_dir) / p for p in (marker.args if marker else ())]
    for needed in ([path] if mode == "none" else []) + extra:
        if not needed.exists():
            pytest.fail(f"no cassette {needed} to replay (--record-mode=none); record it with "
                        "--record-mode=once", pytrace=False)
    if mode == "rewrite" and path.exists():
        path.unlink()
    secrets = tuple(s for s in (api_token(request.config),) if s)
    with ExitStack() as stack:
        for other in extra:  # replay-only companions, like pytest-recording's shared cassettes
            stack.enter_context(use_cassette(other, "none", secrets, overrides))
        yield stack.enter_context(use_cassette(
            path, "all" if mode == "rewrite" else mode, secrets, overrides))


@pytest.fixture(autouse=True)
def _harness_vcr_marker(request: pytest.FixtureRequest) -> None:
    """Turns ``@pytest.mark.vcr`` into the ``vcr`` fixture (left to pytest-recording if it is
    installed: two recorders on one test would fight)."""
    if (request.node.get_closest_marker("vcr") is not None
            and not request.config.pluginmanager.hasplugin("recording")):
        request.getfixturevalue("vcr")
