"""The server a suite runs against, and what it can do for a test.

A suite proves a gap closed by driving the real client against a real server. Which server is a
run-time choice (the embedded emulator, a live LM Studio, a live server behind the fault proxy, or
recorded cassettes), and not every choice can do everything: only the emulator and the proxy can
inject faults or report ground truth, and only a live socket has real timing. ``Target`` names
those capabilities so a test that needs one is *skipped with the reason* instead of failing or,
worse, passing without proving anything.

A live target is described by what it was found to have (``harness.capabilities``: OpenAI
endpoints, LM Studio native v0/v1, load/unload, auth, usage in streams, tool calls, reasoning) and
by how fast it is (``harness.calibration``: a short probe whose scale stretches the suites' time
limits and sizes their concurrency). Opening one checks what would otherwise fail every test: an
unreachable server, a refused token, a URL that is no LLM server, no models, a model name that is
not there. Those raise ``TargetSetupError`` (a ``TargetError``) before the first test runs.

Control (faults, truth, reset) always goes over the ``/_harness/`` HTTP endpoints, so the same
code serves the emulator and the proxy, in this process or another.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from harness.calibration import UNSCALED, Calibration, calibrate
from harness.capabilities import PROBED, ServerProfile, TargetSetupError, discover
from harness.control import ControlClient, ControlError
from harness.faults import FaultAction, FaultPlan

# ``concurrent``: concurrent requests all complete (side by side or queued); a server whose new
# request cuts the running stream off (llama-cpp-python's default) lacks it (calibration).
CAPABILITIES = ("faults", "truth", "realtime", "emulator", "concurrent", *PROBED)
# What the emulator offers: everything, with its scripted tools and reasoning models.
EMULATOR_CAPABILITIES = frozenset(CAPABILITIES)
# How to get what a live server lacks, for the skip reason.
_HOW = {"faults": "--via-proxy puts the harness fault proxy in front of a live server",
        "truth": "--via-proxy puts the harness fault proxy in front of a live server",
        "emulator": "only the embedded emulator scripts this",
        "realtime": "needs a live socket (not --record / --replay)",
        "concurrent": "a new request cuts the running stream off on this server "
                      "(llama-cpp-python: interrupt_requests; --llama-cpp-queue turns it off)"}
DEFAULT_EMULATOR_MODELS = ("qwen/qwen3-4b", "google/gemma-3-12b", "qwen/qwen3-coder-30b")
REPLAY_BASE_URL = "http://lmstudio.replay:1234"


# The control client raises it for the target's control calls; the target raises it when it
# cannot be reached: one error type for "the target could not be reached or controlled".
TargetError = ControlError


@dataclass
class Target:
    """Where the suites send requests and what that server can do for a test."""

    kind: str  # emulator | live | proxy | replay
    base_url: str
    models: tuple[str, ...]
    api_token: str | None = None
    capabilities: frozenset[str] = frozenset()
    control: ControlClient | None = None
    info: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration = UNSCALED

    @property
    def openai_base_url(self) -> str:
        """``base_url`` with ``/v1``: what OpenAI-style clients (the openai SDK) take."""
        return self.base_url.rstrip("/") + "/v1"

    def can(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {CAPABILITIES}")
        return capability in self.capabilities

    def missing(self, *capabilities: str) -> str | None:
        """Why a test needing ``capabilities`` cannot run here, or None when it can."""
        absent = [c for c in capabilities if not self.can(c)]
        if not absent:
            return None
        hints = list(dict.fromkeys(_HOW[c] for c in absent if c in _HOW))
        found = {f["name"]: f["detail"] for f in self.info.get("findings", [])}
        probed = [f"{c}: {found[c]}" for c in absent if c in found]
        why = "; ".join(probed + hints)
        return (f"target {self.kind} ({self.base_url}) cannot provide: {', '.join(absent)}"
                + (f" ({why})" if why else ""))

    def require_needs(self, node: Any) -> None:
        """Skip a test whose ``target_needs(*capabilities, models=N)`` (or ``needs_faults`` /
        ``needs_truth``) markers this target cannot meet, with the reason."""
        capabilities: list[str] = []
        count = 0
        for marker in node.iter_markers("target_needs"):
            capabilities += marker.args
            count = max(count, int(marker.kwargs.get("models", 0)))
        capabilities += [cap for name, cap in (("needs_faults", "faults"),
                                               ("needs_truth", "truth"))
                         if node.get_closest_marker(name) is not None]
        reason = self.missing(*dict.fromkeys(capabilities)) or self.models_missing(count)
        if reason is not None:
            import pytest

            pytest.skip(reason)

    def require(self, *capabilities: str) -> None:
        """Skip the running test, with the reason, when this target lacks a capability."""
        reason = self.missing(*capabilities)
        if reason is not None:
            import pytest

            pytest.skip(reason)

    def models_missing(self, count: int) -> str | None:
        """Why a test needing ``count`` distinct models cannot run here, or None."""
        if count <= len(self.models):
            return None
        return (f"needs {count} models, target {self.kind} has {len(self.models)} "
                f"({', '.join(self.models) or 'none'}); pass more with --models")

    def model(self, index: int) -> str:
        """The index-th chat model to use; a test needing more than the target has is
        skipped ("needs 2 models, target live has 1"): a set-up limit, not a failure."""
        reason = self.models_missing(index + 1)
        if reason is not None:
            import pytest

            pytest.skip(reason)
        return self.models[index]

    def reset(self) -> None:
        """Back to a clean server between tests: no faults, no truth, nothing JIT-loaded."""
        if self.control is not None:  # emulator: state + truth + faults; proxy: truth + faults
            self.control.reset()


class Faults:
    """Faults for one test, applied through the target's control endpoint and cleared after."""

    def __init__(self, control: ControlClient) -> None:
        self._control = control

    def set(self, plan: FaultPlan | FaultAction, **match: Any) -> FaultPlan:
        """Install a plan, or a single action matching ``match`` (endpoint, model, nth, times)."""
        if not isinstance(plan, FaultPlan):
            plan = FaultPlan.single(plan, **match)
        self._control.set_faults(plan)
        return plan

    def clear(self) -> None:
        self._control.clear_faults()

    def stats(self) -> list[dict[str, Any]]:
        return self._control.fault_stats()


