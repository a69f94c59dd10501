"""What a live server can do, found by asking it, and why it cannot be used when it cannot.

Why probe instead of assume: LM Studio, LM Studio behind a gateway, llama.cpp's server, vLLM and
Ollama all speak the OpenAI endpoints, and only LM Studio has its native ``/api/v0`` and
``/api/v1``; tool calls, reasoning fields and usage in streams depend on the build and the model.
A suite that assumes any of them errors on the servers that lack it, so every optional feature is
probed once per session and tests declare what they need (a missing one is a skip with its
reason). Only ``GET /v1/models`` is required: without it nothing is an LLM server.

Capabilities found here (the target adds ``faults``, ``truth``, ``realtime``, ``emulator``):

    openai        GET /v1/models lists models (always present on a usable target)
    native_v0     GET /api/v0/models (LM Studio 0.3.6+): types, loaded state
    native_v1     GET /api/v1/models (LM Studio 0.4+): loaded instances
    load_unload   POST /api/v1/models/load and /unload (native v1)
    auth          the server refuses a request without a token
    stream_usage  a stream asked for usage ends with a usage chunk
    tools         a forced tool call comes back as ``tool_calls``
    reasoning     an answer carries reasoning apart from its text

A server that cannot be used at all raises ``TargetSetupError`` with ``reason`` one of
``unreachable``, ``refused`` (a 401: the server is there and said no), ``not-llm-server`` (HTML,
a 404, anything but a model list), ``no-models`` or ``unknown-model`` (with the closest ids).
These are set-up errors, never test failures.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.client import Client, ModelInfo, RetryPolicy, Timeouts
from harness.client.errors import (
    AuthenticationError,
    HTTPStatusError,
    LMStudioError,
    TransportError,
)
from harness.client.models import ReasoningDelta, TextDelta, ToolCallDelta
from harness.control import ControlError
from harness.secrets import TOKEN_ENV

PROBED = ("openai", "native_v0", "native_v1", "load_unload", "auth", "stream_usage", "tools",
          "reasoning")
SetupReason = Literal["unreachable", "refused", "not-llm-server", "no-models", "unknown-model"]
CHAT_TYPES = ("llm", "vlm")
PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


class TargetSetupError(ControlError):
    """The target cannot be used as given; ``reason`` says which way (see the module doc).

    A ``ControlError`` (the target error of the evaluation) so every ``except TargetError``
    catches it; ``str()`` is one line naming the URL, never the token.
    """

    def __init__(self, message: str, *, reason: SetupReason, base_url: str) -> None:
        super().__init__(message)
        self.reason: SetupReason = reason
        self.base_url = base_url

    def __reduce__(self) -> Any:  # picklable across xdist workers
        return (_rebuild, (str(self), self.reason, self.base_url))


def _rebuild(message: str, reason: SetupReason, base_url: str) -> TargetSetupError:
    return TargetSetupError(message, reason=reason, base_url=base_url)


@dataclass(frozen=True)
class Finding:
    """One probe's outcome: the capability (or listing) it looked for, and what it saw."""

    name: str
    present: bool
    detail: str


