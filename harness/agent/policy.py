"""The agent's behaviour as small immutable values: what to do on failure, and how long to wait."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorPolicy(StrEnum):
    """What one failing MCP call (or server) does to the run.

    ``fail_fast``: the first failure cancels the round's outstanding calls and raises
    ``AgentError`` with the transcript so far. ``continue``: the failure becomes the tool result
    the model reads, is collected, and the run goes on.
    """

    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Bounds that make every run finish: nothing waits past one of these.

    ``max_rounds`` counts tool rounds; the model gets one more turn after the last to answer.
    ``call_timeout`` bounds one tool call, ``run_timeout`` the whole run (model and tools, not
    start-up), ``start_timeout`` each server's spawn + handshake + tool listing, and
    ``shutdown_timeout`` the wait for servers to exit before their tasks are cancelled.
    """

    max_rounds: int = 8
    call_timeout: float = 30.0
    run_timeout: float = 300.0
    start_timeout: float = 20.0
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")
        for name in ("call_timeout", "run_timeout", "start_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value}")
