"""The ``harness`` command.

Each subcommand imports its machinery inside the function body so that ``harness --help`` stays
fast and one area's heavy imports (Locust's gevent, the MCP SDK) never slow another's start-up.
Owners of an area add their command here as one small function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="harness",
    help="LM Studio Harness: evaluate, emulate, load-test and review LM Studio deployments.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """LM Studio Harness."""


@app.command()
def version() -> None:
    """Print the harness version."""
    from harness import __version__

    typer.echo(__version__)


@app.command()
def agent(
    mcp_config: Annotated[Path, typer.Option("--mcp-config", help=".mcp.json-style file")],
    task: Annotated[str, typer.Option("--task", help="what the agent should do")],
    model: Annotated[str | None, typer.Option(help="model (default: first listed LLM)")] = None,
    policy: Annotated[str, typer.Option(help="fail_fast | continue")] = "fail_fast",
    base_url: Annotated[str, typer.Option(envvar="LMSTUDIO_BASE_URL")] = "http://localhost:1234",
    out: Annotated[Path | None, typer.Option(help="JSON transcript path")] = None,
    server: Annotated[list[str] | None, typer.Option(help="only these servers")] = None,
    max_rounds: Annotated[int, typer.Option()] = 8,
    call_timeout: Annotated[float, typer.Option(help="seconds per tool call")] = 30.0,
    run_timeout: Annotated[float, typer.Option(help="seconds for the whole run")] = 300.0,
    stream: Annotated[bool, typer.Option("--stream/--no-stream")] = False,
) -> None:
    """Run an autonomous MCP tool loop on one task; print it and write a JSON transcript."""
    import os

    from harness.agent.command import run_command
    from harness.agent.policy import RunLimits

    try:
        limits = RunLimits(max_rounds=max_rounds, call_timeout=call_timeout,
                           run_timeout=run_timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    raise typer.Exit(run_command(
        mcp_config=mcp_config, task=task, model=model, policy=policy, base_url=base_url,
        out=out, servers=server, api_token=os.environ.get("LMSTUDIO_API_TOKEN"),
        limits=limits, stream=stream,
    ))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