@dataclass(frozen=True)
class StreamSample:
    """One streamed answer as measured by the client: the raw material of calibration."""

    model: str
    ttft_s: float | None
    total_s: float
    chunks: int
    completion_tokens: int | None
    finish_reason: str | None
    usage: bool
    reasoning: bool

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed after the first token (chunks when the server gives no usage)."""
        tokens = self.completion_tokens or self.chunks
        if self.ttft_s is None or tokens < 2 or self.total_s <= self.ttft_s:
            return None
        return (tokens - 1) / (self.total_s - self.ttft_s)


@dataclass(frozen=True)
class ServerProfile:
    """What a server offers: capabilities, models, and the evidence for each finding."""

    base_url: str
    capabilities: frozenset[str]
    models: tuple[ModelInfo, ...]
    chat_models: tuple[str, ...]
    findings: tuple[Finding, ...] = ()
    samples: tuple[StreamSample, ...] = field(default=(), compare=False)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def describe(self) -> dict[str, Any]:
        """The profile as plain data for reports (no token can be in it: none is ever read)."""
        return {
            "capabilities": sorted(self.capabilities),
            "findings": [{"name": f.name, "present": f.present, "detail": f.detail}
                         for f in self.findings],
        }


def probe_timeouts(read: float = 120.0) -> Timeouts:
    """Set-up probes: quick to connect, patient to read (a JIT load may take a minute)."""
    return Timeouts(connect=5.0, read=read, stream_idle=read, deadline=read * 2)


def list_openai_models(base_url: str, api_token: str | None,
                       timeouts: Timeouts | None = None) -> tuple[list[ModelInfo], bool]:
    """``GET /v1/models`` asked first without a token: the listing and whether auth is on.

    Raises ``TargetSetupError`` for every way the answer is not a usable model list.
    """
    timeouts = timeouts or probe_timeouts(15.0)
    needs_token = False
    with Client(base_url, retry=RetryPolicy.none(), timeout=timeouts) as anonymous:
        try:
            return anonymous.list_models(), False
        except TransportError as exc:
            raise _unreachable(base_url, exc) from None
        except AuthenticationError:
            needs_token = True
        except LMStudioError as exc:
            raise _not_llm_server(base_url, exc) from None
    if not api_token:
        raise TargetSetupError(
            f"target {base_url} refused the request: it requires an API token "
            f"(set {TOKEN_ENV} or --api-token)", reason="refused", base_url=base_url)
    with Client(base_url, api_token=api_token, retry=RetryPolicy.none(),
                timeout=timeouts) as client:
        try:
            return client.list_models(), needs_token
        except AuthenticationError as exc:
            raise TargetSetupError(f"target {base_url} refused the API token: {exc}",
                                   reason="refused", base_url=base_url) from None
        except TransportError as exc:
            raise _unreachable(base_url, exc) from None
        except LMStudioError as exc:
            raise _not_llm_server(base_url, exc) from None


def _unreachable(base_url: str, exc: TransportError) -> TargetSetupError:
    return TargetSetupError(f"target {base_url} is not reachable: {exc}",
                            reason="unreachable", base_url=base_url)


def _not_llm_server(base_url: str, exc: LMStudioError) -> TargetSetupError:
    return TargetSetupError(
        f"target {base_url} is not an OpenAI-compatible LLM server "
        f"(GET /v1/models gave no model list): {exc}", reason="not-llm-server",
        base_url=base_url)


def chat_model_ids(listing: list[ModelInfo]) -> tuple[str, ...]:
    """The models that chat: typed ones of type llm/vlm; untyped (OpenAI listing) ones too."""
    return tuple(m.id for m in listing if (m.type or "llm") in CHAT_TYPES)


def check_models(base_url: str, wanted: tuple[str, ...], listed: tuple[str, ...]
                 ) -> tuple[str, ...]:
    """The models to use: ``wanted`` if every one is listed, else the listed chat models.

    Raises ``TargetSetupError`` naming each unknown model with the closest listed ids, before
    any test runs, so a typo is one line and not a page of failed tests.
    """
    if not listed:
        raise TargetSetupError(f"target {base_url} lists no chat models (GET /v1/models): "
                               "load or download one", reason="no-models", base_url=base_url)
    unknown = [m for m in wanted if m not in listed]
    if unknown:
        parts = []
        for name in unknown:
            closest = difflib.get_close_matches(name, listed, n=3, cutoff=0.3) or list(listed[:3])
            parts.append(f"{name!r} (closest: {', '.join(closest)})")
        raise TargetSetupError(f"target {base_url} has no model {'; '.join(parts)}",
                               reason="unknown-model", base_url=base_url)
    return wanted or listed


def discover(base_url: str, api_token: str | None = None, models: tuple[str, ...] = (),
             *, generate: bool = True, timeouts: Timeouts | None = None) -> ServerProfile:
    """Probe a server. ``generate=False`` stops after the listings (no tokens generated)."""
    timeouts = timeouts or probe_timeouts()
    listing, needs_token = list_openai_models(base_url, api_token)
    findings = [Finding("openai", True, f"GET /v1/models: {len(listing)} models"),
                Finding("auth", needs_token, "a request without a token is refused (401)"
                        if needs_token else "no token required")]
    with Client(base_url, api_token=api_token, retry=RetryPolicy.none(),
                timeout=timeouts) as client:
        richest = listing
        for name, call in (("native_v0", client.v0_models), ("native_v1", client.native_models)):
            found, models_seen = _optional_listing(name, call)
            findings.append(found)
            if found.present and models_seen and name == "native_v0":
                richest = models_seen  # v0 has types and loaded state
        v1 = next(f for f in findings if f.name == "native_v1")
        findings.append(Finding("load_unload", v1.present,
                                "POST /api/v1/models/load|unload (native v1)" if v1.present
                                else "no native v1 API to load or unload models with"))
        chosen = check_models(base_url, models, chat_model_ids(richest))
        samples: list[StreamSample] = []
        if generate:
            sample, stream_findings = _stream_probe(client, chosen[0])
            samples.append(sample)
            findings += stream_findings
            findings.append(_tools_probe(client, chosen[0]))
    capabilities = frozenset(f.name for f in findings if f.present)
    return ServerProfile(base_url, capabilities, tuple(richest), chosen, tuple(findings),
                         tuple(samples))


def _optional_listing(name: str, call: Callable[[], list[ModelInfo]]
                      ) -> tuple[Finding, list[ModelInfo]]:
    try:
        listed = call()
    except LMStudioError as exc:
        status = f"HTTP {exc.status}" if isinstance(exc, HTTPStatusError) else type(exc).__name__
        return Finding(name, False, f"absent ({status})"), []
    return Finding(name, True, f"{len(listed)} models"), listed


def stream_sample(client: Client, model: str, *, max_tokens: int = 24) -> StreamSample:
    """One short streamed answer, measured (raises the client's typed errors)."""
    started = time.perf_counter()
    first: float | None = None
    reasoning = False
    with client.stream_chat([{"role": "user", "content": "Count from 1 to 20, separated by "
                              "spaces."}], model=model, max_tokens=max_tokens, temperature=0,
                            seed=7) as stream:
        for event in stream:
            if isinstance(event, ReasoningDelta) and event.text:
                reasoning = True
            if first is None and isinstance(event, TextDelta | ReasoningDelta | ToolCallDelta):
                first = time.perf_counter() - started
        result = stream.result()
    total = time.perf_counter() - started
    usage = result.usage
    return StreamSample(model, first, total, result.timings.chunks,
                        usage.completion_tokens if usage else None, result.finish_reason,
                        usage is not None, reasoning or bool(result.reasoning))


def _stream_probe(client: Client, model: str) -> tuple[StreamSample, list[Finding]]:
    try:
        sample = stream_sample(client, model)
    except LMStudioError as exc:
        raise TargetSetupError(f"target {client.base_url} cannot stream an answer from "
                               f"{model}: {exc}", reason="not-llm-server",
                               base_url=client.base_url) from None
    return sample, [
        Finding("stream_usage", sample.usage, "usage chunk at the end of the stream"
                if sample.usage else "stream_options.include_usage gave no usage chunk"),
        Finding("reasoning", sample.reasoning, f"{model} streamed reasoning apart from text"
                if sample.reasoning else f"{model} streamed no reasoning field"),
    ]


def _tools_probe(client: Client, model: str) -> Finding:
    try:
        answer = client.chat([{"role": "user", "content": "What is the weather in Paris?"}],
                             model=model, tools=[PROBE_TOOL], max_tokens=64, temperature=0,
                             tool_choice={"type": "function",
                                          "function": {"name": "get_weather"}})
    except LMStudioError as exc:
        return Finding("tools", False, f"a request with tools failed: {exc}")
    if answer.tool_calls:
        return Finding("tools", True, f"{model} answered a forced call with tool_calls "
                                      f"({answer.tool_calls[0].name})")
    return Finding("tools", False, f"{model} answered a forced tool call with text "
                                   f"(finish_reason={answer.finish_reason})")
