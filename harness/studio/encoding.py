"""Wire formats: a planned ``Reply`` as LM Studio's JSON bodies and SSE frames.

Frames are built once, up front, as bytes (no per-chunk pydantic or dict building on the hot
path); each frame carries the index of the token step at which it is due, so the streamer only
has to wait for a deadline and write. Shapes follow LMSTUDIO_API.md (CAP captures of 0.4.24):
data-only frames, role on the first delta, ``{"content":""}`` before the finish chunk, the finish
chunk's empty delta, a ``choices:[]`` usage chunk only with ``include_usage``, then ``[DONE]``.
"""

from __future__ import annotations

import functools
import json
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from harness.faults import DONE_FRAME
from harness.studio.catalog import ModelSpec
from harness.studio.generation import Reply

DONE = DONE_FRAME
_ALNUM = string.ascii_lowercase + string.digits


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _alnum(n: int) -> str:
    value = secrets.randbits(6 * n)
    return "".join(_ALNUM[(value >> (6 * i)) % 36] for i in range(n))


def chat_id() -> str:
    return "chatcmpl-" + _alnum(20)


def completion_id() -> str:
    return "cmpl-" + _alnum(20)


@functools.lru_cache(maxsize=65536)
def _delta(field: str, token: str) -> bytes:
    """Encoded ``{"<field>":"<token>"}`` (vocabulary is small, so this cache hits)."""
    return _dumps({field: token}).encode()


def response_id() -> str:
    return "resp_" + secrets.token_hex(24)


@dataclass(frozen=True)
class Frames:
    """Precomputed frames and the token step (0-based) at which each is due.

    Tuples, not lists: they live as long as the stream, and the cyclic GC stops tracking a
    tuple of bytes or ints after one pass, where a thousand live lists were walked every pass.
    """

    frames: tuple[bytes, ...]
    steps: tuple[int, ...]


def usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": len(reply.reasoning)},
    }


def reasoning_field(spec: ModelSpec) -> str:
    return spec.reasoning or "reasoning_content"


# -- /v1/chat/completions ---------------------------------------------------------------------


def chat_body(reply: Reply, model: str, spec: ModelSpec, cid: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    message[reasoning_field(spec)] = reply.reasoning_text
    message["tool_calls"] = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in reply.tool_calls
    ]
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": usage(reply),
        "stats": {},
        "system_fingerprint": model,
    }


def chat_frames(
    reply: Reply, model: str, spec: ModelSpec, cid: str, created: int, include_usage: bool
) -> Frames:
    head = (
        f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{created},'
        f'"model":{_dumps(model)},"system_fingerprint":{_dumps(model)},'
        '"choices":[{"index":0,"delta":'
    ).encode()
    tail = b',"logprobs":null,"finish_reason":null}]}\n\n'
    frames: list[bytes] = []
    steps: list[int] = []
    step = 0
    rfield = reasoning_field(spec)

    def add(delta: dict[str, Any]) -> None:
        if not frames:
            delta = {"role": "assistant", **delta}
        frames.append(head + _dumps(delta).encode() + tail)
        steps.append(step)

    for field_name, tokens in ((rfield, reply.reasoning), ("content", reply.content)):
        for tok in tokens:
            if frames:
                frames.append(head + _delta(field_name, tok) + tail)
                steps.append(step)
            else:
                add({field_name: tok})
            step += 1
    for index, call in enumerate(reply.tool_calls):
        add(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        step += 1
        add(
            {
                "tool_calls": [
                    {"index": index, "type": "function", "function": {"arguments": call.arguments}}
                ]
            }
        )
        step += 1
    last = max(step - 1, 0)
    if not reply.tool_calls:
        add({"content": ""})
        steps[-1] = last
    finish = (
        head
        + b'{},"logprobs":null,"finish_reason":'
        + _dumps(reply.finish_reason).encode()
        + b"}]}\n\n"
    )
    frames.append(finish)
    steps.append(last)
    if include_usage:
        usage_chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": model,
            "choices": [],
            "usage": usage(reply),
        }
        frames.append(b"data: " + _dumps(usage_chunk).encode() + b"\n\n")
        steps.append(last)
    frames.append(DONE)
    steps.append(last)
    return Frames(tuple(frames), tuple(steps))


