"""MCP server connections and the pool that starts and stops them together.

Why one task per server: the SDK's transports live in anyio task groups, which must be exited by
the task that entered them. Each server therefore gets a task that enters its ``mcp.Client``,
reports ready, waits for the stop signal and exits, while the agent calls tools from any task
through the session. Servers start concurrently (start-up is dominated by the child's imports), a
server that does not come up within ``start_timeout`` is cancelled, and on the way out every server
gets the stop signal, then ``shutdown_timeout``, then cancellation: the pool cannot leave a process
behind or hang, whatever happened inside it. The pool's own resources sit on an
``AsyncExitStack`` so that the unwinding order is explicit.

Each stdio server's stderr goes to a temporary file rather than the terminal; its tail is quoted in
start-up errors, which is usually the only place a crashing server explains itself.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, TextIO

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, CallToolResult, Implementation

from harness import __version__
from harness.agent.config import HttpServer, McpConfig, StdioServer
from harness.agent.errors import McpConfigError, ServerStartError
from harness.agent.policy import ErrorPolicy, RunLimits
from harness.agent.tools import ToolSpec, ToolTable, make_tool_spec
from harness.agent.transcript import ServerFailure, ServerSummary

log = logging.getLogger(__name__)

_STDERR_TAIL = 400
_MAX_LIST_PAGES = 50


class ServerUnavailable(Exception):
    """The server is not connected (never started, crashed or closed); says why."""


def describe_exception(exc: BaseException) -> str:
    """One line for any exception, unwrapping single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ServerConnection:
    """One MCP server over its whole life: start, tools, calls, stop."""

    def __init__(
        self,
        name: str,
        config: StdioServer | HttpServer,
        on_settled: Callable[[ServerConnection], None] | None = None,
    ) -> None:
        self.name = name
        self._on_settled = on_settled
        self.config = config
        self.tools: tuple[ToolSpec, ...] = ()
        self.start_error: str | None = None
        self.lost: str | None = None
        self._client: Client | None = None
        self._stderr: TextIO | None = None
        self._ready = anyio.Event()
        self._done = anyio.Event()
        self._stop = anyio.Event()
        self._scope = anyio.CancelScope()

    @contextmanager
    def capture_stderr(self) -> Iterator[None]:
        if isinstance(self.config, StdioServer):
            with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as f:
                self._stderr = f
                try:
                    yield
                finally:
                    self._stderr = None
        else:
            yield

    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            text = self._stderr.read()
        except (OSError, ValueError):
            return ""
        text = " ".join(text.split())
        return text[-_STDERR_TAIL:]

    async def _client_for(self, stack: AsyncExitStack) -> Client:
        info = Implementation(name="lmstudio-harness", version=__version__)
        if isinstance(self.config, StdioServer):
            params = StdioServerParameters(
                command=self.config.command,
                args=list(self.config.args),
                env={k: v.get_secret_value() for k, v in self.config.env.items()} or None,
                cwd=self.config.cwd,
            )
            errlog = self._stderr if self._stderr is not None else sys.stderr
            return Client(stdio_client(params, errlog=errlog), client_info=info, cache=None)
        http = await stack.enter_async_context(
            httpx2.AsyncClient(
                headers={k: v.get_secret_value() for k, v in self.config.headers.items()},
                timeout=httpx2.Timeout(30.0, read=300.0),
            )
        )
        transport = streamable_http_client(self.config.url, http_client=http)
        return Client(transport, client_info=info, cache=None)

    async def _list_tools(self, client: Client) -> tuple[ToolSpec, ...]:
        specs: list[ToolSpec] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            specs.extend(
                make_tool_spec(self.name, t.name, t.description, dict(t.input_schema or {}))
                for t in page.tools
            )
            cursor = page.next_cursor
            if cursor is None:
                break
        return tuple(specs)

    async def serve(self) -> None:
        """Run the connection until ``stop``; never raises (failures become attributes)."""
        with self._scope:
            try:
                async with AsyncExitStack() as stack:
                    client = await stack.enter_async_context(await self._client_for(stack))
                    self.tools = await self._list_tools(client)
                    self._client = client
                    self._settle()
                    await self._stop.wait()
                    self._client = None
            except Exception as exc:
                self._record(describe_exception(exc))
            finally:
                self._client = None
                self._settle()
                self._done.set()

    def _settle(self) -> None:
        if not self._ready.is_set():
            self._ready.set()
            if self._on_settled is not None:
                self._on_settled(self)

    def _record(self, problem: str) -> None:
        if self._ready.is_set():
            log.warning("MCP server %r did not shut down cleanly: %s", self.name, problem)
        elif self.start_error is None:
            tail = self.stderr_tail()
            self.start_error = f"{problem}; stderr: {tail}" if tail else problem

    def abort_start(self, reason: str) -> None:
        if not self._ready.is_set():
            self.start_error = reason
            self._settle()
            self._scope.cancel()

    def stop(self) -> None:
        self._stop.set()

    async def wait_done(self) -> None:
        await self._done.wait()

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call a tool; a dead connection raises ``ServerUnavailable`` instead of waiting."""
        client = self._client
        if client is None or self.lost is not None:
            raise ServerUnavailable(self.lost or self.start_error or "not connected")
        try:
            return await client.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self.lost = f"connection lost ({exc.message})"
                raise ServerUnavailable(self.lost) from exc
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            self.lost = f"connection lost ({type(exc).__name__})"
            raise ServerUnavailable(self.lost) from exc

    def summary(self) -> ServerSummary:
        return ServerSummary(
            name=self.name,
            transport=self.config.transport,
            target=self.config.describe(),
            tools=[t.name for t in self.tools],
        )


class ServerPool:
    """The running servers of one config, and the tools they offer, by public name."""

    def __init__(self, connections: list[ServerConnection]) -> None:
        self.connections = {c.name: c for c in connections}
        self.tools = ToolTable(t for c in connections if c.start_error is None for t in c.tools)

    @property
    def start_failures(self) -> list[ServerFailure]:
        return [
            ServerFailure(server=c.name, phase="start", error=c.start_error)
            for c in self.connections.values()
            if c.start_error is not None
        ]

    def summaries(self) -> list[ServerSummary]:
        return [c.summary() for c in self.connections.values() if c.start_error is None]

    def connection(self, name: str) -> ServerConnection:
        return self.connections[name]


async def _stop_all(connections: list[ServerConnection], tg: Any, timeout: float) -> None:
    with anyio.CancelScope(shield=True):
        for c in connections:
            c.stop()
        with anyio.move_on_after(timeout) as scope:
            for c in connections:
                await c.wait_done()
        if scope.cancelled_caught:
            stuck = [c.name for c in connections if not c._done.is_set()]
            log.warning("MCP servers %s did not stop within %gs; cancelling", stuck, timeout)
        tg.cancel_scope.cancel()


@asynccontextmanager
async def open_servers(
    config: McpConfig,
    *,
    names: list[str] | None = None,
    policy: ErrorPolicy = ErrorPolicy.FAIL_FAST,
    limits: RunLimits | None = None,
) -> AsyncIterator[ServerPool]:
    """Start the selected servers concurrently; stop all of them on exit, whatever happened.

    A server that fails to start raises ``ServerStartError`` under ``fail_fast`` (after the others
    are shut down); under ``continue`` it is left out and reported in ``pool.start_failures``.
    """
    limits = limits or RunLimits()
    selected = config.select(names)
    if not selected:
        raise McpConfigError(config.source, "mcpServers", "no (enabled) servers to run")
    settled_send, settled = anyio.create_memory_object_stream[ServerConnection](len(selected))
    connections = [
        ServerConnection(name, cfg, on_settled=settled_send.send_nowait)
        for name, cfg in selected.items()
    ]
    # Exceptions are carried out of the task group by hand: raised inside it they would surface
    # wrapped in an ExceptionGroup, and callers should catch ``ToolCallFailed``, not a group.
    error: Exception | None = None
    async with AsyncExitStack() as stack:
        for c in connections:
            stack.enter_context(c.capture_stderr())
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.push_async_callback(_stop_all, connections, tg, limits.shutdown_timeout)
        for c in connections:
            tg.start_soon(c.serve, name=f"mcp-server:{c.name}")
        stack.enter_context(settled_send)
        stack.enter_context(settled)
        first_failure: ServerConnection | None = None
        with anyio.move_on_after(limits.start_timeout):
            for _ in connections:
                settled_one = await settled.receive()
                if settled_one.start_error is not None and policy is ErrorPolicy.FAIL_FAST:
                    first_failure = settled_one
                    break  # no point waiting for the others: the run will not happen
        for c in connections:
            c.abort_start(
                f"start abandoned: server {first_failure.name!r} failed (fail_fast)"
                if first_failure is not None
                else f"did not start within {limits.start_timeout:g}s (start_timeout)"
            )
        pool = ServerPool(connections)
        failures = pool.start_failures
        if failures and policy is ErrorPolicy.FAIL_FAST:
            culprit = first_failure or pool.connection(failures[0].server)
            error = ServerStartError(culprit.name, culprit.start_error or "unknown")
        else:
            for failure in failures:
                log.warning("MCP server %r left out: %s", failure.server, failure.error)
            try:
                yield pool
            except Exception as exc:
                error = exc
    if error is not None:
        raise error
