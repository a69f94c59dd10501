"""``harness agent``: run one task against the servers of an ``.mcp.json`` file and keep a record.

Exit status: 0 when the run completed, 1 when it failed (the transcript is still written), 2 on bad
input (unreadable or malformed config, unknown server, invalid option).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.text import Text

from harness.agent.config import load_mcp_config
from harness.agent.errors import AgentError, McpConfigError
from harness.agent.policy import ErrorPolicy, RunLimits
from harness.agent.render import RunPrinter
from harness.agent.run import run_agent
from harness.agent.transcript import Transcript
from harness.client.errors import LMStudioError
from harness.reporting.terminal import console as safe_console


def default_transcript_path() -> Path:
    return Path("reports/out/agent") / time.strftime("transcript-%Y%m%d-%H%M%S.json")


def write_transcript(transcript: Transcript, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(transcript.model_dump(mode="json"), indent=2) + "\n", "utf-8")


async def _pick_model(client: object) -> str:
    """The first LLM the server lists; only used when ``--model`` is not given."""
    models = await client.list_models()  # type: ignore[attr-defined]
    for info in models:
        if "embed" not in info.id and (info.type in (None, "llm", "vlm")):
            return str(info.id)
    raise AgentError("no --model given and the server lists no LLM to use")


def run_command(
    *,
    mcp_config: Path,
    task: str,
    model: str | None,
    policy: str,
    base_url: str,
    out: Path | None,
    servers: list[str] | None,
    api_token: str | None,
    limits: RunLimits,
    stream: bool,
    console: Console | None = None,
) -> int:
    console = console or safe_console()
    try:
        chosen_policy = ErrorPolicy(policy)
    except ValueError:
        console.print(Text(f"--policy must be one of: fail_fast, continue (got {policy!r})", "red"))
        return 2
    try:
        config = load_mcp_config(mcp_config)
        config.select(servers or None)
    except McpConfigError as exc:
        console.print(Text(str(exc), style="red"))
        return 2
    printer = RunPrinter(console)
    path = out or default_transcript_path()

    async def main() -> Transcript:
        from harness.client.aio import AsyncClient

        async with AsyncClient(base_url, model=model, api_token=api_token) as client:
            chosen = model or await _pick_model(client)
            result = await run_agent(
                client,
                config,
                task,
                servers=servers or None,
                model=chosen,
                policy=chosen_policy,
                limits=limits,
                stream=stream,
                on_round=printer.round,
                on_servers=printer.servers,
            )
            return result.transcript

    try:
        transcript = anyio.run(main)
        code = 0
    except (AgentError, LMStudioError) as exc:
        transcript = getattr(exc, "transcript", None) or Transcript(
            task=task,
            model=model or "",
            policy=chosen_policy.value,
            outcome="failed",
            error=str(exc),
        )
        code = 1
    printer.finish(transcript)
    write_transcript(transcript, path)
    console.print(Text(f"transcript: {path}"))
    return code
