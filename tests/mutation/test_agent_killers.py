"""Tests written to kill the surviving mutants of ``harness.agent.policy`` and
``harness.agent.loop``.

policy: the limits' exact boundaries (one round and a tiny timeout are valid, zero is not) and
error messages that name the field and the value.

loop: whole transcripts (every call record field, rounds, messages fed back, the requests the
model got), exact times rounded to 4 places, exact error messages and the phase a deadline cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import harness.agent.loop as loop_module
from harness.agent import (
    Agent,
    AgentError,
    ErrorPolicy,
    MaxRoundsExceeded,
    ModelCallFailed,
    RoundRecord,
    RunDeadlineExceeded,
    ServerPool,
    ToolCallFailed,
    open_servers,
    parse_mcp_config,
)
from harness.agent.loop import DEFAULT_SYSTEM_PROMPT
from harness.agent.policy import RunLimits
from harness.client.errors import LMStudioError
from harness.client.models import ChatResult, ToolCall
from tests.agent.helpers import fixture_config, stdio

TIMEOUTS = ("call_timeout", "run_timeout", "start_timeout", "shutdown_timeout")


def test_the_smallest_valid_limits_are_accepted() -> None:
    timeouts: dict[str, Any] = {name: 0.5 for name in TIMEOUTS}
    limits = RunLimits(max_rounds=1, **timeouts)
    assert limits.max_rounds == 1 and limits.call_timeout == 0.5


@pytest.mark.parametrize("rounds", [0, -1])
def test_fewer_than_one_round_is_refused_by_name(rounds: int) -> None:
    with pytest.raises(ValueError, match=rf"max_rounds must be >= 1, got {rounds}"):
        RunLimits(max_rounds=rounds)


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_a_timeout_that_is_not_positive_is_refused_by_name(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be > 0 seconds, got {value}"):
        limit: dict[str, Any] = {name: value}
        RunLimits(**limit)


# -- harness.agent.loop --------------------------------------------------------------------------
# The model is scripted (every request it gets is kept), the MCP servers are the real fixture
# servers over stdio, and the loop's clock ticks by STEP on every read, so every "started",
# "duration" and "elapsed" in a transcript is an exact number.

STEP = 0.123456789


class TickingClock:
    """``anyio.current_time`` for the loop: read n (from 0) returns 5000 + n * STEP."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        now = 5000.0 + self.reads * STEP
        self.reads += 1
        return now


def tick(reads: int) -> float:
    """What the loop records for a time ``reads`` clock reads after the run's start."""
    return round(reads * STEP, 4)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> TickingClock:
    ticking = TickingClock()
    fake = SimpleNamespace(
        current_time=ticking,
        move_on_after=anyio.move_on_after,
        create_task_group=anyio.create_task_group,
    )
    monkeypatch.setattr(loop_module, "anyio", fake)
    return ticking


Script = ChatResult | BaseException | float  # an answer, an error to raise, or seconds to hang


class ScriptedStream:
    def __init__(self, view: ScriptedView) -> None:
        self.view = view

    async def __aenter__(self) -> ScriptedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def result(self) -> ChatResult:
        return await self.view.answer()


class ScriptedView:
    def __init__(self, model: ScriptedModel, pinned: str | None) -> None:
        self.owner = model
        self.pinned = pinned

    async def answer(self) -> ChatResult:
        step = self.owner.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float):
            await anyio.sleep(step)
            raise AssertionError("the scripted model hung and was not cancelled")
        return step

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> ChatResult:
        self.owner.requests.append(("chat", self.pinned, list(messages), params))
        return await self.answer()

    def stream_chat(self, messages: list[dict[str, Any]], **params: Any) -> ScriptedStream:
        self.owner.requests.append(("stream_chat", self.pinned, list(messages), params))
        return ScriptedStream(self)


