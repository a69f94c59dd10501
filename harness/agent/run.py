"""One call from a config file to a finished run: open the servers, run the task, stop them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from harness.agent.config import McpConfig
from harness.agent.errors import AgentError, ServerStartError
from harness.agent.loop import DEFAULT_SYSTEM_PROMPT, Agent, ChatClient, RoundHook
from harness.agent.policy import ErrorPolicy, RunLimits
from harness.agent.servers import ServerPool, open_servers
from harness.agent.transcript import AgentResult, ServerFailure, Transcript


async def run_agent(
    client: ChatClient,
    config: McpConfig,
    task: str,
    *,
    servers: list[str] | None = None,
    model: str | None = None,
    policy: ErrorPolicy | str = ErrorPolicy.FAIL_FAST,
    limits: RunLimits | None = None,
    stream: bool = False,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    chat_params: Mapping[str, Any] | None = None,
    on_round: RoundHook | None = None,
    on_servers: Callable[[ServerPool], None] | None = None,
) -> AgentResult:
    """Start ``servers`` (default: all enabled) from ``config``, run ``task``, stop them all.

    Errors before the run (a server that fails to start under ``fail_fast``) still carry a
    transcript, with the task, model, policy and server failures, so callers can always save one.
    """
    policy = ErrorPolicy(policy)
    limits = limits or RunLimits()
    pinned = model or client.model or ""
    try:
        async with open_servers(config, names=servers, policy=policy, limits=limits) as pool:
            if on_servers is not None:
                on_servers(pool)
            agent = Agent(
                client,
                pool,
                model=model,
                policy=policy,
                limits=limits,
                stream=stream,
                system_prompt=system_prompt,
                chat_params=chat_params or {},
                on_round=on_round,
            )
            return await agent.run(task)
    except AgentError as exc:
        if exc.transcript is None:
            exc.transcript = Transcript(
                task=task, model=pinned, policy=policy.value, outcome="failed", error=str(exc)
            )
            if isinstance(exc, ServerStartError):
                exc.transcript.server_failures.append(
                    ServerFailure(server=exc.server, phase="start", error=exc.cause)
                )
        raise
