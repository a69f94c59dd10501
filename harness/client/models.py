"""Typed results and stream events.

Results are pydantic models built once per call (cheap next to the HTTP round trip) and tolerant
of unknown fields, since LM Studio adds fields between versions. Stream events are slotted
dataclasses instead: one is made per chunk on the hot path, where pydantic would cost more than
the JSON decode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=False)


class Usage(_Tolerant):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0


class ToolCall(_Tolerant):
    id: str = ""
    name: str = ""
    arguments: str = ""
    type: str = "function"

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; raises ``ValueError`` naming the tool if not a JSON object."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"tool call {self.name!r}: arguments are not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r}: arguments must be a JSON object")
        return value

    def to_message(self) -> dict[str, Any]:
        """The OpenAI wire shape, to put back into an assistant message."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


class Timings(_Tolerant):
    """Measured by the client with a monotonic clock, in seconds from the request being sent.

    ``ttft`` is the first content, reasoning or tool-call delta: never a role-only or empty frame,
    never the arrival of headers. ``gaps`` are the times between successive content chunks.
    """

    ttft: float | None = None
    total: float = 0.0
    gaps: list[float] = Field(default_factory=list)
    chunks: int = 0


class ChatResult(_Tolerant):
    text: str = ""
    reasoning: str = ""
    model: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    id: str | None = None
    stats: dict[str, Any] | None = None
    # llama.cpp's server's own measurement of this answer (its ``timings`` object: prompt_ms,
    # predicted_ms, predicted_per_token_ms, ...), on the last chunk or the body; None elsewhere.
    engine_timings: dict[str, Any] | None = None

    def assistant_message(self) -> dict[str, Any]:
        """This answer as the assistant message to append to a conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [call.to_message() for call in self.tool_calls]
        return msg


class ModelInfo(_Tolerant):
    """One model as listed by ``/v1/models``, ``/api/v0/models`` or ``/api/v1/models``."""

    id: str
    type: str | None = None
    state: str | None = None
    publisher: str | None = None
    max_context_length: int | None = None
    loaded_instances: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def context_length(self) -> int | None:
        """The context in force: a loaded instance's (JIT loads often pick far less than the
        maximum), else the maximum."""
        for instance in self.loaded_instances:
            config = instance.get("config") if isinstance(instance, dict) else None
            if isinstance(config, dict) and isinstance(config.get("context_length"), int):
                return int(config["context_length"])
        return self.max_context_length

    @property
    def quantization_name(self) -> str | None:
        """``Q4_K_M`` from the native listing's ``{"name": ...}`` or v0's plain string."""
        quant = (self.model_extra or {}).get("quantization")
        if isinstance(quant, dict):
            return str(quant.get("name")) if quant.get("name") else None
        return str(quant) if quant else None


class Embeddings(_Tolerant):
    model: str = ""
    vectors: list[list[float]] = Field(default_factory=list)
    usage: Usage | None = None


class ResponseResult(_Tolerant):
    """``/v1/responses``: the text and the id to pass as ``previous_response_id`` next time."""

    id: str
    text: str = ""
    model: str = ""
    status: str | None = None
    usage: dict[str, Any] | None = None


@dataclass(slots=True, frozen=True)
class TextDelta:
    text: str
    kind = "text"


@dataclass(slots=True, frozen=True)
class ReasoningDelta:
    text: str
    kind = "reasoning"


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str
    kind = "tool_call"


@dataclass(slots=True, frozen=True)
class ProgressEvent:
    """Native ``/api/v1/chat`` progress: ``model_load.progress``, ``prompt_processing.progress``."""

    type: str
    progress: float
    data: dict[str, Any] = field(default_factory=dict)
    kind = "progress"


@dataclass(slots=True, frozen=True)
class ToolEvent:
    """A server-side tool call on ``/api/v1/chat`` (MCP integrations): ``tool_call.start``,
    ``.arguments``, ``.success`` (with ``output``) or ``.failure`` (with ``reason``)."""

    type: str
    tool: str | None
    arguments: dict[str, Any] | None = None
    output: str | None = None
    reason: str | None = None
    provider_info: dict[str, Any] | None = None
    kind = "tool_event"


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | ProgressEvent | ToolEvent
