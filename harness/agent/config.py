"""The ``.mcp.json`` file: which MCP servers exist and how to reach them.

The format is the ``mcpServers`` object that LM Studio, Claude Desktop and Claude Code read::

    {"mcpServers": {
        "notes": {"command": "python", "args": ["notes.py", "--root", "/tmp/n"],
                  "env": {"TOKEN": "${NOTES_TOKEN}"}, "cwd": "/srv"},
        "calc":  {"url": "http://127.0.0.1:8931/mcp", "headers": {"Authorization": "Bearer x"}}}}

A server with ``command`` runs over stdio; one with ``url`` over streamable HTTP. ``${VAR}`` and
``${VAR:-default}`` are expanded from the environment (as Claude Code does). Unknown keys inside a
server entry are errors, because a misspelt ``comand`` would otherwise silently start nothing.
Environment values and headers are ``SecretStr``: they often hold tokens, and a config object
must be safe to print or put in an error.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
)

from harness.agent.errors import McpConfigError, UnknownServerError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StdioServer(BaseModel):
    """A server started as a subprocess and spoken to over its stdin/stdout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["stdio"] | None = None
    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, SecretStr] = Field(default_factory=dict)
    cwd: str | None = None
    disabled: bool = False

    @property
    def transport(self) -> str:
        return "stdio"

    def describe(self) -> str:
        return " ".join([self.command, *self.args])


class HttpServer(BaseModel):
    """A server reached over MCP streamable HTTP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http", "streamable-http", "streamableHttp"] | None = None
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    disabled: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError(f"must be an http:// or https:// URL, got {url!r}")
        return url

    @property
    def transport(self) -> str:
        return "streamable-http"

    def describe(self) -> str:
        """The URL without userinfo or token-like query values (it ends up in transcripts)."""
        from harness.client.errors import redact

        return redact(re.sub(r"^(https?://)[^/@\s]*@", r"\1", self.url))


def _server_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        has_command, has_url = "command" in value, "url" in value
        if has_command != has_url:
            return "stdio" if has_command else "http"
    if isinstance(value, StdioServer | HttpServer):
        return "stdio" if isinstance(value, StdioServer) else "http"
    return None


ServerConfig = Annotated[
    Annotated[StdioServer, Tag("stdio")] | Annotated[HttpServer, Tag("http")],
    Discriminator(
        _server_kind,
        custom_error_type="server_kind",
        custom_error_message="a server needs exactly one of 'command' (stdio) or 'url' (HTTP)",
    ),
]


class McpConfig(BaseModel):
    """All servers of one file; ``source`` is where it came from, for error messages."""

    model_config = ConfigDict(frozen=True)

    mcpServers: dict[str, ServerConfig]  # the file's own key
    source: str = "<memory>"

    @field_validator("mcpServers")
    @classmethod
    def _names(cls, servers: dict[str, Any]) -> dict[str, Any]:
        for name in servers:
            if not name.strip():
                raise ValueError("server names must not be empty")
        return servers

    @property
    def servers(self) -> dict[str, StdioServer | HttpServer]:
        return dict(self.mcpServers)

    def select(self, names: list[str] | None = None) -> dict[str, StdioServer | HttpServer]:
        """The servers to run: the named ones (in order), or every enabled one."""
        if names is None:
            return {n: s for n, s in self.mcpServers.items() if not s.disabled}
        chosen: dict[str, StdioServer | HttpServer] = {}
        for name in names:
            if name not in self.mcpServers:
                raise UnknownServerError(self.source, name, sorted(self.mcpServers))
            chosen[name] = self.mcpServers[name]
        return chosen


def _expand(value: Any, where: str, source: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise McpConfigError(source, where, f"environment variable {name} is not set")

        return _VAR.sub(one, value)
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", source, environ) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}", source, environ) for k, v in value.items()}
    return value


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, part in enumerate(loc):
        # The discriminator's tag ("stdio"/"http") sits right after the server name; drop it.
        if i == 2 and loc[0] == "mcpServers" and part in ("stdio", "http"):
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts).lstrip(".")


def parse_mcp_config(
    data: Any, *, source: str = "<memory>", environ: Mapping[str, str] | None = None
) -> McpConfig:
    """Validate an already-decoded config; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise McpConfigError(
            source, None, f"top level must be a JSON object, got {type(data).__name__}"
        )
    if "mcpServers" not in data:
        raise McpConfigError(source, "mcpServers", 'missing (expected {"mcpServers": {...}})')
    env = os.environ if environ is None else environ
    expanded = _expand(data["mcpServers"], "mcpServers", source, env)
    try:
        return McpConfig.model_validate({"mcpServers": expanded, "source": source})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise McpConfigError(source, _field_path(first["loc"]), first["msg"]) from None


def load_mcp_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> McpConfig:
    """Read and validate an ``.mcp.json`` file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise McpConfigError(source, None, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise McpConfigError(
            source, None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return parse_mcp_config(data, source=source, environ=environ)