def v0_extras(reply: Reply, spec: ModelSpec, ttft_s: float, gen_s: float,
              context_length: int) -> dict[str, Any]:
    """The ``stats``, ``model_info`` and ``runtime`` objects of ``/api/v0`` non-stream replies."""
    return {
        "stats": {
            "tokens_per_second": round(reply.completion_tokens / gen_s, 3) if gen_s > 0 else 0.0,
            "time_to_first_token": round(ttft_s, 3),
            "generation_time": round(gen_s, 3),
            "stop_reason": "maxPredictedTokensReached"
            if reply.finish_reason == "length"
            else "eosFound",
        },
        "model_info": {
            "arch": spec.arch,
            "quant": spec.quantization,
            "format": spec.format,
            "context_length": context_length,
        },
        "runtime": {
            "name": "llama.cpp-emulated",
            "version": "1.0.0",
            "supported_formats": ["gguf"],
        },
    }


# -- /v1/completions ----------------------------------------------------------------------------


def completion_body(reply: Reply, model: str, cid: str, created: int) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "text": reply.text, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def completion_frames(
    reply: Reply, model: str, cid: str, created: int, include_usage: bool
) -> Frames:
    head = (
        f'data: {{"id":"{cid}","object":"text_completion","created":{created},'
        f'"model":{_dumps(model)},"choices":[{{"index":0,"text":'
    ).encode()
    frames = [head + _dumps(t).encode() + b',"logprobs":null,"finish_reason":null}]}\n\n'
              for t in reply.content]
    steps = list(range(len(frames)))
    last = max(len(frames) - 1, 0)
    frames.append(
        head + b'"","logprobs":null,"finish_reason":' + _dumps(reply.finish_reason).encode()
        + b"}]}\n\n"
    )
    steps.append(last)
    if include_usage:
        body = completion_body(reply, model, cid, created)
        chunk = {k: body[k] for k in ("id", "object", "created", "model")}
        chunk.update(choices=[], usage=body["usage"])
        frames.append(b"data: " + _dumps(chunk).encode() + b"\n\n")
        steps.append(last)
    frames.append(DONE)
    steps.append(last)
    return Frames(tuple(frames), tuple(steps))


# -- /v1/responses ------------------------------------------------------------------------------


