"""Input rules checked before any I/O: base URLs, model ids, sampling parameters.

Why here and not at the server: LM Studio silently ignores unknown fields and answers a bad model
name with whatever model is loaded, so the only place a typo is caught reliably is the client.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness.client.errors import ValidationError

MAX_MODEL_ID_LENGTH = 256
# publisher/name, name@variant, name:N, custom identifiers; no whitespace or control characters.
_MODEL_ID = re.compile(
    r"^[A-Za-z0-9._\-+]+(?:/[A-Za-z0-9._\-+]+)*(?:@[A-Za-z0-9._\-?]+)?(?::\d+)?$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def normalize_base_url(base_url: str) -> str:
    """Return ``scheme://host[:port]`` with any trailing ``/v1`` removed.

    Accepting both ``http://host:1234`` and ``http://host:1234/v1`` and storing the root means a
    path such as ``/v1/chat/completions`` is never doubled into ``/v1/v1/...``, and native
    ``/api/v1/...`` paths hang off the same root.
    """
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValidationError("base_url", "must be a non-empty string such as http://localhost:1234")
    if _CONTROL.search(base_url) or any(ch.isspace() for ch in base_url.strip()):
        raise ValidationError("base_url", "must not contain whitespace or control characters")
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValidationError("base_url", f"scheme must be http or https, got {parts.scheme!r}")
    if not parts.hostname:
        raise ValidationError("base_url", "a host is required, e.g. http://localhost:1234")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("base_url", "credentials in the URL are not allowed; use api_token")
    if parts.query or parts.fragment:
        raise ValidationError("base_url", "must not carry a query string or fragment")
    try:
        parts.port  # noqa: B018 - property raises on a bad port
    except ValueError as exc:
        raise ValidationError("base_url", f"bad port: {exc}") from None
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    if ".." in path.split("/"):
        raise ValidationError("base_url", "path must not contain '..'")
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))


def validate_model_id(model: Any, field_name: str = "model") -> str:
    """Check an LM Studio model key: ``publisher/name``, ``name@q4_k_m``, ``name:2``."""
    if not isinstance(model, str):
        raise ValidationError(field_name, f"must be a string, got {type(model).__name__}")
    if not model:
        raise ValidationError(field_name, "must not be empty")
    if len(model) > MAX_MODEL_ID_LENGTH:
        raise ValidationError(field_name, f"longer than {MAX_MODEL_ID_LENGTH} characters")
    if _CONTROL.search(model):
        raise ValidationError(field_name, "contains control characters")
    if any(ch.isspace() for ch in model):
        raise ValidationError(field_name, f"contains whitespace: {model!r}")
    if ".." in model.split("/") or model.startswith("/") or "\\" in model:
        raise ValidationError(field_name, f"looks like a path traversal: {model!r}")
    if not _MODEL_ID.match(model):
        raise ValidationError(
            field_name,
            f"{model!r} is not an LM Studio model key (publisher/name, name@variant, name:N)",
        )
    return model


def model_base_name(model: str) -> str:
    """Reduce an id to what identifies the weights: no publisher, ``@variant`` or ``:N`` suffix.

    LM Studio answers ``qwen/qwen3-4b`` as ``qwen3-4b:2`` or ``qwen/qwen3-4b@q4_k_m``; all three
    are the same model, while ``gemma-3-1b:2`` answering for ``qwen/qwen3-4b`` is a substitution.
    """
    name = model.rsplit("/", 1)[-1]
    name = re.sub(r":\d+$", "", name)
    return name.split("@", 1)[0].lower()


def same_model(requested: str, answered: str) -> bool:
    return model_base_name(requested) == model_base_name(answered)


_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "repeat_penalty": (0.0, 10.0),
}
_POSITIVE_INTS = ("top_k", "ttl", "n")


def validate_params(params: Mapping[str, Any]) -> None:
    """Range-check the sampling parameters a caller may pass; each message names the field."""
    for name, (low, high) in _RANGES.items():
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(name, f"must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or not low <= value <= high:
            raise ValidationError(name, f"must be between {low:g} and {high:g}, got {value!r}")
    for name in ("max_tokens", "max_output_tokens"):
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(name, f"must be an integer, got {type(value).__name__}")
        if value == 0 or value < -1:
            raise ValidationError(name, f"must be positive (or -1 for unlimited), got {value}")
    for name in _POSITIVE_INTS:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValidationError(name, f"must be a positive integer, got {value!r}")
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValidationError("seed", f"must be an integer, got {type(seed).__name__}")
    stop = params.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise ValidationError("stop", "must be a string or a list of strings")
    fmt = params.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, Mapping) or fmt.get("type") not in ("json_schema", "text"):
            raise ValidationError(
                "response_format",
                "type must be 'json_schema' or 'text' (LM Studio rejects json_object)",
            )
        if fmt.get("type") == "json_schema" and not isinstance(fmt.get("json_schema"), Mapping):
            raise ValidationError("response_format.json_schema", "must be an object with a schema")
    tools = params.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise ValidationError("tools", "must be a list of tool definitions")
        for i, tool in enumerate(tools):
            if not isinstance(tool, Mapping) or not isinstance(tool.get("function"), Mapping):
                raise ValidationError(f"tools[{i}]", "must be {'type':'function','function':{...}}")
            if not isinstance(tool["function"].get("name"), str):
                raise ValidationError(f"tools[{i}].function.name", "must be a string")


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list | tuple) or not messages:
        raise ValidationError("messages", "must be a non-empty list of {'role', 'content'} objects")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ValidationError(f"messages[{i}]", f"must be an object, got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "tool", "developer"):
            raise ValidationError(f"messages[{i}].role", f"unknown role {role!r}")
        content = msg.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ValidationError(f"messages[{i}].content", "must be a string, a list or null")
        out.append(dict(msg))
    return out
