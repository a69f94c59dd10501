"""Agent suite: the autonomous MCP tool loop against the emulator's scripted tool calls.

Closes the reference review's gaps: one failing MCP call no longer leaves the behaviour undefined
(``fail_fast`` and ``continue`` each checked when a server fails mid-run), a model change during a
run no longer reaches later rounds (the emulator's ground truth shows the model of every request),
and the autonomous flow runs end to end with real MCP servers (fixtures/mcp, over stdio and HTTP).

The model is the emulator: a ``[[tools: ...]]`` directive in the task scripts which tools it calls
in which round; after the last round it answers with every tool result it was given, so the final
text shows exactly what the agent fed back. The emulator is the plugin's ``target``; on any other
target (live, proxy, replay) a model cannot be scripted, so those tests skip and say why.

Servers that survive a test are shared by the module (start-up costs about a second); tests that
crash or refuse a server start their own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from harness.agent import (
    Agent,
    CallStatus,
    ErrorPolicy,
    MaxRoundsExceeded,
    McpConfigError,
    ModelCallFailed,
    RunDeadlineExceeded,
    RunLimits,
    ServerPool,
    ServerStartError,
    ToolCallFailed,
    UnknownServerError,
    load_mcp_config,
    open_servers,
    parse_mcp_config,
    run_agent,
)
from harness.client import AsyncClient
from harness.evaluate.support import require_emulator_behaviour
from harness.evaluate.target import Target, Truth
from harness.pytest_plugin import fast_retry, suite_timeouts

pytestmark = [pytest.mark.agent, pytest.mark.harness_api, pytest.mark.asyncio(loop_scope="module")]

SCRIPTED = "the model's choice of tool calls ([[tools: ...]] directives)"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mcp"
LIMITS = RunLimits(max_rounds=6, call_timeout=5.0, run_timeout=20.0, start_timeout=15.0)


def stdio(script: str, *args: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(FIXTURES / script), *args]}


def directive(*rounds: list[dict[str, Any]]) -> str:
    """The emulator's ``[[tools: ...]]`` directive. Indented JSON and a space before the closing
    brackets keep the JSON's own ``]]`` from ending the directive early."""
    return "[[tools: " + json.dumps(list(rounds), indent=1) + " ]]"


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


@pytest_asyncio.fixture(loop_scope="module")
async def aclient(target: Target) -> AsyncIterator[AsyncClient]:
    """The plugin's ``aclient``, opened in this module's event loop instead of the test's own:
    the ``shared`` servers' sessions live in that loop, and so must the client's connections."""
    require_emulator_behaviour(target, SCRIPTED)
    async with AsyncClient(target.base_url, model=target.model(0), api_token=target.api_token,
                           timeout=suite_timeouts(), retry=fast_retry()) as client:
        yield client


@pytest.fixture(scope="module")
def notes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notes")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(notes_root: Path, harness_target: Target) -> AsyncIterator[ServerPool]:
    """notes + calc + flaky over stdio, for tests that leave every server alive (not started
    when the target cannot script the model, as every test using them would skip).

    A holder task owns the pool: the servers' task groups must be exited by the task that
    entered them, and fixture setup and teardown may run in different tasks.
    """
    require_emulator_behaviour(harness_target, SCRIPTED)
    config = parse_mcp_config({"mcpServers": {
        "notes": stdio("notes.py", "--root", str(notes_root)),
        "calc": stdio("calculator.py"),
        "flaky": stdio("flaky.py"),
    }}, source="suite.mcp.json")
    ready: asyncio.Future[ServerPool] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        try:
            async with open_servers(config, limits=LIMITS) as pool:
                ready.set_result(pool)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    holder = asyncio.create_task(hold())
    pool = await ready
    yield pool
    stop.set()
    await holder


def agent(client: AsyncClient, pool: ServerPool, **options: Any) -> Agent:
    return Agent(client, pool, limits=options.pop("limits", LIMITS), **options)


def chat_requests(truth: Truth, since: int) -> list[dict[str, Any]]:
    return truth.records("/v1/chat/completions", since)


