"""Autonomous tool loop over MCP servers, with a defined error policy and a pinned model.

    from harness.agent import load_mcp_config, run_agent, ErrorPolicy, RunLimits
    result = await run_agent(client, load_mcp_config(".mcp.json"), "Add 2 and 3",
                             policy=ErrorPolicy.CONTINUE, limits=RunLimits(max_rounds=4))
    result.text, result.successes, result.failures, result.transcript

For several tasks over the same servers, ``open_servers`` once and build an ``Agent`` on the pool.
"""

from __future__ import annotations

from harness.agent.config import (
    HttpServer,
    McpConfig,
    StdioServer,
    load_mcp_config,
    parse_mcp_config,
)
from harness.agent.errors import (
    AgentError,
    MaxRoundsExceeded,
    McpConfigError,
    ModelCallFailed,
    RunDeadlineExceeded,
    ServerStartError,
    ToolCallFailed,
    UnknownServerError,
)
from harness.agent.loop import Agent
from harness.agent.policy import ErrorPolicy, RunLimits
from harness.agent.run import run_agent
from harness.agent.servers import ServerPool, open_servers
from harness.agent.tools import public_tool_name
from harness.agent.transcript import (
    AgentResult,
    CallRecord,
    CallStatus,
    RoundRecord,
    ServerFailure,
    Transcript,
)

__all__ = [
    "Agent",
    "AgentError",
    "AgentResult",
    "CallRecord",
    "CallStatus",
    "ErrorPolicy",
    "HttpServer",
    "MaxRoundsExceeded",
    "McpConfig",
    "McpConfigError",
    "ModelCallFailed",
    "RoundRecord",
    "RunDeadlineExceeded",
    "RunLimits",
    "ServerFailure",
    "ServerPool",
    "ServerStartError",
    "StdioServer",
    "ToolCallFailed",
    "Transcript",
    "UnknownServerError",
    "load_mcp_config",
    "open_servers",
    "parse_mcp_config",
    "public_tool_name",
    "run_agent",
]
