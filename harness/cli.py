"""The ``harness`` command.

Each subcommand imports its machinery inside the function body so that ``harness --help`` stays
fast and one area's heavy imports (Locust's gevent, the MCP SDK) never slow another's start-up.
Owners of an area add their command here as one small function.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from harness import inputs
from harness.inputs import EXIT_INTERNAL, EXIT_USAGE, InputError

if TYPE_CHECKING:
    from harness.faults import FaultPlan


def _input_error_types() -> tuple[type[BaseException], ...]:
    """The areas' "this file or value is wrong" errors (all ValueErrors with one-line text)."""
    from harness.agent.errors import McpConfigError
    from harness.faults import FaultPlanError
    from harness.load.scenario import ScenarioError
    from harness.review.errors import ReviewInputError
    from harness.studio.catalog import CatalogError

    return (InputError, CatalogError, FaultPlanError, ScenarioError, McpConfigError,
            ReviewInputError, UnicodeDecodeError, RecursionError)


def _one_line(exc: BaseException) -> str:
    from harness.reporting.escaping import visible
    from harness.secrets import redact

    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return visible(redact(text or type(exc).__name__))


# Click's control flow (--help, Exit, Abort) passes through untouched; its usage errors are
# printed as one line here. typer may vendor click, so the classes come from typer itself.
_CLICK_FLOW: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort)
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _HarnessGroup(TyperGroup):
    """Runs a command and turns user mistakes into ``error: <one line>`` and a known exit code
    (``harness.inputs``); anything else is an internal error, also one line, exit 70."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _CLICK_FLOW:
            raise
        except _CLICK_ERROR as exc:
            message = exc.format_message()  # type: ignore[attr-defined]
            typer.echo(f"error: {_one_line(ValueError(message))} (see --help)", err=True)
            raise typer.Exit(getattr(exc, "exit_code", EXIT_USAGE)) from None
        except Exception as exc:
            if os.environ.get("HARNESS_TRACEBACK") == "1":
                raise
            if isinstance(exc, _input_error_types()):
                typer.echo(f"error: {_one_line(exc)}", err=True)
                raise typer.Exit(EXIT_USAGE) from None
            typer.echo(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                       "(HARNESS_TRACEBACK=1 shows the traceback)", err=True)
            raise typer.Exit(EXIT_INTERNAL) from None


def _typer(**options: Any) -> typer.Typer:
    # Never show locals in a traceback: they hold the API token.
    return typer.Typer(cls=_HarnessGroup, pretty_exceptions_show_locals=False,
                       add_completion=False, **options)


app = _typer(
    name="harness",
    help="LM Studio Harness: evaluate, emulate, load-test and review LM Studio deployments.",
    no_args_is_help=True,
)


@app.callback()
def _root() -> None:
    """LM Studio Harness."""


@app.command()
def version() -> None:
    """Print the harness version."""
    from harness import __version__

    typer.echo(__version__)


BASE_URL_ENV = "LMSTUDIO_BASE_URL"  # the server's URL, for every command that talks to one

TokenOption = Annotated[str | None, typer.Option(
    "--api-token", show_default=False,
    help="Bearer token (visible in ps: prefer --api-token-file or $HARNESS_API_TOKEN).")]
TokenFileOption = Annotated[Path | None, typer.Option(
    "--api-token-file", show_default=False, help="Read the Bearer token from this file.")]


def _token(api_token: str | None, api_token_file: Path | None) -> str | None:
    from harness.secrets import resolve_token

    return resolve_token(api_token, api_token_file)


def _file(path: Path, what: str, option: str) -> Path:
    """An input file that exists and is UTF-8 text (checked before any area reads it)."""
    inputs.read_text(path, what, option=option)
    return path


def _count(value: int | None, option: str, *, minimum: int = 1) -> int | None:
    if value is not None and value < minimum:
        raise inputs.InputError(f"must be >= {minimum}, got {value}", option=option)
    return value


def _fault_plan(faults: Path | None) -> FaultPlan | None:
    """The ``--faults`` file as a plan (checked as a UTF-8 file first), or None."""
    if faults is None:
        return None
    from harness.faults import FaultPlan

    with inputs.reading("fault plan", faults, "--faults"):
        return FaultPlan.load(_file(faults, "fault plan", "--faults"))


def _url_host(host: str) -> str:
    """``host`` as it stands in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def _exposure_warning(host: str, what: str) -> None:
    """Binding anything but loopback is allowed, but never silently."""
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        typer.echo(f"warning: --host {host} exposes {what} to every machine that can reach this "
                   "one", err=True)


