"""The tool loop: ask the pinned model, run the round's tool calls concurrently, feed results back.

Why the model is pinned once: the reference agent re-read a shared "current model" for each
request, so a model change in the middle of a run made later rounds talk to another model. Here
the model is resolved when ``run`` starts and every request goes through a
``client.with_options(model=...)`` view; the client's default may change afterwards without
reaching this run.

Why the round's calls run in one task group: they are independent by construction (the model
issued them together), so they run concurrently, and a ``fail_fast`` failure can cancel the rest
by cancelling that one scope. Every call gets ``call_timeout``; the run has ``run_timeout``;
``max_rounds`` bounds the rounds, so nothing waits forever.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from harness.agent.errors import (
    AgentError,
    MaxRoundsExceeded,
    ModelCallFailed,
    RunDeadlineExceeded,
    ToolCallFailed,
)
from harness.agent.policy import ErrorPolicy, RunLimits
from harness.agent.results import render_tool_result
from harness.agent.servers import ServerPool, ServerUnavailable, describe_exception
from harness.agent.tools import ArgumentError, parse_arguments
from harness.agent.transcript import AgentResult, CallRecord, CallStatus, RoundRecord, Transcript
from harness.client.errors import LMStudioError

RoundHook = Callable[[RoundRecord], Awaitable[None] | None]

DEFAULT_SYSTEM_PROMPT = (
    "You are an autonomous agent. Use the provided tools to complete the task, then answer with "
    "the result. Tool names are prefixed with the server that provides them."
)


class ChatClient(Protocol):
    """The part of ``harness.AsyncClient`` the loop uses."""

    @property
    def model(self) -> str | None: ...

    def with_options(self, *, model: str | None = None) -> Any: ...


@dataclass
class Agent:
    """Runs tasks against ``servers`` with ``client``; one ``Agent`` may run several tasks."""

    client: ChatClient
    servers: ServerPool
    model: str | None = None
    policy: ErrorPolicy = ErrorPolicy.FAIL_FAST
    limits: RunLimits = field(default_factory=RunLimits)
    stream: bool = False
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    chat_params: Mapping[str, Any] = field(default_factory=dict)
    on_round: RoundHook | None = None

    async def run(self, task: str) -> AgentResult:
        """Run ``task`` to a final answer, or raise an ``AgentError`` carrying the transcript."""
        model = self.model or self.client.model
        if not model:
            raise AgentError("no model for the agent run: pass model= or give the client one")
        pinned = self.client.with_options(model=model)  # the one read of the client's default
        transcript = Transcript(
            task=task,
            model=model,
            policy=ErrorPolicy(self.policy).value,
            servers=self.servers.summaries(),
            server_failures=self.servers.start_failures,
        )
        if self.system_prompt:
            transcript.messages.append({"role": "system", "content": self.system_prompt})
        transcript.messages.append({"role": "user", "content": task})
        run = _Run(self, pinned, model, transcript, started=anyio.current_time())
        with anyio.move_on_after(self.limits.run_timeout) as deadline:
            try:
                text = await run.loop()
            except AgentError as exc:
                run.finish(outcome="failed", error=str(exc))
                exc.transcript = transcript
                raise
        if deadline.cancelled_caught:
            error = RunDeadlineExceeded(self.limits.run_timeout, run.phase, transcript=transcript)
            run.finish(outcome="failed", error=str(error))
            raise error
        run.finish(outcome="completed", final_text=text)
        return AgentResult(text=text, model=model, transcript=transcript)


class _Run:
    """The state of one run (kept off ``Agent`` so an agent can run tasks concurrently)."""

    def __init__(
        self, agent: Agent, pinned: Any, model: str, transcript: Transcript, started: float
    ) -> None:
        self.agent = agent
        self.pinned = pinned
        self.model = model
        self.transcript = transcript
        self.started = started
        self.phase = "start"
        self.tools = agent.servers.tools.openai_tools()

    def elapsed(self) -> float:
        return anyio.current_time() - self.started

    def finish(
        self, *, outcome: str, final_text: str | None = None, error: str | None = None
    ) -> None:
        self.transcript.outcome = outcome
        self.transcript.final_text = final_text
        self.transcript.error = error
        self.transcript.elapsed = round(self.elapsed(), 4)

    async def loop(self) -> str:
        limits = self.agent.limits
        for index in range(1, limits.max_rounds + 2):
            self.phase = f"the model call of round {index}"
            answer = await self.ask(index)
            record = RoundRecord(
                index=index,
                model=answer.model or self.model,
                finish_reason=answer.finish_reason,
                text=answer.text or "",
            )
            self.transcript.rounds.append(record)
            self.transcript.messages.append(answer.assistant_message())
            if not answer.tool_calls:
                return str(answer.text or "")
            if index > limits.max_rounds:
                raise MaxRoundsExceeded(limits.max_rounds, self.model)
            self.phase = f"the tool calls of round {index}"
            record.calls, failure = await self.run_round(index, answer.tool_calls)
            for call in record.calls:
                self.transcript.messages.append(
                    {"role": "tool", "tool_call_id": call.call_id, "content": call.output}
                )
            if self.agent.on_round is not None:
                outcome = self.agent.on_round(record)
                if inspect.isawaitable(outcome):
                    await outcome
            if failure is not None:
                raise ToolCallFailed(
                    server=failure.server or "?",
                    tool=failure.tool or failure.public_name,
                    arguments=failure.arguments
                    if failure.arguments is not None
                    else failure.raw_arguments,
                    cause=failure.error or failure.status.value,
                    round_index=index,
                    model=self.model,
                )
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    async def ask(self, index: int) -> Any:
        params: dict[str, Any] = dict(self.agent.chat_params)
        if self.tools:
            params.setdefault("tools", self.tools)
            params.setdefault("tool_choice", "auto")
        messages = list(self.transcript.messages)
        try:
            if not self.agent.stream:
                return await self.pinned.chat(messages, **params)
            async with self.pinned.stream_chat(messages, **params) as stream:
                return await stream.result()  # drains the stream
        except LMStudioError as exc:
            raise ModelCallFailed(index, self.model, exc) from exc

    async def run_round(
        self, index: int, calls: list[Any]
    ) -> tuple[list[CallRecord], CallRecord | None]:
        records: list[CallRecord | None] = [None] * len(calls)
        failure: CallRecord | None = None
        fail_fast = self.agent.policy is ErrorPolicy.FAIL_FAST

        async with anyio.create_task_group() as tg:

            async def one(position: int, call: Any) -> None:
                nonlocal failure
                record = await self.call(index, call)
                records[position] = record
                if fail_fast and record.status.is_failure and failure is None:
                    failure = record
                    tg.cancel_scope.cancel()

            for position, call in enumerate(calls):
                tg.start_soon(one, position, call)

        done: list[CallRecord] = []
        for position, record in enumerate(records):
            if record is None:
                assert failure is not None
                record = self.cancelled(index, calls[position], failure)
            done.append(record)
        return done, failure

    def cancelled(self, index: int, call: Any, failure: CallRecord) -> CallRecord:
        spec = self.agent.servers.tools.get(call.name)
        reason = f"cancelled: {failure.public_name} failed first (fail_fast)"
        return CallRecord(
            round=index,
            call_id=call.id,
            public_name=call.name,
            server=spec.server if spec else None,
            tool=spec.name if spec else None,
            raw_arguments=call.arguments,
            arguments=None,
            status=CallStatus.CANCELLED,
            output=reason,
            error=reason,
            started=round(self.elapsed(), 4),
        )

    async def call(self, index: int, call: Any) -> CallRecord:
        """Run one tool call; every outcome, failure included, becomes a record (never raises)."""
        started = self.elapsed()
        base: dict[str, Any] = {
            "round": index,
            "call_id": call.id,
            "public_name": call.name,
            "raw_arguments": call.arguments,
            "started": round(started, 4),
        }

        def record(
            status: CallStatus,
            output: str,
            *,
            error: str | None = None,
            server: str | None = None,
            tool: str | None = None,
            arguments: dict[str, Any] | None = None,
        ) -> CallRecord:
            return CallRecord(
                **base,
                server=server,
                tool=tool,
                arguments=arguments,
                status=status,
                output=output,
                error=error,
                duration=round(self.elapsed() - started, 4),
            )

        spec = self.agent.servers.tools.get(call.name)
        if spec is None:
            offered = ", ".join(t.public_name for t in self.agent.servers.tools) or "none"
            problem = f"unknown tool {call.name!r}; available tools: {offered}"
            return record(CallStatus.REJECTED, f"error: {problem}", error=problem)
        where: dict[str, Any] = {"server": spec.server, "tool": spec.name}
        try:
            arguments = parse_arguments(spec, call.arguments)
        except ArgumentError as exc:
            return record(CallStatus.REJECTED, f"error: {exc}", error=str(exc), **where)
        connection = self.agent.servers.connection(spec.server)
        timeout = self.agent.limits.call_timeout
        status, text = CallStatus.TIMEOUT, ""
        error: str | None = f"no answer within {timeout:g}s (call_timeout)"
        with anyio.move_on_after(timeout):
            try:
                result = await connection.call(spec.name, arguments)
            except ServerUnavailable as exc:
                status, error = (
                    CallStatus.DISCONNECTED,
                    f"server {spec.server!r} unavailable: {exc}",
                )
            except Exception as exc:  # MCP error or a broken answer: recorded, policy decides
                status, error = CallStatus.TOOL_ERROR, describe_exception(exc)
            else:
                text = render_tool_result(result)
                if result.is_error:
                    status, error = CallStatus.TOOL_ERROR, text or "tool reported an error"
                else:
                    status, error = CallStatus.OK, None
        if status is CallStatus.OK:
            return record(status, text, arguments=arguments, **where)
        return record(status, f"error: {error}", error=error, arguments=arguments, **where)
