"""``harness check``: a fast doctor for a live LM Studio (or anything claiming to be one).

Why a doctor: most failures people report are set-up problems (server not started, wrong port,
auth switched on, no model downloaded, an endpoint missing in an older build). Five probes answer
those in a couple of seconds, each with a status and a one-line reason, through the same client
the suites use, so a problem seen here is the problem the application will see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console
from rich.table import Table

from harness.client import Client, ModelInfo, RetryPolicy, TextDelta, Timeouts
from harness.client.errors import (
    AuthenticationError,
    HTTPStatusError,
    LMStudioError,
    TransportError,
)
from harness.client.validation import normalize_base_url
from harness.reporting.terminal import console as safe_console
from harness.reporting.terminal import term

Status = Literal["ok", "warn", "fail", "skip"]
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@dataclass
class Probe:
    name: str
    status: Status
    detail: str


@dataclass
class CheckReport:
    base_url: str
    probes: list[Probe] = field(default_factory=list)
    models: list[ModelInfo] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.status == "fail" for p in self.probes)

    def add(self, name: str, status: Status, detail: str) -> Probe:
        probe = Probe(name, status, detail)
        self.probes.append(probe)
        return probe


def _auth_probe(report: CheckReport, base_url: str, api_token: str | None,
                timeouts: Timeouts) -> bool:
    """Whether the server wants a token, and whether ours works. Returns False on a hard stop.

    Asked without a token, through the client core, so an unreachable server reads as the
    client's typed one-line error (method, URL, attempt, host:port, phase).
    """
    status = 200
    with Client(base_url, retry=RetryPolicy.none(), timeout=timeouts) as anonymous:
        try:
            anonymous.list_models()
        except TransportError as exc:
            report.add("reachable", "fail", str(exc))
            return False
        except LMStudioError as exc:  # an answer, just not a model list (401, 404, HTML ...)
            # Only a 2xx body the client could not read carries no status.
            status = exc.status if exc.status is not None else 200
    report.add("reachable", "ok", f"GET {base_url}/v1/models answered HTTP {status}")
    if status != 401:
        report.add("auth", "ok", "no token required" + (" (the given token is not needed)"
                                                        if api_token else ""))
        return True
    if not api_token:
        report.add("auth", "fail", "the server requires an API token: set HARNESS_API_TOKEN "
                   "or use --api-token-file")
        return False
    return True


def run_probes(base_url: str, *, api_token: str | None = None, model: str | None = None,
               timeout: float = 10.0) -> CheckReport:
    base_url = normalize_base_url(base_url)
    report = CheckReport(base_url)
    timeouts = Timeouts(connect=min(timeout, 5.0), read=timeout, stream_idle=timeout,
                        deadline=max(timeout * 3, 30.0))
    if not _auth_probe(report, base_url, api_token, timeouts):
        return report
    with Client(base_url, api_token=api_token, retry=RetryPolicy.none(),
                timeout=timeouts) as client:
        if not any(p.name == "auth" for p in report.probes):
            try:
                client.list_models()
            except AuthenticationError as exc:
                report.add("auth", "fail", f"token refused: {exc}")
                return report
            report.add("auth", "ok", "token required and accepted")
        _endpoint_probes(report, client)
        if report.models:
            loaded = [m.id for m in report.models if _is_loaded(m)]
            if not any(m.state or m.loaded_instances for m in report.models):
                report.add("models", "ok", f"{len(report.models)} listed (the server does not "
                                           "say which are loaded)")
            else:
                report.add("models", "ok", f"{len(report.models)} listed, {len(loaded)} loaded"
                           + (f": {', '.join(loaded)}" if loaded
                              else " (JIT loads on first use)"))
        llm = _pick_model(report, model)
        if llm is None:
            report.add("stream", "skip" if model is None else "fail",
                       "no chat model to probe" if model is None else f"model {model} not listed")
            if not report.models:
                report.add("models", "fail", "the server lists no models")
            return report
        _stream_probe(report, client, llm)
    return report


def _endpoint_probes(report: CheckReport, client: Client) -> None:
    # The listing shown is the richest that answered with models: native v1 (loaded instances),
    # then OpenAI's, then native v0.
    probes: list[tuple[str, Callable[[], list[ModelInfo]], Status, int]] = [
        ("OpenAI  GET /v1/models", client.list_models, "fail", 1),
        ("native  GET /api/v0/models", client.v0_models, "warn", 2),
        ("native  GET /api/v1/models", client.native_models, "warn", 0),
    ]
    listings: dict[int, list[ModelInfo]] = {}
    for name, call, severity, preference in probes:
        try:
            started = time.perf_counter()
            models = call()
            elapsed = time.perf_counter() - started
        except TransportError as exc:
            report.add(name, "fail", str(exc))
            continue
        except HTTPStatusError as exc:
            if severity != "fail" and exc.status in (404, 405):
                # Optional: llama.cpp, vLLM, Ollama and gateways serve only the OpenAI API.
                report.add(name, "skip", f"absent (HTTP {exc.status}): not LM Studio, or one "
                                         "before this API; optional")
            else:
                report.add(name, severity, f"broken: {exc}")
            continue
        except LMStudioError as exc:
            report.add(name, severity, f"missing or broken (older LM Studio?): {exc}")
            continue
        report.add(name, "ok", f"{len(models)} models in {elapsed * 1000:.0f} ms")
        listings[preference] = models
    report.models = next((listings[p] for p in sorted(listings) if listings[p]), [])


def _is_loaded(info: ModelInfo) -> bool:
    return info.state == "loaded" or bool(info.loaded_instances)


def _pick_model(report: CheckReport, wanted: str | None) -> str | None:
    if wanted is not None:
        return wanted if any(m.id == wanted for m in report.models) else None
    llms = [m for m in report.models if (m.type or "llm") in ("llm", "vlm")]
    loaded = [m for m in llms if _is_loaded(m)]
    candidates = loaded or llms
    return candidates[0].id if candidates else None


def _stream_probe(report: CheckReport, client: Client, model: str) -> None:
    first: float | None = None
    started = time.perf_counter()
    try:
        with client.stream_chat([{"role": "user", "content": "Reply with the word OK."}],
                                model=model, max_tokens=16, temperature=0) as stream:
            for event in stream:
                if first is None and isinstance(event, TextDelta) and event.text:
                    first = time.perf_counter() - started
            result = stream.result()
    except LMStudioError as exc:
        report.add("stream", "fail", str(exc))
        return
    total = time.perf_counter() - started
    ttft = f"first token {first * 1000:.0f} ms, " if first is not None else ""
    report.add("stream", "ok", f"{model}: {ttft}{result.timings.chunks} chunks in "
                               f"{total * 1000:.0f} ms, finish_reason={result.finish_reason}, "
                               f"text={result.text[:40]!r}")


def render(report: CheckReport, console: Console) -> None:
    table = Table(title=f"harness check {term(report.base_url)}")
    table.add_column("Check")
    table.add_column("Status")
    table.add_column("Detail", overflow="fold")
    for probe in report.probes:
        table.add_row(term(probe.name), f"[{_STYLE[probe.status]}]{probe.status.upper()}",
                      term(probe.detail))
    console.print(table)
    if report.models:
        models = Table(title="Models")
        for column in ("Model", "Type", "State"):
            models.add_column(column)
        for info in report.models:
            state = info.state or ("loaded" if info.loaded_instances else "not-loaded")
            models.add_row(term(info.id), term(info.type or "-"), term(state))
        console.print(models)
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {sum(p.status == 'ok' for p in report.probes)} of "
                  f"{len(report.probes)} checks passed")


def run_check(base_url: str, *, api_token: str | None = None, model: str | None = None,
              timeout: float = 10.0, console: Console | None = None) -> int:
    """Print the doctor's findings; 0 when nothing failed, 1 otherwise."""
    import logging

    # The probes' own failures are the output; the client's retry warnings would repeat them.
    logging.getLogger("harness.client").addHandler(logging.NullHandler())
    console = console or safe_console()
    try:
        report = run_probes(base_url, api_token=api_token, model=model, timeout=timeout)
    except LMStudioError as exc:  # bad input, e.g. a malformed URL
        console.print(f"[bold red]cannot check {term(repr(base_url))}:[/] {term(exc)}")
        return 1
    render(report, console)
    return 0 if report.ok else 1