class ScriptedModel:
    """A ``ChatClient`` answering from ``script``; ``requests`` holds (method, model, messages,
    params) of every request, ``views`` the model of every ``with_options`` view."""

    def __init__(self, *script: Script, model: str | None = "default/model") -> None:
        self.model = model
        self.script = list(script)
        self.requests: list[tuple[str, str | None, list[dict[str, Any]], dict[str, Any]]] = []
        self.views: list[str | None] = []

    def with_options(self, *, model: str | None = None) -> ScriptedView:
        self.views.append(model)
        return ScriptedView(self, model or self.model)


def tool_calls(round_index: int, *calls: tuple[str, dict[str, Any] | str]) -> ChatResult:
    """An answer asking for ``calls`` (name, arguments: a dict, or the raw argument string)."""
    return ChatResult(
        text=f"calling tools in round {round_index}",
        model="served/model",
        finish_reason="tool_calls",
        tool_calls=[
            ToolCall(
                id=f"r{round_index}c{n}",
                name=name,
                arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
            )
            for n, (name, arguments) in enumerate(calls)
        ],
    )


def final(text: str, model: str = "served/model") -> ChatResult:
    return ChatResult(text=text, model=model, finish_reason="stop")



async def test_the_model_is_the_agents_else_the_clients_and_one_is_required() -> None:
    nobody = Agent(ScriptedModel(model=None), ServerPool([]))
    with pytest.raises(AgentError) as info:
        await nobody.run("who answers?")
    assert str(info.value) == "no model for the agent run: pass model= or give the client one"
    assert info.value.transcript is None

    client = ScriptedModel(final("hi", model=""), model="client/model")
    result = await Agent(client, ServerPool([]), system_prompt="be brief").run("hello")
    assert (result.text, result.model, result.transcript.model) == (
        "hi", "client/model", "client/model")
    assert client.views == ["client/model"]
    assert [r.model for r in result.transcript.rounds] == ["client/model"]
    assert client.requests == [("chat", "client/model", [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}], {})]



async def test_the_model_call_failing_names_round_and_model() -> None:
    cause = LMStudioError("the model went away")
    model = ScriptedModel(tool_calls(1, ("mail__send", {})), cause, model=None)
    agent = Agent(model, ServerPool([]), model="agent/model")
    with pytest.raises(ModelCallFailed) as info:
        await agent.run("fail in round 2")
    error = info.value
    assert str(error) == "model call failed in round 2 (model agent/model): the model went away"
    assert (error.round_index, error.model, error.__cause__) == (2, "agent/model", cause)
    transcript = error.transcript
    assert transcript is not None and (transcript.outcome, transcript.error) == (
        "failed", str(error))
    unknown = "unknown tool 'mail__send'; available tools: none"
    assert [c.output for c in transcript.calls] == [f"error: {unknown}"]
    assert transcript.calls[0].error == unknown and transcript.calls[0].status == "rejected"
    assert model.views == ["agent/model"]



async def test_the_run_deadline_names_the_phase_it_cut_and_keeps_the_transcript(
    clock: TickingClock,
) -> None:
    model = ScriptedModel(30.0)
    agent = Agent(model, ServerPool([]), limits=RunLimits(run_timeout=0.3), system_prompt=None)
    with anyio.fail_after(10):
        with pytest.raises(RunDeadlineExceeded) as info:
            await agent.run("think forever")
    error = info.value
    assert str(error) == (
        "agent run exceeded its 0.3s deadline during the model call of round 1")
    assert (error.deadline, error.phase) == (0.3, "the model call of round 1")
    transcript = error.transcript
    assert transcript is not None
    assert (transcript.outcome, transcript.error, transcript.final_text, transcript.elapsed) == (
        "failed", str(error), None, tick(1))
    assert transcript.rounds == [] and transcript.servers == []
    assert transcript.messages == [{"role": "user", "content": "think forever"}]
    # no tools offered: the request carries no tools and no tool_choice
    assert model.requests == [
        ("chat", "default/model", [{"role": "user", "content": "think forever"}], {})]



