"""What happened in a run, as data: rounds, calls, results, failures.

One pydantic model serves the return value, the ``AgentError.transcript`` and the CLI's JSON file,
so a failed run can be inspected exactly like a successful one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CallStatus(StrEnum):
    OK = "ok"
    TOOL_ERROR = "tool_error"  # the server answered with isError
    TIMEOUT = "timeout"  # per-call deadline passed
    DISCONNECTED = "disconnected"  # the server went away (crash, closed connection, never started)
    REJECTED = "rejected"  # unknown tool or arguments failing its schema; the model's mistake
    CANCELLED = "cancelled"  # stopped by fail_fast after another call of the round failed

    @property
    def is_failure(self) -> bool:
        """Failures are what the error policy acts on; rejections are only reported back."""
        return self in (CallStatus.TOOL_ERROR, CallStatus.TIMEOUT, CallStatus.DISCONNECTED)


class CallRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    round: int
    call_id: str
    public_name: str
    server: str | None
    tool: str | None
    raw_arguments: str
    arguments: dict[str, Any] | None
    status: CallStatus
    output: str  # exactly what the model was given as the tool message content
    error: str | None = None
    started: float = 0.0  # seconds since the run started
    duration: float = 0.0


class ServerFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    server: str
    phase: str  # "start" (a shutdown problem is only logged: the run has ended by then)
    error: str


class RoundRecord(BaseModel):
    index: int
    model: str  # the model that answered this round's request
    finish_reason: str | None
    text: str
    calls: list[CallRecord] = Field(default_factory=list)


class ServerSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    transport: str
    target: str
    tools: list[str]


class Transcript(BaseModel):
    task: str
    model: str
    policy: str
    servers: list[ServerSummary] = Field(default_factory=list)
    server_failures: list[ServerFailure] = Field(default_factory=list)
    rounds: list[RoundRecord] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    final_text: str | None = None
    outcome: str = "running"  # "completed" | "failed"
    error: str | None = None
    elapsed: float = 0.0

    @property
    def calls(self) -> list[CallRecord]:
        return [call for r in self.rounds for call in r.calls]


class AgentResult(BaseModel):
    """A completed run. Under ``continue``, ``failures`` holds every failed call beside the
    ``successes``; ``rejected`` holds calls refused before reaching a server."""

    text: str
    model: str
    transcript: Transcript

    @property
    def successes(self) -> list[CallRecord]:
        return [c for c in self.transcript.calls if c.status is CallStatus.OK]

    @property
    def failures(self) -> list[CallRecord]:
        return [c for c in self.transcript.calls if c.status.is_failure]

    @property
    def rejected(self) -> list[CallRecord]:
        return [c for c in self.transcript.calls if c.status is CallStatus.REJECTED]

    @property
    def server_failures(self) -> list[ServerFailure]:
        return self.transcript.server_failures