class Truth:
    """The server's record of what really happened, per request (emulator or proxy)."""

    def __init__(self, control: ControlClient) -> None:
        self._control = control

    def records(self, endpoint: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        records = self._control.truth(since)
        if endpoint is not None:
            records = [r for r in records if r["endpoint"] == endpoint]
        return records

    def mark(self) -> int:
        """The id of the newest record so far: pass it as ``since`` to see only later ones."""
        records = self._control.truth()
        return records[-1]["id"] if records else 0

    def settled(self, endpoint: str | None = None, *, expect: int | None = None,
                timeout: float = 3.0, since: int = 0) -> list[dict[str, Any]]:
        """Records once every one of them has finished (and at least ``expect`` exist).

        Why poll: a client that closed a stream early has returned before the server noticed
        the disconnect; the server's side of the story lands a few milliseconds later.
        """
        deadline = time.monotonic() + timeout
        while True:
            records = self.records(endpoint, since)
            done = all(r["duration_s"] is not None for r in records)
            if done and (expect is None or len(records) >= expect):
                return records
            if time.monotonic() > deadline:
                raise TargetError(
                    f"truth at {self._control.url} did not settle within {timeout:g}s: "
                    f"{len(records)} records, {sum(r['duration_s'] is None for r in records)} "
                    f"still running, expected {expect}"
                )
            time.sleep(0.01)

    def state(self) -> dict[str, Any]:
        return self._control.state()


def describe_server(base_url: str, api_token: str | None) -> dict[str, Any]:
    """What the report says about the emulator: its models with their loaded state.

    Listed through the client core, so a server that is down or refuses the token is an
    ``error`` worded like every other client error, never an empty model list.
    """
    from harness.client import Client, RetryPolicy
    from harness.client.errors import LMStudioError

    info: dict[str, Any] = {"server": None, "version": None, "models": []}
    try:
        with Client(base_url, api_token=api_token, retry=RetryPolicy.none(),
                    timeout=5.0) as client:
            listed = client.v0_models()
    except LMStudioError as exc:
        info["error"] = str(exc)
        return info
    info["models"] = [{"id": m.id, "type": m.type, "state": m.state} for m in listed]
    return info


@contextmanager
def embedded_emulator(api_token: str | None = None) -> Iterator[Target]:
    """Start the embedded emulator (test-fast catalog) and describe it as a target."""
    from harness import __version__
    from harness.studio.stress import Stress
    from harness.studio.testing import running_studio

    # Stressed streams by default (split and coalesced frames, multibyte text, keep-alives,
    # jittered timing): the suites must catch readers that only work on tidy streams.
    with running_studio(api_token=api_token, reap_interval_s=0.05, stress=Stress()) as studio:
        info = describe_server(studio.base_url, api_token)
        info["server"] = "harness embedded LM Studio emulator"
        info["version"] = __version__
        control = ControlClient(studio.base_url)
        try:
            yield Target("emulator", studio.base_url, DEFAULT_EMULATOR_MODELS, api_token,
                         EMULATOR_CAPABILITIES, control, info)
        finally:
            control.close()


def profile_info(profile: ServerProfile, server: str) -> dict[str, Any]:
    """The report's view of a probed server (model types and states where it said them)."""
    return {"server": server, "version": None,
            "models": [{"id": m.id, "type": m.type or "llm", "state": m.state}
                       for m in profile.models],
            **profile.describe()}


def open_live(base_url: str, api_token: str | None, models: tuple[str, ...], *,
              generate: bool = True) -> tuple[ServerProfile, Calibration]:
    """Probe and calibrate a live server; ``TargetSetupError`` if it cannot be used.
    ``generate=False``: listings only, no tokens generated, no calibration."""
    profile = discover(base_url, api_token, models, generate=generate)
    if not generate:
        return profile, UNSCALED
    from harness.client.errors import LMStudioError

    try:
        measured = calibrate(base_url, profile.chat_models[0], api_token)
    except LMStudioError as exc:
        raise TargetSetupError(f"target {base_url}: the calibration probe failed: {exc}",
                               reason="not-llm-server", base_url=base_url) from None
    return profile, measured


def live_target(base_url: str, api_token: str | None, models: tuple[str, ...], *,
                generate: bool = True) -> Target:
    """A live server: real timing, no faults or truth, the capabilities it was found to have."""
    profile, measured = open_live(base_url, api_token, models, generate=generate)
    server = "LM Studio (live)" if profile.has("native_v0") else "OpenAI-compatible server (live)"
    extra = {"realtime"} if measured.cuts_running else {"realtime", "concurrent"}
    return Target("live", base_url, profile.chat_models, api_token,
                  profile.capabilities | extra, None,
                  {**profile_info(profile, server), "calibration": measured.describe()},
                  measured)


def replay_target(models: tuple[str, ...]) -> Target:
    """Cassettes only: no socket is opened, so no timing, faults or truth."""
    from harness.studio.catalog import load_catalog

    # Cassettes are recorded against the emulator by default: list its catalog.
    listed = [{"id": m.key, "type": m.type, "state": None} for m in load_catalog(None).models]
    info = {"server": "recorded cassettes", "version": None,
            "models": [{"id": m, "type": "llm", "state": None} for m in models] or listed}
    return Target("replay", REPLAY_BASE_URL, models or DEFAULT_EMULATOR_MODELS, None,
                  frozenset(), None, info)


# What a replay can never do, whatever the recorded target could: it has no socket (timing) and
# no control endpoint (faults, truth).
_NOT_REPLAYABLE = frozenset({"realtime", "faults", "truth"})
RECORD_SUFFIX = ".target.json"


@dataclass(frozen=True)
class RecordedRun:
    """How one test went when its cassette was recorded, and against what.

    Why: a replay must give the recording's pass/skip counts. A test that skipped while
    recording (the engine lacked a capability) has no cassette, and one that ran may have
    branched on the target (``target.can("emulator")``, the calibrated concurrency): replayed
    against an empty, unscaled replay target it would error on a missing cassette or send
    requests the cassette never saw. So each recording keeps, next to the cassette, the test's
    outcome, its skip reason and the target it ran against.
    """

    outcome: Literal["passed", "failed", "skipped"]
    reason: str | None
    kind: str
    server: str | None
    models: tuple[str, ...]
    capabilities: frozenset[str]
    calibration: Calibration
    listed: tuple[dict[str, Any], ...] = ()  # the server's model listing (id, type, state)

    @classmethod
    def of(cls, target: Target, outcome: Literal["passed", "failed", "skipped"],
           reason: str | None = None) -> RecordedRun:
        listed = tuple({k: m.get(k) for k in ("id", "type", "state")}
                       for m in target.info.get("models", []) if isinstance(m, dict))
        return cls(outcome, reason, target.kind, target.info.get("server"), target.models,
                   target.capabilities, target.calibration, listed)

    @staticmethod
    def path(cassette: Path) -> Path:
        return cassette.with_suffix(RECORD_SUFFIX)

    def write(self, cassette: Path) -> None:
        data = {"outcome": self.outcome, "reason": self.reason, "kind": self.kind,
                "server": self.server, "models": list(self.models),
                "capabilities": sorted(self.capabilities),
                "calibration": asdict(self.calibration), "listed": list(self.listed)}
        path = self.path(cassette)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, cassette: Path) -> RecordedRun | None:
        """The recorded run of ``cassette``'s test; None for cassettes recorded without one."""
        path = cls.path(cassette)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["outcome"], data.get("reason"), data["kind"], data.get("server"),
                       tuple(data["models"]), frozenset(data["capabilities"]),
                       Calibration(**data["calibration"]), tuple(data.get("listed", ())))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"recorded run {path} is not readable: {exc}") from None

    @property
    def skip_reason(self) -> str:
        where = self.server or self.kind
        return f"skipped when recorded against {where}: {self.reason or 'no reason given'}"

    def replay(self, base: Target) -> Target:
        """The replay target as this test saw its recorded target: its models, listing,
        capabilities (less what no replay has) and calibration; still no socket."""
        info = {**base.info, "recorded_against": self.server or self.kind}
        if self.listed:
            info["models"] = [dict(m) for m in self.listed]
        return replace(base, models=self.models or base.models,
                       capabilities=self.capabilities - _NOT_REPLAYABLE,
                       calibration=self.calibration, info=info)


@contextmanager
def proxied_target(base_url: str, api_token: str | None, models: tuple[str, ...], *,
                   generate: bool = True) -> Iterator[Target]:
    """The fault proxy on a free loopback port in front of a live server.

    Why: LM Studio never answers 429 and cannot be told to break a stream; the gateways in front
    of it do both. Through the proxy the backoff and stream suites run against the real server
    with real faults, and the proxy's truth counts the upstream attempts.
    """
    from harness.proxy import create_proxy_app
    from harness.studio.server import BackgroundServer

    live = live_target(base_url, api_token, models, generate=generate)
    server = BackgroundServer(create_proxy_app(base_url))
    server.start()
    control = ControlClient(server.base_url)
    try:
        yield Target("proxy", server.base_url, live.models, api_token,
                     live.capabilities | {"faults", "truth"}, control,
                     {**live.info, "server": f"{live.info['server']} via harness fault proxy",
                      "upstream": base_url}, live.calibration)
    finally:
        control.close()
        server.stop()