async def test_every_outcome_of_a_call_is_recorded_and_fed_back_exactly(
    notes_root: Path, clock: TickingClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedModel(
        tool_calls(1, ("calc__add", {"a": 2, "b": 3})),
        tool_calls(2, ("calc__add", {"a": "two", "b": 2})),
        tool_calls(3, ("mail__send", {"to": "x"})),
        tool_calls(4, ("flaky__fail_silently", "")),
        tool_calls(5, ("flaky__hang", {})),
        tool_calls(6, ("notes__read", {"path": "a.txt"})),
        tool_calls(7, ("flaky__crash", {})),
        final("", model=""),
    )
    limits = RunLimits(max_rounds=7, call_timeout=1.5, start_timeout=15.0)
    async with open_servers(fixture_config(notes_root), limits=limits) as pool:

        async def broken_answer(tool: str, arguments: dict[str, Any]) -> Any:
            raise RuntimeError(f"broken answer to {tool} {arguments}")

        monkeypatch.setattr(pool.connection("notes"), "call", broken_answer)
        agent = Agent(model, pool, model="agent/model", policy=ErrorPolicy.CONTINUE,
                      limits=limits, chat_params={"temperature": 0.0})
        with anyio.fail_after(30):
            result = await agent.run("do it all")
        offered = [t.public_name for t in pool.tools]
        openai_tools = pool.tools.openai_tools()

    assert offered[:4] == ["notes__write", "notes__read", "notes__list_notes", "calc__add"]
    unknown = f"unknown tool 'mail__send'; available tools: {', '.join(offered)}"
    schema = ("arguments for calc__add do not match its input schema: "
              "a: 'two' is not of type 'number'")
    timeout = "no answer within 1.5s (call_timeout)"
    broken = "RuntimeError: broken answer to read {'path': 'a.txt'}"
    lost = "server 'flaky' unavailable: connection lost (Connection closed)"

    def made(n: int, name: str, raw: str, **fields: Any) -> dict[str, Any]:
        return {"round": n, "call_id": f"r{n}c0", "public_name": name, "raw_arguments": raw,
                "started": tick(2 * n - 1), "duration": tick(1), **fields}

    calls = [
        made(1, "calc__add", '{"a": 2, "b": 3}', server="calc", tool="add",
             arguments={"a": 2, "b": 3}, status="ok", output="5.0", error=None),
        made(2, "calc__add", '{"a": "two", "b": 2}', server="calc", tool="add", arguments=None,
             status="rejected", output=f"error: {schema}", error=schema),
        made(3, "mail__send", '{"to": "x"}', server=None, tool=None, arguments=None,
             status="rejected", output=f"error: {unknown}", error=unknown),
        made(4, "flaky__fail_silently", "", server="flaky", tool="fail_silently", arguments={},
             status="tool_error", output="error: tool reported an error",
             error="tool reported an error"),
        made(5, "flaky__hang", "{}", server="flaky", tool="hang", arguments={},
             status="timeout", output=f"error: {timeout}", error=timeout),
        made(6, "notes__read", '{"path": "a.txt"}', server="notes", tool="read",
             arguments={"path": "a.txt"}, status="tool_error", output=f"error: {broken}",
             error=broken),
        made(7, "flaky__crash", "{}", server="flaky", tool="crash", arguments={},
             status="disconnected", output=f"error: {lost}", error=lost),
    ]
    transcript = result.transcript
    assert [c.model_dump(mode="json") for c in transcript.calls] == calls
    assert [r.model_dump(mode="json", exclude={"calls"}) for r in transcript.rounds] == [
        {"index": n, "model": "served/model", "finish_reason": "tool_calls",
         "text": f"calling tools in round {n}"} for n in range(1, 8)
    ] + [{"index": 8, "model": "agent/model", "finish_reason": "stop", "text": ""}]
    assert [len(r.calls) for r in transcript.rounds] == [1] * 7 + [0]
    assert result.text == "" and result.model == "agent/model"
    assert transcript.outcome == "completed" and transcript.final_text == ""
    assert transcript.error is None and transcript.elapsed == tick(15)
    assert (transcript.task, transcript.model, transcript.policy) == (
        "do it all", "agent/model", "continue")

    conversation: list[dict[str, Any]] = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "do it all"},
    ]
    expected_requests = []
    for n, call in enumerate(calls, start=1):
        expected_requests.append(("chat", "agent/model", list(conversation),
                                  {"tools": openai_tools, "tool_choice": "auto",
                                   "temperature": 0.0}))
        conversation.append({
            "role": "assistant", "content": f"calling tools in round {n}",
            "tool_calls": [{"id": f"r{n}c0", "type": "function", "function": {
                "name": call["public_name"], "arguments": call["raw_arguments"]}}],
        })
        conversation.append({"role": "tool", "tool_call_id": f"r{n}c0",
                             "content": call["output"]})
    expected_requests.append(("chat", "agent/model", list(conversation),
                              {"tools": openai_tools, "tool_choice": "auto",
                               "temperature": 0.0}))
    assert model.requests == expected_requests
    assert transcript.messages == [*conversation, {"role": "assistant", "content": ""}]
    assert model.views == ["agent/model"] and model.script == []



