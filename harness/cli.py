"""The ``harness`` command.

Each subcommand imports its machinery inside the function body so that ``harness --help`` stays
fast and one area's heavy imports (Locust's gevent, the MCP SDK) never slow another's start-up.
Owners of an area add their command here as one small function.
"""

from __future__ import annotations

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
