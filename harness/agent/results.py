"""MCP tool results as the text a chat model reads in a ``tool`` message."""

from __future__ import annotations

import json
from typing import Any

from mcp_types import CallToolResult


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind} {block.mime_type}, {len(block.data)} base64 chars]"
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        return str(text) if text is not None else f"[binary resource {resource.uri}]"
    if kind == "resource_link":
        return f"[resource {block.uri}]"
    return f"[{kind or type(block).__name__} content]"


def render_tool_result(result: CallToolResult) -> str:
    """Text blocks joined by newlines; structured content as JSON when there is no text."""
    parts = [_block_text(block) for block in result.content]
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, sort_keys=True)
    return "\n".join(parts)