async def test_fail_fast_cancels_the_round_and_raises_with_every_field(
    notes_root: Path, clock: TickingClock
) -> None:
    model = ScriptedModel(
        tool_calls(1, ("calc__add", {"a": 1, "b": 1})),
        tool_calls(2, ("flaky__slow", {"seconds": 20, "text": "never"}),
                   ("flaky__fail", {"message": "disk full"})),
        final("not reached"),
    )
    seen: list[tuple[int, list[str]]] = []

    async def on_round(record: RoundRecord) -> None:
        await anyio.sleep(0)
        seen.append((record.index, [c.status.value for c in record.calls]))

    limits = RunLimits(max_rounds=3, start_timeout=15.0)
    async with open_servers(fixture_config(notes_root), limits=limits) as pool:
        agent = Agent(model, pool, limits=limits, on_round=on_round)
        with anyio.fail_after(10):
            with pytest.raises(ToolCallFailed) as info:
                await agent.run("fail fast")

    error = info.value
    cause = "Error executing tool fail: disk full"
    assert str(error) == (
        "tool call failed: server 'flaky', tool 'fail', arguments {\"message\": \"disk full\"}: "
        f"{cause} (round 2, model default/model)")
    assert (error.server, error.tool, error.arguments, error.cause) == (
        "flaky", "fail", {"message": "disk full"}, cause)
    assert (error.round_index, error.model) == (2, "default/model")
    transcript = error.transcript
    assert transcript is not None
    assert (transcript.outcome, transcript.error, transcript.final_text) == (
        "failed", str(error), None)
    # reads: 0 run start, 1-2 round 1's call, 3 slow starts, 4 fail starts, 5 fail ends,
    # 6 the cancelled record, 7 the end of the run
    assert transcript.elapsed == tick(7)
    cancelled = "cancelled: flaky__fail failed first (fail_fast)"
    assert [c.model_dump(mode="json") for c in transcript.rounds[1].calls] == [
        {"round": 2, "call_id": "r2c0", "public_name": "flaky__slow", "server": "flaky",
         "tool": "slow", "raw_arguments": '{"seconds": 20, "text": "never"}', "arguments": None,
         "status": "cancelled", "output": cancelled, "error": cancelled, "started": tick(6),
         "duration": 0.0},
        {"round": 2, "call_id": "r2c1", "public_name": "flaky__fail", "server": "flaky",
         "tool": "fail", "raw_arguments": '{"message": "disk full"}',
         "arguments": {"message": "disk full"}, "status": "tool_error",
         "output": f"error: {cause}", "error": cause, "started": tick(4), "duration": tick(1)},
    ]
    assert transcript.rounds[0].calls[0].output == "2.0" and len(transcript.rounds) == 2
    assert transcript.messages[-2:] == [
        {"role": "tool", "tool_call_id": "r2c0", "content": cancelled},
        {"role": "tool", "tool_call_id": "r2c1", "content": f"error: {cause}"},
    ]
    assert seen == [(1, ["ok"]), (2, ["cancelled", "tool_error"])]
    assert len(model.requests) == 2 and model.views == ["default/model"]



