"""MCP tools as the model sees them: namespaced OpenAI function schemas, and argument checks.

Why namespacing: two servers may both offer ``read``; the model must say which. The public name is
``<server>__<tool>`` made to fit OpenAI's ``^[a-zA-Z0-9_-]{1,64}$`` (LM Studio passes tool names
to templates that assume it). Names are looked up in a table, never split on ``__``, so server or
tool names that contain ``__`` or odd characters still route to the right place; an over-long or
colliding name gets a short stable hash suffix instead of silently shadowing another tool.

Why check arguments here: a model's malformed arguments are the model's mistake, not the
server's failure. They are answered with an error result the model can correct, under either
error policy, and the server never sees them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_NAME = 64
_HASH_LEN = 8


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:_HASH_LEN]


def public_tool_name(server: str, tool: str) -> str:
    """``server__tool`` made safe for OpenAI tool names (deterministic)."""
    safe_server = _UNSAFE.sub("_", server) or "_"
    safe_tool = _UNSAFE.sub("_", tool) or "_"
    name = f"{safe_server}__{safe_tool}"
    if name != f"{server}__{tool}" or len(name) > _MAX_NAME:
        # Sanitising or cutting loses information; a hash of the original keeps names distinct.
        suffix = "-" + _digest(server, tool)
        name = name[: _MAX_NAME - len(suffix)] + suffix
    return name


@dataclass(frozen=True)
class ToolSpec:
    """One tool of one server, with the name the model uses for it."""

    server: str
    name: str
    public_name: str
    description: str
    input_schema: dict[str, Any]
    validator: Validator | None = field(default=None, compare=False, repr=False)
    schema_problem: str | None = None

    def openai_schema(self) -> dict[str, Any]:
        description = f"[{self.server}] {self.description}".strip()
        return {
            "type": "function",
            "function": {
                "name": self.public_name,
                "description": description,
                "parameters": self.input_schema or {"type": "object", "properties": {}},
            },
        }


def make_tool_spec(
    server: str, name: str, description: str | None, input_schema: dict[str, Any] | None
) -> ToolSpec:
    """Build a spec; an invalid schema from the server is noted and not validated against."""
    schema = dict(input_schema or {"type": "object", "properties": {}})
    validator: Validator | None = None
    problem: str | None = None
    try:
        cls = validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema)
    except SchemaError as exc:
        problem = f"server published an invalid input schema: {exc.message}"
    return ToolSpec(
        server=server,
        name=name,
        public_name=public_tool_name(server, name),
        description=description or "",
        input_schema=schema,
        validator=validator,
        schema_problem=problem,
    )


class ArgumentError(ValueError):
    """The model's arguments for a tool are unusable; the message is written for the model."""


def parse_arguments(spec: ToolSpec, raw: str) -> dict[str, Any]:
    """Decode and validate the model's argument string against the tool's input schema."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise ArgumentError(
            f"arguments for {spec.public_name} are not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(value, dict):
        raise ArgumentError(
            f"arguments for {spec.public_name} must be a JSON object, got {type(value).__name__}"
        )
    if spec.validator is not None:
        errors = sorted(spec.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            problems = "; ".join(
                (f"{'/'.join(str(p) for p in e.absolute_path)}: " if e.absolute_path else "")
                + e.message
                for e in errors[:5]
            )
            raise ArgumentError(
                f"arguments for {spec.public_name} do not match its input schema: {problems}"
            )
    return value


class ToolTable:
    """Every offered tool, by public name."""

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._by_public: dict[str, ToolSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: ToolSpec) -> ToolSpec:
        if spec.public_name in self._by_public:
            other = self._by_public[spec.public_name]
            if (other.server, other.name) == (spec.server, spec.name):
                raise ValueError(f"tool {spec.name!r} of server {spec.server!r} listed twice")
            suffix = "-" + _digest(spec.server, spec.name, "dup")
            spec = ToolSpec(
                server=spec.server,
                name=spec.name,
                public_name=spec.public_name[: _MAX_NAME - len(suffix)] + suffix,
                description=spec.description,
                input_schema=spec.input_schema,
                validator=spec.validator,
                schema_problem=spec.schema_problem,
            )
        self._by_public[spec.public_name] = spec
        return spec

    def get(self, public_name: str) -> ToolSpec | None:
        return self._by_public.get(public_name)

    def __iter__(self) -> Any:
        return iter(self._by_public.values())

    def openai_tools(self) -> list[dict[str, Any]]:
        return [spec.openai_schema() for spec in self._by_public.values()]
