"""LM Studio's native v1 REST API (``/api/v1/*``, 0.4.0+) as DOC ``1_developer/2_rest`` has it.

- ``GET /api/v1/models``: each loaded instance's config in LM Studio's keys (what load set).
- ``POST /api/v1/models/load``: honours ``context_length``, ``parallel``, ``ttl`` and the
  llama.cpp options, and echoes the applied config under ``load_config`` when asked.
- ``POST /api/v1/models/download`` and ``GET .../download/status/:job_id``: a simulated download
  whose progress follows the engine's clock (so tests advance it instead of sleeping); when it
  completes the model joins the catalog and can be loaded.
- ``POST /api/v1/chat``: stateful chats (``response_id`` / ``previous_response_id``),
  ``context_length`` and ``reasoning`` validated, ``integrations`` (MCP) accepted or refused with
  LM Studio's error shapes. Accepted ephemeral MCP servers are real: the emulator connects over
  streamable HTTP, lists their tools and calls them, and the model's scripted tool calls become
  ``tool_call.start`` / ``.arguments`` / ``.success`` (or ``.failure``) events and output items.
  A stream cut off by an unload gets the documented ``error`` event and then ``chat.end``.

Errors use the native shape ``{"error": {"type", "message", "code"?, "param"?}}``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from harness.faults import NATIVE
from harness.studio import encoding as enc
from harness.studio import requests as rq
from harness.studio.app import Ctx
from harness.studio.downloads import DownloadError, describe_job, start_download
from harness.studio.engine import Engine, Instance
from harness.studio.generation import (
    ChatRequest,
    PlannedToolCall,
    Reply,
    message_text,
    plan_chat_reply,
)
from harness.studio.handlers import Timing, Wire, _generate, native_error

REASONING_VALUES = ("off", "low", "medium", "high", "on")
_PLUGIN_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*$")
_MAX_TOOL_ROUNDS = 8


class NativeError(Exception):
    """A native v1 error answer: status plus ``{"error": {...}}``."""

    def __init__(self, status: int, kind: str, message: str, *, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        error: dict[str, Any] = {"type": kind, "message": message}
        if code is not None:
            error["code"] = code
        if param is not None:
            error["param"] = param
        self.body = {"error": error}


def invalid(message: str, param: str | None = None, code: str | None = None) -> NativeError:
    return NativeError(400, "invalid_request", message, code=code, param=param)


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...],
           what: str) -> Any:
    """An optional field of the right JSON type, else a native 400 naming it."""
    value = body.get(name)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise invalid(f"'{name}' must be {what}", param=name, code="invalid_type")
    return value


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = _field(body, name, int, "a positive integer")
    if value is not None and value < 1:
        raise invalid(f"'{name}' must be a positive integer", param=name, code="invalid_value")
    return value


def reasoning_options(spec: Any) -> tuple[list[str], str] | None:
    """The ``reasoning`` values a model accepts and its default (None: not a reasoning model).
    gpt-oss takes efforts; the others switch thinking on or off (CAP ``models-api-v1``)."""
    if spec.reasoning is None:
        return None
    if spec.reasoning == "reasoning":
        return ["low", "medium", "high"], "medium"
    return ["off", "on"], "on"


async def _answer(ctx: Ctx, status: int, payload: dict[str, Any]) -> int:
    await ctx.send_json(status, payload)
    return status


async def _refused(ctx: Ctx, exc: NativeError) -> int:
    return await _answer(ctx, exc.status, exc.body)


# -- models -----------------------------------------------------------------------------------


def load_config(instance: Instance) -> dict[str, Any]:
    """The config an instance was loaded with, in LM Studio's keys (DOC load.md, list.md)."""
    config: dict[str, Any] = {"context_length": instance.context_length}
    if instance.spec.is_embedding:
        return config
    config.update(instance.load_options)
    config["parallel"] = instance.parallel
    return config