async def test_multi_server_run_records_every_call(
    aclient: AsyncClient, shared: ServerPool, truth: Truth, notes_root: Path
) -> None:
    before = truth.mark()
    task = "Add, note and echo. " + directive(
        [call("calc__add", a=2, b=3), call("notes__write", path="plan.txt", text="step one"),
         call("flaky__echo", text="ping")],
        [call("notes__read", path="plan.txt"), call("calc__multiply", a=4, b=2.5)],
    )
    started = time.monotonic()
    result = await agent(aclient, shared).run(task)
    wall = time.monotonic() - started

    calls = result.transcript.calls
    assert [(c.server, c.tool, c.status) for c in calls] == [
        ("calc", "add", CallStatus.OK), ("notes", "write", CallStatus.OK),
        ("flaky", "echo", CallStatus.OK), ("notes", "read", CallStatus.OK),
        ("calc", "multiply", CallStatus.OK),
    ]
    assert [c.output for c in calls] == ["5.0", "wrote 8 chars to plan.txt", "ping", "step one",
                                        "10.0"]
    assert calls[0].arguments == {"a": 2, "b": 3}
    assert (notes_root / "plan.txt").read_text() == "step one"
    assert result.text == ("Done after 2 round(s). Tool results: 5.0 | wrote 8 chars to plan.txt"
                           " | ping | step one | 10.0")
    assert [r.index for r in result.transcript.rounds] == [1, 2, 3]
    assert result.failures == [] and len(result.successes) == 5
    assert result.transcript.outcome == "completed"
    # Times are seconds since the run started: within the run, in order, never negative.
    assert 0 <= calls[0].started <= calls[-1].started <= result.transcript.elapsed <= wall
    assert all(0 <= c.duration <= result.transcript.elapsed for c in calls)
    # Every tool result went back to the model as a tool message answering its call id.
    tool_messages = [m for m in result.transcript.messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [c.call_id for c in calls]
    assert len(chat_requests(truth, before)) == 3


async def test_a_rounds_calls_run_concurrently(aclient: AsyncClient, shared: ServerPool) -> None:
    task = directive([call("flaky__slow", seconds=0.6, text="a"),
                      call("flaky__slow", seconds=0.6, text="b"),
                      call("flaky__slow", seconds=0.6, text="c")])
    result = await agent(aclient, shared).run(task)
    calls = result.transcript.calls
    assert [c.output for c in calls] == ["a", "b", "c"]
    # Order, not wall time (a busy machine stretches both): every call started before the
    # first one finished, which serial calls cannot do.
    first_end = min(c.started + c.duration for c in calls)
    starts = [round(c.started, 3) for c in calls]
    assert max(c.started for c in calls) < first_end, (
        f"calls started at {starts} s, the first ended at {first_end:.3f} s: not concurrent")


async def test_fail_fast_cancels_outstanding_calls_and_raises_with_transcript(
    aclient: AsyncClient, shared: ServerPool, truth: Truth, target: Target
) -> None:
    before = truth.mark()
    task = directive(
        [call("calc__add", a=1, b=1)],
        [call("flaky__slow", seconds=3, text="never"), call("flaky__fail", message="disk full"),
         call("calc__sqrt", x=16)],
        [call("calc__add", a=9, b=9)],
    )
    started = time.monotonic()
    with pytest.raises(ToolCallFailed) as info:
        await agent(aclient, shared, policy=ErrorPolicy.FAIL_FAST).run(task)
    elapsed = time.monotonic() - started

    error = info.value
    assert (error.server, error.tool) == ("flaky", "fail")
    assert error.arguments == {"message": "disk full"}
    assert "disk full" in error.cause and error.round_index == 2 and error.model == target.model(0)
    assert "server 'flaky'" in str(error) and "tool 'fail'" in str(error)
    assert '{"message": "disk full"}' in str(error)
    assert elapsed < 2.5, "the 3 s call was not cancelled"
    transcript = error.transcript
    assert transcript is not None and transcript.outcome == "failed"
    statuses = {c.public_name: c.status for c in transcript.rounds[1].calls}
    assert statuses["flaky__slow"] is CallStatus.CANCELLED
    assert statuses["flaky__fail"] is CallStatus.TOOL_ERROR
    assert transcript.rounds[0].calls[0].output == "2.0"  # the work before the failure is kept
    assert len(transcript.rounds) == 2 and len(chat_requests(truth, before)) == 2  # no round 3


async def test_continue_feeds_failures_back_and_returns_them_beside_successes(
    aclient: AsyncClient, shared: ServerPool
) -> None:
    task = directive(
        [call("flaky__fail", message="disk full"), call("calc__add", a=1, b=2)],
        [call("flaky__hang"), call("calc__divide", a=1, b=0), call("calc__sqrt", x=9)],
    )
    # 2 s per call: the hanging one must time out, the others answer in milliseconds, and a
    # busy 2-core machine once stretched one of those past 0.5 s
    limits = RunLimits(call_timeout=2.0, run_timeout=20.0)
    result = await agent(aclient, shared, policy=ErrorPolicy.CONTINUE, limits=limits).run(task)

    assert [(c.public_name, c.status) for c in result.failures] == [
        ("flaky__fail", CallStatus.TOOL_ERROR),
        ("flaky__hang", CallStatus.TIMEOUT),
        ("calc__divide", CallStatus.TOOL_ERROR),
    ]
    assert [c.output for c in result.successes] == ["3.0", "3.0"]
    assert "disk full" in result.text and "no answer within 2" in result.text
    assert "division by zero" in result.text
    assert result.transcript.outcome == "completed"


async def test_a_tool_error_without_a_message_is_still_an_error_with_a_reason(
    aclient: AsyncClient, shared: ServerPool
) -> None:
    result = await agent(aclient, shared, policy=ErrorPolicy.CONTINUE).run(
        directive([call("flaky__fail_silently")]))
    [failure] = result.failures
    assert failure.status is CallStatus.TOOL_ERROR
    assert failure.error == "tool reported an error"
    assert failure.output == "error: tool reported an error"


async def test_model_stays_pinned_while_the_clients_default_changes(
    aclient: AsyncClient, shared: ServerPool, truth: Truth, target: Target
) -> None:
    model, other_model = target.model(0), target.model(1)
    before = truth.mark()
    switched: list[int] = []

    def switch_after_round(record: Any) -> None:
        if record.index == 1:
            aclient.switch_model(other_model)
            switched.append(record.index)

    task = directive([call("calc__add", a=1, b=1)], [call("calc__add", a=2, b=2)],
                     [call("calc__add", a=3, b=3)])
    result = await agent(aclient, shared, on_round=switch_after_round).run(task)

    assert switched == [1] and aclient.model == other_model
    assert [r.model for r in result.transcript.rounds] == [model] * 4
    assert [r["model_requested"] for r in chat_requests(truth, before)] == [model] * 4
    # The switch did take effect for the client's other (new) calls: the test can fail.
    other = await aclient.chat([{"role": "user", "content": "hi"}], max_tokens=4)
    assert other.model == other_model


async def test_path_escaping_argument_is_refused(
    aclient: AsyncClient, shared: ServerPool, notes_root: Path
) -> None:
    secret = notes_root.parent / "secret.txt"
    secret.write_text("TOP SECRET")
    escape = call("notes__read", path=f"../{secret.name}")
    result = await agent(aclient, shared, policy=ErrorPolicy.CONTINUE).run(directive([escape]))
    [failure] = result.failures
    assert failure.status is CallStatus.TOOL_ERROR and "escapes the notes root" in failure.output
    assert "TOP SECRET" not in result.text

    refused = r"server 'notes', tool 'read'.*escapes the notes root"
    with pytest.raises(ToolCallFailed, match=refused):
        await agent(aclient, shared, policy=ErrorPolicy.FAIL_FAST).run(directive([escape]))


async def test_schema_failing_arguments_are_reported_back_not_crashed_on(
    aclient: AsyncClient, shared: ServerPool
) -> None:
    task = directive([call("calc__add", a="two", b=2), call("notes__write", path="x.txt")],
                     [call("calc__add", a=2, b=2)])
    # fail_fast on purpose: a model's bad arguments are not a server failure.
    result = await agent(aclient, shared, policy=ErrorPolicy.FAIL_FAST).run(task)
    rejected = result.rejected
    assert [c.public_name for c in rejected] == ["calc__add", "notes__write"]
    assert "a: 'two' is not of type 'number'" in rejected[0].output
    assert "'text' is a required property" in rejected[1].output
    assert result.successes[0].output == "4.0" and result.failures == []
    assert "is not of type 'number'" in result.text  # the model was told


async def test_unknown_tool_and_unknown_server(aclient: AsyncClient, shared: ServerPool,
                                               notes_root: Path) -> None:
    result = await agent(aclient, shared).run(directive([call("mail__send", to="x")]))
    [rejected] = result.rejected
    assert rejected.server is None and "unknown tool 'mail__send'" in rejected.output
    assert "calc__add" in rejected.output  # the model is told what exists

    config = parse_mcp_config({"mcpServers": {"calc": stdio("calculator.py")}},
                              source="suite.mcp.json")
    with pytest.raises(UnknownServerError, match=r"suite\.mcp\.json: mcpServers\.mail.*'calc'"):
        await run_agent(aclient, config, "task", servers=["calc", "mail"])


async def test_bad_config_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.mcp.json"
    path.write_text(json.dumps({"mcpServers": {"calc": {"command": sys.executable,
                                                        "args": "calculator.py"}}}))
    with pytest.raises(McpConfigError) as info:
        load_mcp_config(path)
    assert info.value.path == str(path) and info.value.field == "mcpServers.calc.args"


async def test_deadlines_and_max_rounds_bound_the_run(aclient: AsyncClient,
                                                      shared: ServerPool) -> None:
    hang = directive([call("flaky__hang")])
    limits = RunLimits(call_timeout=30.0, run_timeout=0.6)
    started = time.monotonic()
    with pytest.raises(RunDeadlineExceeded, match=r"0\.6s deadline during the tool calls") as late:
        await agent(aclient, shared, policy=ErrorPolicy.CONTINUE, limits=limits).run(hang)
    assert time.monotonic() - started < 1.5
    assert late.value.transcript is not None and late.value.transcript.outcome == "failed"
    assert "deadline" in (late.value.transcript.error or "")

    endless = directive(*[[call("flaky__echo", text=str(i))] for i in range(4)])
    with pytest.raises(MaxRoundsExceeded) as info:
        await agent(aclient, shared, limits=RunLimits(max_rounds=2)).run(endless)
    assert info.value.transcript is not None and len(info.value.transcript.calls) == 2


async def test_streaming_run_matches_the_plain_one(aclient: AsyncClient, shared: ServerPool,
                                                   truth: Truth) -> None:
    before = truth.mark()
    task = directive([call("calc__subtract", a=10, b=4), call("flaky__echo", text="s")])
    result = await agent(aclient, shared, stream=True).run(task)
    assert result.text == "Done after 1 round(s). Tool results: 6.0 | s"
    assert all(r["stream"] for r in chat_requests(truth, before))


@pytest.fixture(scope="module")
def http_calculator() -> Iterator[str]:
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "calculator.py"), "--http", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), line
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_server_crash_and_failed_start_under_continue(
    aclient: AsyncClient, http_calculator: str
) -> None:
    config = parse_mcp_config({"mcpServers": {
        "flaky": stdio("flaky.py"),
        "calc": {"url": http_calculator},
        "broken": stdio("flaky.py", "--fail-on-start"),
    }})
    task = directive(
        [call("flaky__crash"), call("calc__add", a=1, b=1)],
        [call("flaky__echo", text="anyone?"), call("broken__echo", text="x"),
         call("calc__add", a=2, b=2)],
    )
    started = time.monotonic()
    result = await run_agent(aclient, config, task, policy="continue", limits=LIMITS)

    assert [f.server for f in result.server_failures] == ["broken"]
    assert "refusing to start" in result.server_failures[0].error
    by_name = {(c.round, c.public_name): c for c in result.transcript.calls}
    assert by_name[(1, "flaky__crash")].status is CallStatus.DISCONNECTED
    assert by_name[(2, "flaky__echo")].status is CallStatus.DISCONNECTED
    assert by_name[(2, "flaky__echo")].duration < 0.5  # a dead server fails at once
    assert by_name[(2, "broken__echo")].status is CallStatus.REJECTED  # never offered
    assert [c.output for c in result.successes] == ["2.0", "4.0"]  # HTTP server kept working
    assert time.monotonic() - started < 10


async def test_failed_start_under_fail_fast_raises_with_transcript(aclient: AsyncClient) -> None:
    config = parse_mcp_config({"mcpServers": {
        "calc": stdio("calculator.py"), "broken": stdio("flaky.py", "--fail-on-start")}})
    with pytest.raises(ServerStartError) as info:
        await run_agent(aclient, config, directive([call("calc__add", a=1, b=1)]),
                        policy="fail_fast", limits=LIMITS)
    assert info.value.server == "broken" and "refusing to start" in str(info.value)
    assert info.value.transcript is not None
    assert info.value.transcript.server_failures[0].server == "broken"


async def test_model_call_failure_is_typed_and_keeps_the_transcript(
    aclient: AsyncClient, shared: ServerPool
) -> None:
    from harness.client.errors import LMStudioError

    with pytest.raises(ModelCallFailed) as info:
        await agent(aclient, shared, model="no-such/model").run(directive([call("calc__add")]))
    assert isinstance(info.value.__cause__, LMStudioError)
    assert "round 1" in str(info.value) and "no-such/model" in str(info.value)
    transcript = info.value.transcript
    assert transcript is not None and transcript.model == "no-such/model"
    assert transcript.outcome == "failed" and transcript.rounds == []