@app.command()
def agent(
    mcp_config: Annotated[Path, typer.Option("--mcp-config", help=".mcp.json-style file")],
    task: Annotated[str, typer.Option("--task", help="what the agent should do")],
    model: Annotated[str | None, typer.Option(help="model (default: first listed LLM)")] = None,
    policy: Annotated[str, typer.Option(help="fail_fast | continue")] = "fail_fast",
    base_url: Annotated[str, typer.Option(envvar=BASE_URL_ENV)] = "http://localhost:1234",
    out: Annotated[Path | None, typer.Option(help="JSON transcript path")] = None,
    server: Annotated[list[str] | None, typer.Option(help="only these servers")] = None,
    max_rounds: Annotated[int, typer.Option()] = 8,
    call_timeout: Annotated[float, typer.Option(help="seconds per tool call")] = 30.0,
    run_timeout: Annotated[float, typer.Option(help="seconds for the whole run")] = 300.0,
    stream: Annotated[bool, typer.Option("--stream/--no-stream")] = False,
    api_token: TokenOption = None,
    api_token_file: TokenFileOption = None,
) -> None:
    """Run an autonomous MCP tool loop on one task; print it and write a JSON transcript."""
    from harness.agent.command import run_command
    from harness.agent.config import load_mcp_config
    from harness.agent.policy import RunLimits

    with inputs.reading("MCP config", mcp_config, "--mcp-config"):
        load_mcp_config(_file(mcp_config, "MCP config", "--mcp-config"))
    inputs.base_url(base_url)
    _count(max_rounds, "--max-rounds")
    inputs.finite(call_timeout, "--call-timeout")
    inputs.finite(run_timeout, "--run-timeout")
    if out is not None:
        inputs.output_dir(out.parent, "--out")
    token = _token(api_token, api_token_file)
    try:
        limits = RunLimits(max_rounds=max_rounds, call_timeout=call_timeout,
                           run_timeout=run_timeout)
    except ValueError as exc:
        raise inputs.InputError(str(exc)) from None
    raise typer.Exit(run_command(
        mcp_config=mcp_config, task=task, model=model, policy=policy, base_url=base_url,
        out=out, servers=server, api_token=token, limits=limits, stream=stream,
    ))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback unless told)."),
    port: int = typer.Option(1234, help="Port (LM Studio's default is 1234)."),
    catalog: Path | None = typer.Option(None, help="Catalog JSON (default: packaged catalog)."),
    faults: Path | None = typer.Option(None, help="FaultPlan file (.toml or .json)."),
    api_token: TokenOption = None,
    api_token_file: TokenFileOption = None,
    control: bool = typer.Option(False, help="Expose /_harness/ truth and control endpoints "
                                             "and obey X-Harness-Fault headers."),
    jit: bool = typer.Option(True, help="Just-in-time model loading."),
    auto_evict: bool = typer.Option(True, help="Unload the previous JIT model on a JIT load."),
    evict_mode: str = typer.Option("cancel", help="cancel (LM Studio) or finish."),
    cutoff_style: str = typer.Option("done_no_finish", help="done_no_finish, error or drop."),
    parallel: int = typer.Option(4, help="Parallel slots per loaded instance."),
    preload: list[str] = typer.Option([], help="Model keys to load at start-up (repeatable)."),
    cors: bool = typer.Option(False, help="LM Studio's Enable CORS (lms server start --cors)."),
    overflow: str = typer.Option("error", help="Prompt over the context: error (LM Studio's "
                                 "400 / event: error) or empty (GGUF's empty completion)."),
    allow_per_request_mcp: bool = typer.Option(False, help="Allow per-request (ephemeral) MCP "
                                               "servers in /api/v1/chat integrations."),
    allow_local_mcp: bool = typer.Option(False, help="Let those be loopback/private URLs "
                                         "(LM Studio refuses them)."),
) -> None:
    """Run the embedded LM Studio emulator (requires the token from --api-token-file,
    --api-token or $HARNESS_API_TOKEN when one is given)."""
    from typing import get_args

    from harness.studio.app import create_app
    from harness.studio.catalog import load_catalog
    from harness.studio.engine import (
        CutoffStyle,
        Engine,
        EngineOptions,
        EvictMode,
        OverflowStyle,
    )
    from harness.studio.server import serve_forever

    inputs.bind_host(host)
    inputs.port(port)
    _count(parallel, "--parallel")
    for name, value, allowed in (("--evict-mode", evict_mode, get_args(EvictMode)),
                                 ("--cutoff-style", cutoff_style, get_args(CutoffStyle)),
                                 ("--overflow", overflow, get_args(OverflowStyle))):
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}",
                                     param_hint=name)
    token = _token(api_token, api_token_file)
    with inputs.reading("catalog", catalog or Path(), "--catalog"):
        models = load_catalog(_file(catalog, "catalog", "--catalog") if catalog else None)
    unknown = [key for key in preload if models.get(key) is None]
    if unknown:
        raise inputs.InputError(f"{', '.join(unknown)} not in the catalog; known: "
                                f"{', '.join(m.key for m in models.models)}", option="--preload")
    plan = _fault_plan(faults)
    options = EngineOptions(jit=jit, auto_evict=auto_evict, evict_mode=evict_mode,  # type: ignore[arg-type]
                            cutoff_style=cutoff_style, parallel=parallel,  # type: ignore[arg-type]
                            preload=tuple(preload), overflow=overflow,  # type: ignore[arg-type]
                            allow_ephemeral_mcp=allow_per_request_mcp,
                            allow_local_mcp=allow_local_mcp)
    engine = Engine(models, options)
    exposed = "the emulator's API" + (" and /_harness/ (truth, faults, reset)" if control else "")
    _exposure_warning(host, exposed + ("" if token else " without a token"))
    shown = _url_host(host)
    typer.echo(f"LM Studio emulator on http://{shown}:{port} (control={'on' if control else 'off'}"
               f", auth={'on' if token else 'off'})")
    serve_forever(create_app(engine, api_token=token, control=control, faults=plan, cors=cors),
                  host, port)