async def v1_models(ctx: Ctx) -> int:
    engine = ctx.engine
    engine.reap_expired()
    now = engine.clock()
    models = []
    for spec in engine.catalog.models:
        instances = [
            {"id": i.id, "config": load_config(i),
             "remaining_ttl_seconds": i.describe(now)["remaining_ttl_seconds"]}
            for i in engine.loaded() if i.spec.key == spec.key
        ]
        entry: dict[str, Any] = {
            "type": "embedding" if spec.is_embedding else "llm",
            "publisher": spec.publisher, "key": spec.key, "display_name": spec.display_name,
            "quantization": {"name": spec.quantization, "bits_per_weight": spec.bits_per_weight},
            "size_bytes": spec.size_bytes, "params_string": spec.params_string,
            "loaded_instances": instances, "max_context_length": spec.max_context_length,
            "format": spec.format, "variants": [spec.variant], "selected_variant": spec.variant,
        }
        if not spec.is_embedding:
            entry["architecture"] = spec.arch
            options = reasoning_options(spec)
            entry["capabilities"] = {
                "vision": spec.vision, "trained_for_tool_use": spec.tool_use,
                **({"reasoning": {"allowed_options": options[0], "default": options[1]}}
                   if options else {}),
            }
            entry["description"] = None
        models.append(entry)
    await ctx.send_json(200, {"models": models})
    return 200


_LOAD_OPTIONS = (("eval_batch_size", int, "a positive integer"),
                 ("flash_attention", bool, "a boolean"),
                 ("num_experts", int, "a positive integer"),
                 ("offload_kv_cache_to_gpu", bool, "a boolean"))


async def v1_load(ctx: Ctx) -> int:
    body = ctx.body
    try:
        key = _field(body, "model", str, "a string")
        if not key:
            raise invalid("'model' is required", param="model", code="missing_required_parameter")
        spec = ctx.engine.catalog.get(key)
        if spec is None:  # variant keys too (BT#1462)
            raise NativeError(404, "model_not_found",
                              f"Model {key} not found in downloaded models")
        context_length = _positive_int(body, "context_length")
        parallel = _positive_int(body, "parallel")
        ttl = _field(body, "ttl", (int, float), "a positive number of seconds")
        if ttl is not None and ttl <= 0:
            raise invalid("'ttl' must be a positive number of seconds", param="ttl")
        options = {name: _field(body, name, kind, what) for name, kind, what in _LOAD_OPTIONS}
        if options["num_experts"] is not None and "moe" not in spec.arch:
            options["num_experts"] = None  # applies to MoE models only (DOC load.md)
        echo = _field(body, "echo_load_config", bool, "a boolean")
    except NativeError as exc:
        return await _refused(ctx, exc)
    started = time.monotonic()
    instance = await ctx.engine.load(
        key, jit=False, ttl_s=None if ttl is None else float(ttl), parallel=parallel,
        context_length=context_length,
        load_options={k: v for k, v in options.items() if v is not None})
    answer: dict[str, Any] = {"type": "embedding" if spec.is_embedding else "llm",
                              "instance_id": instance.id,
                              "load_time_seconds": round(time.monotonic() - started, 3),
                              "status": "loaded"}
    if echo:
        answer["load_config"] = load_config(instance)
    return await _answer(ctx, 200, answer)


async def v1_unload(ctx: Ctx) -> int:
    instance_id = ctx.body.get("instance_id")
    if not isinstance(instance_id, str) or not instance_id:
        return await _refused(ctx, invalid("'instance_id' is required", param="instance_id",
                                           code="missing_required_parameter"))
    if instance_id not in ctx.engine.instances:
        return await _refused(ctx, NativeError(
            404, "model_not_found", f"No loaded model instance with id {instance_id!r}"))
    ctx.engine.unload(instance_id, reason="unloaded through /api/v1/models/unload")
    return await _answer(ctx, 200, {"instance_id": instance_id})


# -- downloads --------------------------------------------------------------------------------


