"""The run as rich console output: servers, then each round's calls as they finish, then the end.

Everything that came from a model or a server is wrapped in ``Text`` so that rich never reads it
as markup (a tool result containing ``[red]`` is data, not styling).
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from harness.agent.servers import ServerPool
from harness.agent.transcript import CallStatus, RoundRecord, Transcript
from harness.reporting.terminal import term

_STYLE = {
    CallStatus.OK: "green",
    CallStatus.TOOL_ERROR: "red",
    CallStatus.TIMEOUT: "red",
    CallStatus.DISCONNECTED: "red",
    CallStatus.REJECTED: "yellow",
    CallStatus.CANCELLED: "dim",
}
_CELL = 80


def _cut(text: str, width: int = _CELL) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class RunPrinter:
    """Prints one run to ``console``; its methods are the agent's hooks."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def servers(self, pool: ServerPool) -> None:
        table = Table(title="MCP servers", title_justify="left")
        for column in ("server", "transport", "target", "tools"):
            table.add_column(column)
        for summary in pool.summaries():
            table.add_row(
                Text(summary.name),
                summary.transport,
                Text(_cut(summary.target, 60)),
                Text(", ".join(summary.tools)),
            )
        self.console.print(table)
        for failure in pool.start_failures:
            self.console.print(
                Text(f"server {failure.server!r} failed to start: {failure.error}", style="red")
            )

    def round(self, record: RoundRecord) -> None:
        table = Table(
            title=f"Round {record.index} · model {term(record.model)}", title_justify="left",
            expand=False,
        )
        for column in ("call", "tool", "arguments", "status", "s", "result"):
            table.add_column(column, overflow="fold")
        for call in record.calls:
            arguments = (
                json.dumps(call.arguments, ensure_ascii=False)
                if call.arguments is not None
                else call.raw_arguments
            )
            where = f"{call.server}/{call.tool}" if call.server else call.public_name
            table.add_row(
                Text(call.call_id),
                Text(where),
                Text(_cut(arguments, 40)),
                Text(call.status.value, style=_STYLE[call.status]),
                f"{call.duration:.2f}",
                Text(_cut(call.error or call.output)),
            )
        self.console.print(table)

    def finish(self, transcript: Transcript) -> None:
        calls = transcript.calls
        counts = {status: sum(c.status is status for c in calls) for status in CallStatus}
        summary = (
            f"{sum(1 for r in transcript.rounds if r.calls)} tool round(s), "
            f"{len(transcript.rounds)} model turn(s), {len(calls)} call(s): "
            f"{counts[CallStatus.OK]} ok, "
            f"{sum(counts[s] for s in CallStatus if s.is_failure)} failed, "
            f"{counts[CallStatus.REJECTED]} rejected, {counts[CallStatus.CANCELLED]} cancelled; "
            f"{len(transcript.server_failures)} server failure(s); {transcript.elapsed:.2f}s"
        )
        if transcript.outcome == "completed":
            body = Text(transcript.final_text or "")
            title = f"Answer ({term(transcript.model)})"
            self.console.print(Panel(body, title=title, style="green"))
        else:
            body = Text(transcript.error or "failed")
            self.console.print(Panel(body, title="Run failed", style="red"))
        self.console.print(Text(summary))