@app.command()
def proxy(
    upstream: str = typer.Option(..., help="Server to forward to, e.g. http://127.0.0.1:1234"),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(1235, help="Port of the proxy."),
    faults: Path | None = typer.Option(None, help="FaultPlan file (.toml or .json)."),
    control: bool = typer.Option(False, help="Expose /_harness/ truth and control endpoints "
                                             "and obey X-Harness-Fault headers."),
    api_token: TokenOption = None,
    api_token_file: TokenFileOption = None,
) -> None:
    """Run the fault-injecting streaming reverse proxy (the token, if given, guards /_harness/;
    API calls pass the client's Authorization through to the upstream)."""
    from harness.proxy import create_proxy_app
    from harness.studio.server import serve_forever

    inputs.base_url(upstream, "--upstream")
    inputs.bind_host(host)
    inputs.port(port)
    token = _token(api_token, api_token_file)
    plan = _fault_plan(faults)
    exposed = f"a proxy to {upstream}" + (" and its /_harness/ control" if control else "")
    _exposure_warning(host, exposed)
    shown = _url_host(host)
    typer.echo(f"fault proxy on http://{shown}:{port} -> {upstream} "
               f"(control={'on' if control else 'off'})")
    serve_forever(create_proxy_app(upstream, faults=plan, control=control, api_token=token),
                  host, port)


review_app = _typer(
    help="Multi-LLM review: run a roster of reviewer models over a change, or re-render a run.",
    invoke_without_command=True,
)
app.add_typer(review_app, name="review")


@review_app.callback()
def review(
    ctx: typer.Context,
    subject: Path = typer.Option(None, help="Subject: TOML, .diff/.patch or text file."),
    roster: Path = typer.Option(None, help="Roster TOML (default: the packaged 3-reviewer one)."),
    out: Path = typer.Option(Path("reports/out/review"), help="Output directory."),
    base_url: str = typer.Option("http://127.0.0.1:1234", envvar=BASE_URL_ENV,
                                 help="LM Studio (or emulator) URL."),
    api_token: TokenOption = None,
    api_token_file: TokenFileOption = None,
    name: str = typer.Option("review", help="Report file name (no directories)."),
    no_cache: bool = typer.Option(False, "--no-cache/--cache",
                                  help="Ignore and do not write the response cache."),
    quiet: bool = typer.Option(False, help="No live progress."),
) -> None:
    """Run every reviewer of the roster over SUBJECT and write Markdown, HTML and JSON."""
    if ctx.invoked_subcommand is not None:
        return
    from harness.review.cli_support import run_command

    if subject is None:
        raise typer.BadParameter("--subject is required (or use 'harness review render')")
    if subject.is_file():
        _file(subject, "subject", "--subject")
    if roster is not None:
        _file(roster, "roster", "--roster")
    inputs.base_url(base_url)
    inputs.output_dir(out)
    token = _token(api_token, api_token_file)
    raise typer.Exit(run_command(subject=subject, roster=roster, out=out, base_url=base_url,
                                 api_token=token, name=name, use_cache=not no_cache,
                                 progress=not quiet))


@review_app.command("render")
def review_render(
    source: Path = typer.Argument(..., help="run.json, a run directory, or a panel directory."),
    out: Path = typer.Option(Path("reports/out/review"), help="Output directory."),
    name: str = typer.Option("review", help="Report file name (no directories)."),
) -> None:
    """Re-render a report from a saved run or canned reviews, without calling any model."""
    from harness.review.cli_support import render_command

    inputs.output_dir(out)
    raise typer.Exit(render_command(source=source, out=out, name=name))