async def v1_download(ctx: Ctx) -> int:
    try:
        model = _field(ctx.body, "model", str, "a string")
        if not model:
            raise invalid("'model' is required", param="model", code="missing_required_parameter")
        quantization = _field(ctx.body, "quantization", str, "a string")
        answer = start_download(ctx.engine, model, quantization)
    except NativeError as exc:
        return await _refused(ctx, exc)
    except DownloadError as exc:
        return await _refused(ctx, NativeError(exc.status, exc.kind, str(exc), param="model"))
    return await _answer(ctx, 200, answer)


async def v1_download_status(ctx: Ctx) -> int:
    job_id = str(ctx.path_params.get("job_id", ""))
    job = ctx.engine.downloads.get(job_id)
    if job is None:
        return await _refused(ctx, NativeError(404, "job_not_found",
                                               f"No download job with id '{job_id}'"))
    return await _answer(ctx, 200, describe_job(ctx.engine, job))


# -- chat -------------------------------------------------------------------------------------


@dataclass
class Integration:
    """One accepted integration: where its tools come from and which of them are allowed."""

    provider_info: dict[str, Any]
    url: str
    headers: dict[str, str]
    allowed: frozenset[str] | None
    tools: dict[str, Any] = field(default_factory=dict)
    client: Any = None


def _is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_loopback or address.is_private or address.is_link_local:
            return True
    return False


def parse_integrations(engine: Engine, value: Any) -> list[Integration]:
    """``integrations`` checked against the server settings (DOC mcp.mdx, settings.md): plugin
    ids ``mcp/<label>`` need "Allow calling servers from mcp.json" (which needs auth on) and a
    server of that label; ephemeral servers need "Allow per-request MCPs" and a remote URL."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("'integrations' must be an array", param="integrations")
    options = engine.options
    accepted: list[Integration] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"type": "plugin", "id": item}
        if not isinstance(item, dict):
            raise invalid(f"'integrations[{i}]' must be a string or an object",
                          param="integrations")
        allowed = item.get("allowed_tools")
        if allowed is not None and not (isinstance(allowed, list)
                                        and all(isinstance(t, str) for t in allowed)):
            raise invalid(f"'integrations[{i}].allowed_tools' must be an array of strings",
                          param="integrations")
        allow = frozenset(allowed) if allowed is not None else None
        kind = item.get("type")
        if kind == "plugin":
            plugin_id = item.get("id")
            if not isinstance(plugin_id, str) or not _PLUGIN_ID.match(plugin_id):
                raise NativeError(400, "plugin_connection_error",
                                  f"Invalid plugin identifier {plugin_id!r}: plugin identifier "
                                  "must be in owner/name format")
            if not options.allow_mcp_json:
                raise NativeError(403, "plugin_connection_error",
                                  "Calling servers from mcp.json is not allowed. Enable \"Allow "
                                  "calling servers from mcp.json\" in the server settings "
                                  "(requires \"Require Authentication\").")
            owner, label = plugin_id.split("/", 1)
            configured = dict(options.mcp_servers).get(label) if owner == "mcp" else None
            if configured is None:
                raise NativeError(400, "plugin_connection_error",
                                  f"Plugin {plugin_id} is not installed")
            accepted.append(Integration({"type": "plugin", "plugin_id": plugin_id}, configured,
                                        {}, allow))
        elif kind == "ephemeral_mcp":
            server_label, url = item.get("server_label"), item.get("server_url")
            headers = item.get("headers") or {}
            if not isinstance(server_label, str) or not server_label:
                raise invalid(f"'integrations[{i}].server_label' is required",
                              param="integrations")
            if not isinstance(url, str) or urlparse(url).scheme not in ("http", "https"):
                raise invalid(f"'integrations[{i}].server_url' must be an http(s) URL",
                              param="integrations")
            if not isinstance(headers, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
                raise invalid(f"'integrations[{i}].headers' must map strings to strings",
                              param="integrations")
            if not options.allow_ephemeral_mcp:
                raise NativeError(403, "mcp_connection_error",
                                  "Per-request MCP servers are not allowed. Enable \"Allow "
                                  "per-request MCPs\" in the server settings.")
            if not options.allow_local_mcp and _is_local(url):
                raise NativeError(400, "mcp_connection_error",
                                  f"MCP server URL {url} is not a public address; only remote "
                                  "MCP servers are supported")
            accepted.append(Integration({"type": "ephemeral_mcp", "server_label": server_label},
                                        url,
                                        headers, allow))
        else:
            raise invalid(f"'integrations[{i}].type' must be 'plugin' or 'ephemeral_mcp'",
                          param="integrations")
    return accepted


async def _connect(stack: AsyncExitStack, integrations: list[Integration]) -> None:
    """Open each MCP server (streamable HTTP) and list its allowed tools."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    for integration in integrations:
        try:
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=integration.headers, timeout=30.0))
            client = await stack.enter_async_context(
                Client(streamable_http_client(integration.url, http_client=http)))
            listing = await client.list_tools()
        except Exception as exc:  # any transport or protocol failure: LM Studio's error
            raise NativeError(400, "mcp_connection_error",
                              f"Failed to connect to MCP server at {integration.url}: "
                              f"{type(exc).__name__}: {exc}") from exc
        integration.client = client
        integration.tools = {t.name: t for t in listing.tools
                             if integration.allowed is None or t.name in integration.allowed}


