"""``POST /v1/messages``: LM Studio's Anthropic-compatible endpoint (0.4.1+; what Claude Code
uses to talk to LM Studio), DOC ``1_developer/4_anthropic-compat``.

The request is Anthropic's Messages format (``model``, ``max_tokens``, ``messages`` with string
or block content, ``system``, ``tools`` with ``input_schema``, ``tool_choice``, ``stream``,
``stop_sequences``, ``thinking``); it is mapped onto the same ``ChatRequest`` as the OpenAI
endpoint, so the same deterministic reply, scripted tool calls and faults apply. The answer is
Anthropic's: ``message`` objects with ``thinking`` / ``text`` / ``tool_use`` blocks, and the
SSE sequence ``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``,
``message_delta``, ``message_stop``. Errors use Anthropic's envelope
``{"type": "error", "error": {"type", "message"}}``, in-stream too. LMSTUDIO_API.md §1.3 marks
pings, thinking blocks and the error shape here UNCONFIRMED: no ``ping`` is sent, reasoning
becomes a ``thinking`` block (with an empty ``signature``).
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping
from typing import Any

from harness.faults import ANTHROPIC
from harness.studio import encoding as enc
from harness.studio.app import Ctx
from harness.studio.engine import Instance
from harness.studio.generation import ChatRequest, Reply, plan_chat_reply
from harness.studio.handlers import Timing, Wire, _generate
from harness.studio.requests import BadRequest

_ALNUM = string.ascii_letters + string.digits
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def anthropic_error(status: int, message: str, kind: str = "") -> dict[str, Any]:
    """Anthropic's error envelope, its ``type`` chosen by status as Anthropic's API does."""
    return {"type": "error",
            "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}


def _message_id() -> str:
    return "msg_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if not isinstance(block, Mapping):
                raise BadRequest(f"{where}: each content block must be an object")
            if block.get("type") == "text":
                if not isinstance(block.get("text"), str):
                    raise BadRequest(f"{where}: a text block needs a string 'text'")
                parts.append(block["text"])
        return "\n".join(parts)
    raise BadRequest(f"{where}: content must be a string or an array of content blocks")


def to_chat_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Anthropic ``system`` + ``messages`` as OpenAI-style chat messages: ``tool_use`` blocks
    become assistant ``tool_calls``, ``tool_result`` blocks become ``tool`` messages."""
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        out.append({"role": "system", "content": _text(system, "system")})
    value = body.get("messages")
    if not isinstance(value, list) or not value:
        raise BadRequest("messages: Field required and must be a non-empty array")
    for i, message in enumerate(value):
        where = f"messages.{i}"
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise BadRequest(f"{where}: each message needs role 'user' or 'assistant'")
        content = message.get("content")
        if content is None:
            raise BadRequest(f"{where}.content: Field required")
        blocks = content if isinstance(content, list) else []
        if message["role"] == "assistant":
            calls = [{"id": b.get("id", ""), "type": "function",
                      "function": {"name": b.get("name", ""),
                                   "arguments": json.dumps(b.get("input", {}))}}
                     for b in blocks if isinstance(b, Mapping) and b.get("type") == "tool_use"]
            entry: dict[str, Any] = {"role": "assistant", "content": _text(content, where)}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
            continue
        for block in blocks:
            if isinstance(block, Mapping) and block.get("type") == "tool_result":
                result = block.get("content", "")
                out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                            "content": _text(result, f"{where}.tool_result")})
        text = _text(content, f"{where}.content")
        if text or not blocks:
            out.append({"role": "user", "content": text})
    return out