@app.command()
def evaluate(
    base_url: Annotated[str | None, typer.Option(
        help="live server to evaluate (default: the embedded emulator)")] = None,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports/out"),
    models: Annotated[str | None, typer.Option(help="comma-separated live models")] = None,
    via_proxy: Annotated[bool, typer.Option(
        "--via-proxy", help="put the fault proxy in front of --base-url")] = False,
    replay: Annotated[bool, typer.Option("--replay", help="replay recorded cassettes")] = False,
    suites: Annotated[Path | None, typer.Option(help="suites directory")] = None,
    select: Annotated[str | None, typer.Option("-k", help="pytest -k expression")] = None,
    api_token: TokenOption = None,
    api_token_file: TokenFileOption = None,
    subject: Annotated[list[str] | None, typer.Option(
        help="client to judge: harness (default), openai, litellm, module:factory; repeat to "
             "compare them in one matrix")] = None,
) -> None:
    """Run the evaluation suites against a target and write Markdown, HTML and JSON reports."""
    from harness.evaluate.command import run_evaluate

    if base_url is not None:  # "" is a mistake, not "the emulator"
        inputs.base_url(base_url)
    elif via_proxy:
        raise inputs.InputError("--via-proxy needs --base-url (the server to put it in front of)")
    inputs.output_dir(out)
    token = _token(api_token, api_token_file)
    raise typer.Exit(run_evaluate(
        base_url=base_url, out=out, models=models, via_proxy=via_proxy, replay=replay,
        suites=suites, select=select, api_token=token, subjects=tuple(subject or ())))


@app.command()
def check(
    base_url: Annotated[str, typer.Option(envvar=BASE_URL_ENV)] = "http://localhost:1234",
    model: Annotated[str | None, typer.Option(help="model for the streamed probe")] = None,
    timeout: Annotated[float, typer.Option(help="seconds per probe")] = 10.0,
    api_token: TokenOption = None,
    api_token_file: TokenFileOption = None,
) -> None:
    """Doctor for a live server: reachable, endpoints, models, a streamed answer, auth."""
    from harness.check import run_check

    inputs.base_url(base_url)
    inputs.finite(timeout, "--timeout")
    token = _token(api_token, api_token_file)
    raise typer.Exit(run_check(base_url, api_token=token, model=model, timeout=timeout))


@app.command()
def load(
    scenario: Annotated[Path, typer.Option(help="TOML scenario (fixtures/load/*.toml)")],
    base_url: Annotated[str, typer.Option(envvar=BASE_URL_ENV)] = "http://127.0.0.1:1234",
    users: Annotated[int | None, typer.Option(help="override users (open loop: the cap)")] = None,
    duration: Annotated[float | None, typer.Option(help="seconds per level")] = None,
    workers: Annotated[int, typer.Option(help="local Locust worker processes")] = 1,
    out: Annotated[Path | None, typer.Option(help="output directory")] = None,
    remote_workers: Annotated[int, typer.Option(help="extra workers joining from other "
                                                     "machines with --master-host")] = 0,
    master_bind_host: Annotated[str, typer.Option(help="master interface (0.0.0.0 for "
                                                       "remote workers)")] = "127.0.0.1",
    master_port: Annotated[int, typer.Option(help="master port (0: any free port)")] = 0,
    emulator: Annotated[bool, typer.Option(help="start a fresh emulator for the run at the "
                                                "scenario's [emulator] speed (ignores "
                                                "--base-url)")] = False,
    api_token: TokenOption = None,
    api_token_file: TokenFileOption = None,
) -> None:
    """Headless Locust load test with LLM metrics, SLO verdict and report.

    Exit: 0 pass, 1 SLO missed, 2 invalid, 3 run error, 4 target error, 130/143 interrupted."""
    from harness.load.runner import run_load_command
    from harness.load.scenario import load_scenario
    from harness.secrets import TOKEN_ENV

    with inputs.reading("scenario", scenario, "--scenario"):
        load_scenario(_file(scenario, "scenario", "--scenario"))
    inputs.base_url(base_url)
    _count(users, "--users")
    inputs.finite(duration, "--duration")
    _count(workers, "--workers", minimum=0)
    _count(remote_workers, "--remote-workers", minimum=0)
    if workers + remote_workers < 1:
        raise inputs.InputError("needs at least one worker (--workers or --remote-workers)")
    inputs.bind_host(master_bind_host, "--master-bind-host")
    inputs.port(master_port, "--master-port", allow_zero=True)
    if out is not None:
        inputs.output_dir(out)
    _exposure_warning(master_bind_host, "the Locust master (scenarios and results)")
    token = _token(api_token, api_token_file)
    if token:  # to the Locust workers by environment, never by argv
        os.environ[TOKEN_ENV] = token
    raise typer.Exit(run_load_command(
        scenario=scenario, base_url=base_url, users=users, duration=duration, workers=workers,
        out=out, remote_workers=remote_workers, master_bind_host=master_bind_host,
        master_port=master_port, emulator=emulator))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