async def _call(integrations: list[Integration], call: PlannedToolCall) -> dict[str, Any]:
    """One tool call as its output item: ``tool_call`` with the server's output, or
    ``invalid_tool_call`` when no integration offers the tool."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        arguments = {}
    for integration in integrations:
        if call.name in integration.tools:
            result = await integration.client.call_tool(call.name, arguments)
            parts = [p.model_dump(mode="json", exclude_none=True) for p in result.content]
            return {"type": "tool_call", "tool": call.name, "arguments": arguments,
                    "output": json.dumps(parts, ensure_ascii=False),
                    "provider_info": integration.provider_info}
    return {"type": "invalid_tool_call", "reason": f"Cannot find tool with name {call.name}.",
            "metadata": {"type": "invalid_name", "tool_name": call.name}}


def _native_messages(body: dict[str, Any], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    value = body.get("input")
    msgs = list(history)
    system = rq.opt(body, "system_prompt", str)
    if system:
        msgs.insert(0, {"role": "system", "content": system})
    if isinstance(value, str) and value:
        msgs.append({"role": "user", "content": value})
    elif isinstance(value, list) and value and all(isinstance(p, dict) for p in value):
        for i, part in enumerate(value):
            if part.get("type") not in ("message", "text", "image"):
                raise invalid(f"'input[{i}].type' must be 'message', 'text' or 'image'",
                              param="input")
        parts = [message_text([p]) for p in value if p.get("type") != "image"]
        msgs.append({"role": "user", "content": "\n".join(parts)})
    else:
        raise invalid("'input' must be a non-empty string or array of input objects",
                      param="input", code="invalid_type" if "input" in body else
                      "missing_required_parameter")
    return msgs


async def v1_chat(ctx: Ctx) -> int:
    body, engine = ctx.body, ctx.engine
    try:
        model = _field(body, "model", str, "a string")
        if not model:
            raise invalid('"model" is required', param="model",
                          code="missing_required_parameter")
        previous = _field(body, "previous_response_id", str, "a string")
        history: list[dict[str, Any]] = []
        if previous is not None:
            if not previous.startswith("resp_"):
                raise invalid("'previous_response_id' must start with 'resp_'",
                              param="previous_response_id", code="invalid_value")
            if previous not in engine.responses:
                raise invalid(f"Previous response '{previous}' not found",
                              param="previous_response_id")
            history = list(engine.responses[previous]["messages"])
        msgs = _native_messages(body, history)
        context_length = _positive_int(body, "context_length")
        spec = engine.spec_for(model)
        if context_length is not None and spec is not None \
                and context_length > spec.max_context_length:
            raise invalid(f"'context_length' {context_length} exceeds the model's maximum "
                          f"context length of {spec.max_context_length}",
                          param="context_length", code="invalid_value")
        reasoning = _field(body, "reasoning", str, "a string")
        if reasoning is not None:
            if reasoning not in REASONING_VALUES:
                raise invalid(f"Invalid 'reasoning' value: '{reasoning}'. Supported values: "
                              f"{', '.join(REASONING_VALUES)}.", param="reasoning",
                              code="invalid_value")
            options = reasoning_options(spec) if spec is not None else None
            if spec is not None and (options is None or reasoning not in options[0]):
                allowed = ", ".join(options[0]) if options else "none"
                raise invalid(f"Model {spec.key} does not support reasoning setting "
                              f"'{reasoning}'. Supported values: {allowed}.",
                              param="reasoning", code="unsupported_value")
        max_output = _field(body, "max_output_tokens", int, "an integer")
        store = _field(body, "store", bool, "a boolean")
        integrations = parse_integrations(engine, body.get("integrations"))
        for name in ("temperature", "top_p", "min_p", "repeat_penalty"):
            _field(body, name, (int, float), "a number")
        _field(body, "top_k", int, "an integer")
        _field(body, "stream", bool, "a boolean")
    except NativeError as exc:
        return await _refused(ctx, exc)
    rid = enc.response_id() if store is not False else None
    base = ChatRequest(messages=tuple(msgs), seed=rq.opt(body, "seed", int),
                       max_tokens=max_output, reasoning_on=reasoning != "off")
    tool_items: list[dict[str, Any]] = []

    async def plan(inst: Instance) -> Reply:
        tool_items.clear()
        request, turn = base, list(msgs)
        async with AsyncExitStack() as stack:
            if integrations:
                await _connect(stack, integrations)
            reply = plan_chat_reply(inst.spec, request, inst.speed.reply_tokens)
            for _ in range(_MAX_TOOL_ROUNDS):
                if not reply.tool_calls:
                    break
                results = [await _call(integrations, call) for call in reply.tool_calls]
                tool_items.extend(results)
                turn.append({"role": "assistant", "content": "", "tool_calls": [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": c.arguments}}
                    for c in reply.tool_calls]})
                turn += [{"role": "tool", "content": r.get("output", r.get("reason", ""))}
                         for r in results]
                request = ChatRequest(messages=tuple(turn), seed=base.seed,
                                      max_tokens=base.max_tokens, reasoning_on=base.reasoning_on)
                reply = plan_chat_reply(inst.spec, request, inst.speed.reply_tokens)
        reply = Reply(reasoning=reply.reasoning, content=reply.content,
                      finish_reason=reply.finish_reason, prompt_tokens=reply.prompt_tokens,
                      hidden_tokens=sum(len(json.dumps(t)) // 4 for t in tool_items),
                      extra_steps=2 * len(tool_items))
        if rid is not None:
            engine.responses[rid] = {
                "messages": [*turn, {"role": "assistant", "content": reply.text}]}
        return reply

    def body_for(reply: Reply, inst: Instance, t: Timing) -> dict[str, Any]:
        return enc.native_chat_body(reply, inst.id, rid, ttft_s=inst.speed.ttft_s,
                                    gen_s=t.last - t.t_first + t.interval,
                                    load_time_s=t.load_time_s, tool_items=tuple(tool_items))

    def chat_end(reply: Reply, inst: Instance, t: Timing) -> list[bytes]:
        return [enc.native_event("chat.end", {"result": body_for(reply, inst, t)})]

    try:
        return await _generate(
            ctx, plan=plan, wire=Wire(NATIVE, native_error, chat_end), native_prelude=True,
            body_for=body_for, context_length=context_length,
            frames_for=lambda r, i, t: enc.native_chat_frames(r, body_for(r, i, t),
                                                              tuple(tool_items)),
        )
    except NativeError as exc:
        if ctx.started:  # chat.start is out: the documented error event, then chat.end
            await ctx.send({"type": "http.response.body", "more_body": False, "body":
                            NATIVE.error(str(exc)) + enc.native_event("chat.end", {"result": {
                                "model_instance_id": ctx.record.instance_id if ctx.record
                                else None, "output": [], "stats": {}}})})
            return 200
        return await _refused(ctx, exc)