async def test_a_deadline_in_the_tool_calls_and_the_servers_in_the_transcript(
    clock: TickingClock,
) -> None:
    config = parse_mcp_config({"mcpServers": {
        "flaky": stdio("flaky.py"), "broken": stdio("flaky.py", "--fail-on-start")}})
    limits = RunLimits(call_timeout=30.0, run_timeout=1.0, start_timeout=15.0)
    model = ScriptedModel(tool_calls(1, ("flaky__hang", {})), final("not reached"))
    async with open_servers(config, policy=ErrorPolicy.CONTINUE, limits=limits) as pool:
        agent = Agent(model, pool, policy=ErrorPolicy.CONTINUE, limits=limits)
        with anyio.fail_after(10):
            with pytest.raises(RunDeadlineExceeded) as info:
                await agent.run("hang")
        summaries, failures = pool.summaries(), pool.start_failures

    error = info.value
    assert str(error) == "agent run exceeded its 1s deadline during the tool calls of round 1"
    assert (error.deadline, error.phase) == (1.0, "the tool calls of round 1")
    transcript = error.transcript
    assert transcript is not None
    assert (transcript.outcome, transcript.error, transcript.elapsed) == (
        "failed", str(error), tick(2))
    assert [s.name for s in summaries] == ["flaky"] and transcript.servers == summaries
    assert [f.server for f in failures] == ["broken"] and transcript.server_failures == failures
    assert [(r.index, r.calls) for r in transcript.rounds] == [(1, [])]



async def test_streamed_requests_carry_the_tools_and_keep_a_given_tool_choice() -> None:
    config = parse_mcp_config({"mcpServers": {"calc": stdio("calculator.py")}})
    limits = RunLimits(max_rounds=1, start_timeout=15.0)
    params = {"tool_choice": "required", "max_tokens": 64}
    async with open_servers(config, limits=limits) as pool:
        openai_tools = pool.tools.openai_tools()
        model = ScriptedModel(tool_calls(1, ("calc__multiply", {"a": 6, "b": 7})), final("42"))
        agent = Agent(model, pool, model="agent/model", limits=limits, stream=True,
                      chat_params=params)
        result = await agent.run("six times seven")

        endless = ScriptedModel(tool_calls(1, ("calc__add", {"a": 1, "b": 1})),
                                tool_calls(2, ("calc__add", {"a": 2, "b": 2})))
        with pytest.raises(MaxRoundsExceeded) as info:
            await Agent(endless, pool, model="agent/model", limits=limits).run("forever")

    assert result.text == "42" and [c.output for c in result.transcript.calls] == ["42.0"]
    sent = {"tools": openai_tools, "tool_choice": "required", "max_tokens": 64}
    assert [(method, pinned, request) for method, pinned, _, request in model.requests] == [
        ("stream_chat", "agent/model", sent)] * 2
    assert [len(messages) for _, _, messages, _ in model.requests] == [2, 4]
    assert model.requests[1][2][2:] == result.transcript.messages[2:4]
    assert params == {"tool_choice": "required", "max_tokens": 64}  # not changed in place

    error = info.value
    assert str(error) == "model agent/model still requested tools after 1 round(s) (max_rounds)"
    assert error.max_rounds == 1 and error.transcript is not None
    assert [len(r.calls) for r in error.transcript.rounds] == [1, 0]
    assert (error.transcript.outcome, error.transcript.error) == ("failed", str(error))
    assert [(method, request) for method, _, _, request in endless.requests] == [
        ("chat", {"tools": openai_tools, "tool_choice": "auto"})] * 2
