"""Every error the agent raises, in one tree.

    AgentError(Exception)               root; ``.transcript``: the run so far (None before one)
     ├── McpConfigError(ValueError)     the ``.mcp.json`` file is unreadable or malformed
     │    └── UnknownServerError        a server name that the file does not define
     ├── ServerStartError               an MCP server did not come up (spawn, handshake, listing,
     │                                  start-up deadline); raised under ``fail_fast``
     ├── ToolCallFailed                 a tool call failed under ``fail_fast``: tool error, per-call
     │                                  deadline, or the server disconnected; names server, tool,
     │                                  arguments and cause
     ├── ModelCallFailed                the chat request for a round failed (wraps the client error)
     ├── MaxRoundsExceeded              the model still asked for tools after the last allowed round
     └── RunDeadlineExceeded            the whole-run deadline passed

Why every error carries the transcript: the reference review's agent lost the calls that had
already run when one MCP call failed. Whoever catches an ``AgentError`` gets every round, call and
result up to the failure, and can write it out exactly like a successful run.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.agent.transcript import Transcript

_ARGUMENTS_SHOWN = 200


def show_arguments(arguments: Any) -> str:
    """Arguments as compact JSON for a one-line message, cut so a huge payload cannot flood it."""
    try:
        text = json.dumps(arguments, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(arguments)
    return text if len(text) <= _ARGUMENTS_SHOWN else text[: _ARGUMENTS_SHOWN - 1] + "…"


class AgentError(Exception):
    """Root of the agent's errors."""

    def __init__(self, message: str, *, transcript: Transcript | None = None) -> None:
        super().__init__(message)
        self.transcript = transcript


class McpConfigError(AgentError, ValueError):
    """The MCP server file cannot be used; names the file and the offending field."""

    def __init__(self, path: str, field: str | None, problem: str) -> None:
        where = f"{path}: {field}" if field else path
        super().__init__(f"invalid MCP config {where}: {problem}")
        self.path = path
        self.field = field
        self.problem = problem


class UnknownServerError(McpConfigError):
    """A server was asked for by name and the config has no such entry."""

    def __init__(self, path: str, name: str, known: list[str]) -> None:
        listed = ", ".join(repr(k) for k in known) or "none"
        super().__init__(path, f"mcpServers.{name}", f"unknown server {name!r} (defined: {listed})")
        self.name = name
        self.known = known


class ServerStartError(AgentError):
    """An MCP server could not be started, initialised or listed."""

    def __init__(self, server: str, cause: str, *, transcript: Transcript | None = None) -> None:
        super().__init__(f"MCP server {server!r} failed to start: {cause}", transcript=transcript)
        self.server = server
        self.cause = cause


class ToolCallFailed(AgentError):
    """One tool call failed and the policy is ``fail_fast``."""

    def __init__(
        self,
        *,
        server: str,
        tool: str,
        arguments: Any,
        cause: str,
        round_index: int,
        model: str,
        transcript: Transcript | None = None,
    ) -> None:
        super().__init__(
            f"tool call failed: server {server!r}, tool {tool!r}, arguments "
            f"{show_arguments(arguments)}: {cause} (round {round_index}, model {model})",
            transcript=transcript,
        )
        self.server = server
        self.tool = tool
        self.arguments = arguments
        self.cause = cause
        self.round_index = round_index
        self.model = model


class ModelCallFailed(AgentError):
    """The model request of a round failed; ``__cause__`` is the client's typed error."""

    def __init__(
        self,
        round_index: int,
        model: str,
        cause: BaseException,
        *,
        transcript: Transcript | None = None,
    ) -> None:
        super().__init__(
            f"model call failed in round {round_index} (model {model}): {cause}",
            transcript=transcript,
        )
        self.round_index = round_index
        self.model = model


class MaxRoundsExceeded(AgentError):
    """The model kept asking for tools after ``max_rounds`` rounds."""

    def __init__(
        self, max_rounds: int, model: str, *, transcript: Transcript | None = None
    ) -> None:
        super().__init__(
            f"model {model} still requested tools after {max_rounds} round(s) (max_rounds)",
            transcript=transcript,
        )
        self.max_rounds = max_rounds


class RunDeadlineExceeded(AgentError, TimeoutError):
    """The whole run took longer than its deadline; outstanding calls were cancelled."""

    def __init__(
        self, deadline: float, phase: str, *, transcript: Transcript | None = None
    ) -> None:
        super().__init__(
            f"agent run exceeded its {deadline:g}s deadline during {phase}", transcript=transcript
        )
        self.deadline = deadline
        self.phase = phase