def _chat_request(body: Mapping[str, Any]) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("max_tokens: Field required and must be a positive integer")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("stream: must be a boolean")
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadRequest("stop_sequences: must be an array of strings")
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(
            isinstance(t, Mapping) and isinstance(t.get("name"), str) for t in tools):
        raise BadRequest("tools: each tool needs a string 'name' (and an 'input_schema')")
    choice = body.get("tool_choice")
    if choice is not None and not (isinstance(choice, Mapping) and choice.get("type") in
                                   ("auto", "any", "tool", "none")):
        raise BadRequest("tool_choice: must be an object with type auto, any, tool or none")
    thinking = body.get("thinking")
    if thinking is not None and not (isinstance(thinking, Mapping)
                                     and thinking.get("type") in ("enabled", "disabled")):
        raise BadRequest("thinking: must be an object with type 'enabled' or 'disabled'")
    for name in ("temperature", "top_p"):
        if name in body and (isinstance(body[name], bool)
                             or not isinstance(body[name], (int, float))):
            raise BadRequest(f"{name}: must be a number")
    return ChatRequest(
        messages=tuple(to_chat_messages(body)), max_tokens=max_tokens, stop=tuple(stop),
        tools=tuple(tools), tool_choice=None if choice is None else
        ("none" if choice.get("type") == "none" else "required"),
        reasoning_on=not (thinking is not None and thinking.get("type") == "disabled"))


def _blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.reasoning:
        blocks.append({"type": "thinking", "thinking": reply.reasoning_text, "signature": ""})
    if reply.content or not reply.tool_calls:
        blocks.append({"type": "text", "text": reply.text})
    for call in reply.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                       "input": json.loads(call.arguments or "{}")})
    return blocks


def message_body(reply: Reply, model: str, mid: str) -> dict[str, Any]:
    return {
        "id": mid, "type": "message", "role": "assistant", "model": model,
        "content": _blocks(reply),
        "stop_reason": _STOP_REASONS.get(reply.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
    }


def message_frames(reply: Reply, model: str, mid: str) -> enc.Frames:
    """Anthropic's SSE event sequence for ``reply``, each frame due at its token step."""
    frames: list[bytes] = []
    steps: list[int] = []
    step = 0

    def add(name: str, data: dict[str, Any], at: int) -> None:
        frames.append(enc.native_event(name, data))
        steps.append(at)

    start = {**message_body(reply, model, mid), "content": [], "stop_reason": None,
             "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1}}
    add("message_start", {"message": start}, 0)
    for index, block in enumerate(_blocks(reply)):
        kind = block["type"]
        if kind == "thinking":
            add("content_block_start", {"index": index, "content_block":
                                        {"type": "thinking", "thinking": "", "signature": ""}},
                step)
            for tok in reply.reasoning:
                add("content_block_delta", {"index": index, "delta":
                                            {"type": "thinking_delta", "thinking": tok}}, step)
                step += 1
        elif kind == "text":
            add("content_block_start", {"index": index, "content_block":
                                        {"type": "text", "text": ""}}, step)
            for tok in reply.content:
                add("content_block_delta", {"index": index, "delta":
                                            {"type": "text_delta", "text": tok}}, step)
                step += 1
        else:
            add("content_block_start", {"index": index, "content_block":
                                        {**block, "input": {}}}, step)
            step += 1
            add("content_block_delta", {"index": index, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}, step)
            step += 1
        add("content_block_stop", {"index": index}, max(step - 1, 0))
    last = max(step - 1, 0)
    add("message_delta", {"delta": {"stop_reason": _STOP_REASONS.get(reply.finish_reason,
                                                                     "end_turn"),
                                    "stop_sequence": None},
                          "usage": {"output_tokens": reply.completion_tokens}}, last)
    add("message_stop", {}, last)
    return enc.Frames(tuple(frames), tuple(steps))


MESSAGES_WIRE = Wire(ANTHROPIC, anthropic_error)


async def messages(ctx: Ctx) -> int:
    request = _chat_request(ctx.body)
    mid = _message_id()

    def plan(inst: Instance) -> Reply:
        return plan_chat_reply(inst.spec, request, inst.speed.reply_tokens)

    def body_for(reply: Reply, inst: Instance, t: Timing) -> dict[str, Any]:
        return message_body(reply, inst.id, mid)

    return await _generate(
        ctx, plan=plan, wire=MESSAGES_WIRE, body_for=body_for,
        frames_for=lambda r, i, t: message_frames(r, i.id, mid),
    )
