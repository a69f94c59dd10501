"""Request validation with LM Studio's error strings (shape A: ``{"error": "<message>"}``).

LM Studio ignores unknown fields and answers wrong types with a 400 string error; the emulator
does the same and names the field, so a bad request is always a clear 400 and never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.studio.generation import ChatRequest


class BadRequest(Exception):
    """A 400 with a string ``error`` body, or with ``body`` when LM Studio sends an object."""

    def __init__(self, message: str, status: int = 400,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a :class:`BadRequest` for anything else.

    Every way a body can be wrong is a 400 in LM Studio's shape, never a 500: empty, not UTF-8,
    not JSON, nested deeper than the parser recurses (``RecursionError``), a number too large
    for a float, or not an object. Lone-surrogate escapes are kept as U+FFFD.
    """
    from harness.untrusted import scrub_data

    if not raw.strip():
        raise BadRequest("Request body is empty; expected a JSON object")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"Invalid JSON in request body: {exc}") from None
    except RecursionError:
        raise BadRequest("Invalid JSON in request body: nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest(f"Request body must be a JSON object, got {type(value).__name__}")
    cleaned: dict[str, Any] = scrub_data(value)
    return cleaned


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def opt(
    body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None
) -> Any:
    if name not in body or body[name] is None:
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"'{name}' must be of type {kinds[0].__name__}, got boolean")
    if not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise BadRequest(f"'{name}' must be of type {expected}, got {_type_name(value)}")
    return value


def stop_list(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise BadRequest("'stop' must be a string or an array of strings")


def max_tokens(body: Mapping[str, Any], name: str = "max_tokens") -> int | None:
    value = opt(body, name, int)
    if value is not None and value < -1:
        raise BadRequest(f"'{name}' must be -1 (unlimited) or a non-negative integer")
    return None if value == -1 else value


def ttl_seconds(body: Mapping[str, Any]) -> float | None:
    value = opt(body, "ttl", (int, float))
    if value is not None and value <= 0:
        raise BadRequest("'ttl' must be a positive number of seconds")
    return None if value is None else float(value)


def include_usage(body: Mapping[str, Any]) -> bool:
    options = opt(body, "stream_options", dict, {})
    return bool(options.get("include_usage", False))


def json_schema(body: Mapping[str, Any]) -> dict[str, Any] | None:
    fmt = opt(body, "response_format", dict)
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind != "json_schema":
        raise BadRequest("'response_format.type' must be 'json_schema' or 'text'")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise BadRequest("'response_format.json_schema.schema' must be an object")
    schema: dict[str, Any] = spec["schema"]
    return schema


def messages(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    if "messages" not in body:
        raise BadRequest("'messages' field is required")
    value = body["messages"]
    if not isinstance(value, list):
        raise BadRequest(f"'messages' must be an array, got {_type_name(value)}")
    if not value:
        raise BadRequest("'messages' array must not be empty")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise BadRequest(f"'messages[{i}]' must be an object, got {_type_name(message)}")
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool", "developer"):
            raise BadRequest(
                f"'messages[{i}].role' must be one of system, user, assistant, tool; got {role!r}"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(
                f"'messages[{i}].content' must be a string or an array, got {_type_name(content)}"
            )
        if role != "assistant" and not content:
            raise BadRequest(
                "'messages' array must only contain objects with a 'content' field that is "
                "not empty."
            )
    return tuple(value)


def tools(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    value = opt(body, "tools", list, [])
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise BadRequest(f"'tools[{i}]' must be an object")
    return tuple(value)


def chat_request(body: Mapping[str, Any], msgs: tuple[Mapping[str, Any], ...]) -> ChatRequest:
    opt(body, "stream", bool)
    opt(body, "temperature", (int, float))
    effort = opt(body, "reasoning_effort", str)
    allowed = ("none", "minimal", "low", "medium", "high", "xhigh")
    if effort is not None and effort not in allowed:
        message = (f"Invalid 'reasoning_effort' value: '{effort}'. Supported values: "
                   f"{', '.join(allowed)}.")
        # LM Studio's object-shaped error here (CAP ``extra/effort-qwen3.8-27b-off.sse``),
        # pretty-printed, and plain JSON even when the request asked for a stream.
        raise BadRequest(message, body={"error": {
            "message": message, "type": "invalid_request_error", "param": "reasoning_effort",
            "code": "invalid_value"}})
    return ChatRequest(
        messages=msgs,
        seed=opt(body, "seed", int),
        max_tokens=max_tokens(body),
        stop=stop_list(body),
        tools=tools(body),
        tool_choice=body.get("tool_choice"),
        json_schema=json_schema(body),
        reasoning_on=effort != "none",
    )


def responses_input(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``/v1/responses`` ``input`` (string or items) as chat messages."""
    if "input" not in body:
        raise BadRequest("'input' field is required")
    value = body["input"]
    if isinstance(value, str):
        if not value:
            raise BadRequest("'input' must not be empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRequest("'input' must be a non-empty string or array")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BadRequest(f"'input[{i}]' must be an object")
        kind = item.get("type", "message")
        if kind == "function_call_output":
            out.append({"role": "tool", "content": str(item.get("output", ""))})
        elif kind == "function_call":
            out.append({"role": "assistant", "content": "", "tool_calls": [item]})
        elif kind in ("message", "input_text", "text"):
            role = item.get("role", "user")
            if role not in ("system", "user", "assistant", "developer"):
                raise BadRequest(f"'input[{i}].role' must be one of system, user, assistant, "
                                 f"developer; got {role!r}")
            content = item.get("content", item.get("text", ""))
            if isinstance(content, list):
                content = "\n".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict)
                )
            if not isinstance(content, str):
                raise BadRequest(f"'input[{i}].content' must be a string or an array")
            out.append({"role": role, "content": content})
        else:
            raise BadRequest(f"'input[{i}].type' {kind!r} is not supported")
    return out