def responses_body(
    reply: Reply,
    model: str,
    rid: str,
    created: int,
    previous: str | None,
    status: str = "completed",
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reply.reasoning:
        output.append(
            {
                "type": "reasoning",
                "id": "rs_" + rid[5:25],
                "summary": [],
                "content": [{"type": "reasoning_text", "text": reply.reasoning_text}],
            }
        )
    for call in reply.tool_calls:
        output.append(
            {
                "type": "function_call",
                "id": "fc_" + call.id,
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
        )
    if not reply.tool_calls:
        output.append(
            {
                "type": "message",
                "id": "msg_" + rid[5:29],
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": model,
        "output": output,
        "previous_response_id": previous,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": len(reply.reasoning)},
        },
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + _dumps({"type": name, **data}).encode() + b"\n\n"


def responses_frames(
    reply: Reply, model: str, rid: str, created: int, previous: str | None
) -> Frames:
    """OpenAI Responses streaming events (``event:`` + ``data:``, no ``[DONE]``)."""
    frames: list[bytes] = []
    steps: list[int] = []
    seq = 0
    step = 0

    def add(name: str, data: dict[str, Any], at: int) -> None:
        nonlocal seq
        frames.append(_event(name, {"sequence_number": seq, **data}))
        steps.append(at)
        seq += 1

    final = responses_body(reply, model, rid, created, previous)
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    add("response.created", {"response": start}, 0)
    add("response.in_progress", {"response": start}, 0)
    for index, item in enumerate(final["output"]):
        if item["type"] == "reasoning":
            add("response.output_item.added",
                {"output_index": index, "item": {**item, "content": []}}, step)
            for tok in reply.reasoning:
                add("response.reasoning_text.delta",
                    {"item_id": item["id"], "output_index": index, "content_index": 0,
                     "delta": tok}, step)
                step += 1
            add("response.reasoning_text.done",
                {"item_id": item["id"], "output_index": index, "content_index": 0,
                 "text": reply.reasoning_text}, max(step - 1, 0))
        elif item["type"] == "function_call":
            add("response.output_item.added",
                {"output_index": index, "item": {**item, "arguments": "", "status": "in_progress"}},
                step)
            step += 1
            add("response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": index, "delta": item["arguments"]}, step)
            add("response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": index, "arguments": item["arguments"]},
                step)
            step += 1
        else:
            empty_part = {"type": "output_text", "text": "", "annotations": []}
            add("response.output_item.added",
                {"output_index": index,
                 "item": {**item, "status": "in_progress", "content": []}}, step)
            add("response.content_part.added",
                {"item_id": item["id"], "output_index": index, "content_index": 0,
                 "part": empty_part}, step)
            for tok in reply.content:
                add("response.output_text.delta",
                    {"item_id": item["id"], "output_index": index, "content_index": 0,
                     "delta": tok, "logprobs": []}, step)
                step += 1
            last = max(step - 1, 0)
            add("response.output_text.done",
                {"item_id": item["id"], "output_index": index, "content_index": 0,
                 "text": reply.text, "logprobs": []}, last)
            add("response.content_part.done",
                {"item_id": item["id"], "output_index": index, "content_index": 0,
                 "part": item["content"][0]}, last)
        add("response.output_item.done", {"output_index": index, "item": item},
            max(step - 1, 0))
    add("response.completed", {"response": final}, max(step - 1, 0))
    return Frames(tuple(frames), tuple(steps))


# -- /api/v1/chat ------------------------------------------------------------------------------


def native_chat_body(
    reply: Reply,
    instance_id: str,
    rid: str | None,
    *,
    ttft_s: float,
    gen_s: float,
    load_time_s: float | None,
    tool_items: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """The ``/api/v1/chat`` result: reasoning, the server-side tool calls (``tool_call`` with
    their output, or ``invalid_tool_call``), then the message."""
    output: list[dict[str, Any]] = []
    if reply.reasoning:
        output.append({"type": "reasoning", "content": reply.reasoning_text})
    output.extend(tool_items)
    output.append({"type": "message", "content": reply.text})
    stats: dict[str, Any] = {
        "input_tokens": reply.prompt_tokens,
        "total_output_tokens": reply.completion_tokens,
        "reasoning_output_tokens": len(reply.reasoning),
        "tokens_per_second": round(reply.completion_tokens / gen_s, 3) if gen_s > 0 else 0.0,
        "time_to_first_token_seconds": round(ttft_s, 3),
    }
    if load_time_s is not None:
        stats["model_load_time_seconds"] = round(load_time_s, 3)
    body: dict[str, Any] = {"model_instance_id": instance_id, "output": output, "stats": stats}
    if rid is not None:
        body["response_id"] = rid
    return body


def native_event(name: str, data: dict[str, Any] | None = None) -> bytes:
    return _event(name, data or {})


def _tool_events(item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``tool_call.*`` events of one output item (DOC streaming-events.md)."""
    if item["type"] == "tool_call":
        who = {"tool": item["tool"], "provider_info": item["provider_info"]}
        return [("tool_call.start", who),
                ("tool_call.arguments", {**who, "arguments": item["arguments"]}),
                ("tool_call.success", {**who, "arguments": item["arguments"],
                                       "output": item["output"]})]
    return [("tool_call.failure", {"reason": item["reason"], "metadata": item["metadata"]})]


def native_chat_frames(reply: Reply, end_body: dict[str, Any],
                       tool_items: tuple[dict[str, Any], ...] = ()) -> Frames:
    """Named events after ``chat.start``/``model_load.*`` (those are sent while loading).

    Token steps: reasoning, then two per tool call (its arguments, then its result), then the
    message, matching ``Reply.emission_steps`` with ``extra_steps`` for the tool calls."""
    frames: list[bytes] = []
    steps: list[int] = []
    step = 0

    def add(name: str, data: dict[str, Any] | None, at: int) -> None:
        frames.append(_event(name, data or {}))
        steps.append(at)

    add("prompt_processing.start", None, 0)
    add("prompt_processing.progress", {"progress": 1.0}, 0)
    add("prompt_processing.end", None, 0)
    if reply.reasoning:
        add("reasoning.start", None, 0)
        for tok in reply.reasoning:
            add("reasoning.delta", {"content": tok}, step)
            step += 1
        add("reasoning.end", None, max(step - 1, 0))
    for item in tool_items:  # the arguments are due after one step, the result after two
        events = _tool_events(item)
        for n, (name, data) in enumerate(events):
            add(name, data, step + (n >= len(events) - 1))
        step += 2
    add("message.start", None, step)
    for tok in reply.content:
        add("message.delta", {"content": tok}, step)
        step += 1
    last = max(step - 1, 0)
    add("message.end", None, last)
    add("chat.end", {"result": end_body}, last)
    return Frames(tuple(frames), tuple(steps))


def now_s() -> int:
    return int(time.time())
