"""Route logic of the emulator: one function per LM Studio endpoint, returning the HTTP status.

All generating endpoints go through ``_generate``: resolve the model (JIT load, TTL, evict),
wait for a slot (FIFO), plan the deterministic reply, then stream it at the model's speed or
answer once the last token would have been produced. The per-endpoint parts are only the
request parsing and the wire format.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.faults import WrongModelFault
from harness.studio import encoding as enc
from harness.studio import requests as rq
from harness.studio.app import Ctx
from harness.studio.engine import Engine, Instance
from harness.studio.generation import (
    VOCABULARY,
    ChatRequest,
    Reply,
    embedding_vector,
    message_text,
    plan_chat_reply,
    plan_text_reply,
)
from harness.studio.pacer import Pacer
from harness.studio.streaming import SSE_HEADERS, watch_disconnect, write_stream


@dataclass
class Timing:
    """When the reply's first and last tokens are due (``time.monotonic()``) and its load wait."""

    t_first: float
    interval: float
    last: float
    load_time_s: float | None


Planner = Callable[[Instance], Reply]
FramesFor = Callable[[Reply, Instance, Timing], enc.Frames]
BodyFor = Callable[[Reply, Instance, Timing], dict[str, Any]]


def _other_model(engine: Engine, requested: Any, fault: WrongModelFault) -> str:
    if fault.model:
        return fault.model
    for instance in engine.loaded():
        if instance.spec.key != requested and not instance.spec.is_embedding:
            return instance.id
    for spec in engine.catalog.models:
        if spec.key != requested and not spec.is_embedding:
            return spec.key
    return str(requested)


async def _generate(
    ctx: Ctx,
    *,
    plan: Planner,
    frames_for: FramesFor,
    body_for: BodyFor,
    want: str = "llm",
    openai_style: bool = True,
    native_prelude: bool = False,
) -> int:
    engine, record, body = ctx.engine, ctx.record, ctx.body
    assert record is not None
    stream = rq.opt(body, "stream", bool, False)
    ttl = rq.ttl_seconds(body)
    name = body.get("model")
    if isinstance(ctx.fault, WrongModelFault):
        name = _other_model(engine, name, ctx.fault)
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    watcher = loop.create_task(watch_disconnect(ctx.receive, record))
    try:
        if native_prelude and stream:
            resolution = await _native_load_events(ctx, engine, name, ttl)
        else:
            resolution = await engine.resolve(name, ttl_s=ttl, want=want)
        instance = resolution.instance
        record.instance_id = instance.id
        record.substituted = resolution.substituted
        record.load_wait_s = time.monotonic() - t0
        await engine.acquire(instance, record)
        try:
            await Pacer.current().catch_up()
            vocabulary = VOCABULARY.set(ctx.stress.vocabulary()) if ctx.stress else None
            try:
                reply = plan(instance)
            finally:
                if vocabulary is not None:
                    VOCABULARY.reset(vocabulary)
            speed = instance.speed
            interval = 1.0 / speed.tokens_per_s
            t_first = time.monotonic() + speed.ttft_s
            timing = Timing(t_first, interval, t_first + max(reply.emission_steps - 1, 0)
                            * interval, record.load_wait_s if resolution.loading else None)
            record.scheduled_ttft_s = t_first - record.received_at
            record.token_interval_s = interval
            record.finish_reason = reply.finish_reason
            record.completion_tokens = reply.completion_tokens

            async def evict() -> None:
                if instance.id in engine.instances:
                    engine.unload(instance.id, reason="evict fault")

            if stream:
                frames = frames_for(reply, instance, timing)
                ok = await write_stream(
                    ctx.send, frames, t_first=t_first, interval=interval, record=record,
                    cutoff_style=engine.options.cutoff_style, openai_style=openai_style,
                    fault=ctx.fault, on_evict=evict, headers_sent=ctx.started,
                    on_complete=watcher.cancel, stress=ctx.stress,
                )
                ctx.started = True
                if record.cancelled or not ok:
                    record.finish_reason = None
                return 200
            while not record.cancelled:
                delay = timing.last - time.monotonic()
                if delay <= 0:
                    break
                await asyncio.sleep(min(delay, 0.05))
            watcher.cancel()
            if record.cut_off:
                return await _non_stream_cut_off(ctx, reply, instance, timing, body_for)
            if record.disconnect_seen:
                record.finish_reason = None
                return 499
            record.scheduled.append(timing.last)
            payload = body_for(reply, instance, timing)
            await ctx.send_json(200, payload)
            record.sent_at.append(time.monotonic())
            return 200
        finally:
            engine.release(instance, record)
    finally:
        watcher.cancel()


async def _non_stream_cut_off(ctx: Ctx, reply: Reply, instance: Instance, timing: Timing,
                              body_for: BodyFor) -> int:
    assert ctx.record is not None
    ctx.record.finish_reason = None
    style = ctx.engine.options.cutoff_style
    if style == "error":
        await ctx.send_json(500, {"error": {"message": "Model is unloaded."}})
        return 500
    done = min(len(reply.content), max(0, int((time.monotonic()
                                                - timing.t_first) / timing.interval)))
    partial = Reply(reasoning=reply.reasoning, content=reply.content[:done],
                    finish_reason="stop", prompt_tokens=reply.prompt_tokens)
    payload = body_for(partial, instance, timing)
    for choice in payload.get("choices", []):
        choice["finish_reason"] = None
    data = enc._dumps(payload).encode()
    if style == "drop":
        ctx.started = True
        headers = [(b"content-type", b"application/json; charset=utf-8"),
                   (b"content-length", str(len(data)).encode())]
        await ctx.send({"type": "http.response.start", "status": 200, "headers": headers})
        await ctx.send({"type": "http.response.body", "body": data[: len(data) // 2],
                        "more_body": True})
        return 200
    await ctx.send_json(200, payload)
    return 200


async def _native_load_events(ctx: Ctx, engine: Engine, name: Any, ttl: float | None) -> Any:
    """``/api/v1/chat`` streams: ``chat.start`` and ``model_load.*`` while the model loads."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(engine.resolve(name, ttl_s=ttl, want="llm"))
    await asyncio.sleep(0)
    await asyncio.wait({task}, timeout=0.002)
    if task.done():
        resolution = task.result()
        await _start_sse(ctx, enc.native_event("chat.start", {
            "model_instance_id": resolution.instance.id}))
        return resolution
    spec = engine.spec_for(name) if isinstance(name, str) else None
    instance_id = spec.key if spec is not None else str(name)
    load_time = engine.catalog.speed(spec).load_time_s if spec is not None else 0.0
    started = time.monotonic()
    await _start_sse(ctx, enc.native_event("chat.start", {"model_instance_id": instance_id}))
    await _send_frame(ctx, enc.native_event("model_load.start",
                                            {"model_instance_id": instance_id}))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=max(load_time / 4, 0.01))
            if done:
                break
            progress = min(0.99, (time.monotonic() - started) / load_time) if load_time else 0.5
            await _send_frame(ctx, enc.native_event(
                "model_load.progress", {"model_instance_id": instance_id,
                                        "progress": round(progress, 3)}))
    except BaseException:
        task.cancel()
        raise
    resolution = task.result()
    await _send_frame(ctx, enc.native_event(
        "model_load.end", {"model_instance_id": resolution.instance.id,
                           "load_time_seconds": round(time.monotonic() - started, 3)}))
    return resolution


async def _start_sse(ctx: Ctx, first: bytes) -> None:
    ctx.started = True
    await ctx.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await _send_frame(ctx, first)


async def _send_frame(ctx: Ctx, frame: bytes) -> None:
    await ctx.send({"type": "http.response.body", "body": frame, "more_body": True})


# -- OpenAI-compatible --------------------------------------------------------------------------


def _chat_planner(ctx: Ctx) -> tuple[ChatRequest, Planner]:
    msgs = rq.messages(ctx.body)
    request = rq.chat_request(ctx.body, msgs)
    response_format = ctx.body.get("response_format")

    def plan(instance: Instance) -> Reply:
        return plan_chat_reply(instance.spec, request, instance.speed.reply_tokens,
                               response_format)

    return request, plan


async def chat_completions(ctx: Ctx, *, v0: bool = False) -> int:
    _, plan = _chat_planner(ctx)
    include_usage = rq.include_usage(ctx.body)
    cid, created = enc.chat_id(), enc.now_s()

    def frames_for(reply: Reply, inst: Instance, t: Timing) -> enc.Frames:
        return enc.chat_frames(reply, inst.id, inst.spec, cid, created, include_usage)

    def body_for(reply: Reply, inst: Instance, t: Timing) -> dict[str, Any]:
        body = enc.chat_body(reply, inst.id, inst.spec, cid, created)
        if v0:
            body.update(enc.v0_extras(reply, inst.spec, inst.speed.ttft_s,
                                      t.last - t.t_first + t.interval))
        return body

    return await _generate(ctx, plan=plan, frames_for=frames_for, body_for=body_for)


async def v0_chat_completions(ctx: Ctx) -> int:
    return await chat_completions(ctx, v0=True)


async def completions(ctx: Ctx) -> int:
    prompt = ctx.body.get("prompt")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = "\n".join(prompt)
    if not isinstance(prompt, str):
        raise rq.BadRequest("'prompt' field is required and must be a string")
    seed = rq.opt(ctx.body, "seed", int)
    limit = rq.max_tokens(ctx.body)
    stop = rq.stop_list(ctx.body)
    include_usage = rq.include_usage(ctx.body)
    cid, created = enc.completion_id(), enc.now_s()

    def plan(inst: Instance) -> Reply:
        return plan_text_reply(inst.spec, prompt, seed=seed, max_tokens=limit, stop=stop,
                               reply_tokens=inst.speed.reply_tokens)

    return await _generate(
        ctx, plan=plan,
        frames_for=lambda r, i, t: enc.completion_frames(r, i.id, cid, created, include_usage),
        body_for=lambda r, i, t: enc.completion_body(r, i.id, cid, created),
    )


async def embeddings(ctx: Ctx) -> int:
    raw = ctx.body.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = list(raw)
    else:
        raise rq.BadRequest("'input' must be a string or a non-empty array of strings")
    record = ctx.record
    assert record is not None
    resolution = await ctx.engine.resolve(ctx.body.get("model"), ttl_s=rq.ttl_seconds(ctx.body),
                                          want="embedding")
    instance = resolution.instance
    record.instance_id = instance.id
    await ctx.engine.acquire(instance, record)
    try:
        await asyncio.sleep(instance.speed.ttft_s)
        dims = instance.spec.embedding_dims
        data = [
            {"object": "embedding", "embedding": embedding_vector(instance.spec.key, t, dims),
             "index": i}
            for i, t in enumerate(texts)
        ]
        await ctx.send_json(200, {"object": "list", "data": data, "model": instance.spec.variant,
                                  "usage": {"prompt_tokens": 0, "total_tokens": 0}})
        return 200
    finally:
        ctx.engine.release(instance, record)


async def responses(ctx: Ctx) -> int:
    body, engine = ctx.body, ctx.engine
    previous = rq.opt(body, "previous_response_id", str)
    history: list[dict[str, Any]] = []
    if previous is not None:
        stored = engine.responses.get(previous)
        if stored is None:
            raise rq.BadRequest(f"Previous response with id '{previous}' not found.")
        history = list(stored["messages"])
    instructions = rq.opt(body, "instructions", str)
    msgs = ([{"role": "system", "content": instructions}] if instructions else []) + history
    msgs += rq.responses_input(body)
    effort = (rq.opt(body, "reasoning", dict, {}) or {}).get("effort")
    request = ChatRequest(messages=tuple(msgs), seed=rq.opt(body, "seed", int),
                          max_tokens=rq.max_tokens(body, "max_output_tokens"),
                          tools=rq.tools(body), reasoning_on=effort != "none")
    store = rq.opt(body, "store", bool, True)
    rid, created = enc.response_id(), enc.now_s()

    def plan(inst: Instance) -> Reply:
        reply = plan_chat_reply(inst.spec, request, inst.speed.reply_tokens)
        if store:
            engine.responses[rid] = {"messages": [*history, *rq.responses_input(body),
                                                  {"role": "assistant", "content": reply.text}]}
        return reply

    return await _generate(
        ctx, plan=plan, openai_style=False,
        frames_for=lambda r, i, t: enc.responses_frames(r, i.id, rid, created, previous),
        body_for=lambda r, i, t: enc.responses_body(r, i.id, rid, created, previous),
    )


async def openai_models(ctx: Ctx) -> int:
    engine = ctx.engine
    engine.reap_expired()
    if engine.options.jit:
        ids = [m.key for m in engine.catalog.models]
    else:
        ids = [i.id for i in engine.loaded()]
    data = [{"id": i, "object": "model", "owned_by": "organization_owner"} for i in ids]
    await ctx.send_json(200, {"data": data, "object": "list"})
    return 200


# -- native /api/v0 -----------------------------------------------------------------------------


def _v0_entry(engine: Engine, key: str) -> dict[str, Any]:
    spec = engine.catalog.get(key)
    assert spec is not None
    loaded = [i for i in engine.loaded() if i.spec.key == key]
    entry: dict[str, Any] = {
        "id": spec.key, "object": "model",
        "type": "embeddings" if spec.is_embedding else ("vlm" if spec.vision else "llm"),
        "publisher": spec.publisher, "arch": spec.arch, "compatibility_type": spec.format,
        "quantization": spec.quantization, "state": "loaded" if loaded else "not-loaded",
        "max_context_length": spec.max_context_length,
    }
    if loaded:
        entry["loaded_context_length"] = spec.loaded_context_length
    if not spec.is_embedding:
        entry["capabilities"] = ["tool_use"] if spec.tool_use else []
    return entry


async def v0_models(ctx: Ctx) -> int:
    ctx.engine.reap_expired()
    data = [_v0_entry(ctx.engine, m.key) for m in ctx.engine.catalog.models]
    await ctx.send_json(200, {"object": "list", "data": data})
    return 200


async def v0_model(ctx: Ctx) -> int:
    key = str(ctx.path_params.get("model_id", ""))
    spec = ctx.engine.spec_for(key)
    if spec is None:
        await ctx.send_json(404, {"error": f"Model '{key}' not found"})
        return 404
    await ctx.send_json(200, _v0_entry(ctx.engine, spec.key))
    return 200


# -- native /api/v1 -----------------------------------------------------------------------------


async def v1_models(ctx: Ctx) -> int:
    engine = ctx.engine
    engine.reap_expired()
    now = engine.clock()
    models = []
    for spec in engine.catalog.models:
        instances = [
            {"id": i.id,
             "config": {"context_length": spec.loaded_context_length, "eval_batch_size": 512,
                        "parallel": i.parallel, "flash_attention": True,
                        "offload_kv_cache_to_gpu": True},
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
            entry["capabilities"] = {
                "vision": spec.vision, "trained_for_tool_use": spec.tool_use,
                **({"reasoning": {"allowed_options": ["off", "on"], "default": "on"}}
                   if spec.reasoning else {}),
            }
            entry["description"] = None
        models.append(entry)
    await ctx.send_json(200, {"models": models})
    return 200


def _native_error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


async def v1_load(ctx: Ctx) -> int:
    key = ctx.body.get("model")
    if not isinstance(key, str) or not key:
        await ctx.send_json(400, _native_error("invalid_request", "'model' must be a string"))
        return 400
    spec = ctx.engine.catalog.get(key)
    if spec is None:
        await ctx.send_json(404, _native_error(
            "model_not_found", f"Model {key} not found in downloaded models"))
        return 404
    parallel = rq.opt(ctx.body, "parallel", int)
    ttl = rq.ttl_seconds(ctx.body)
    started = time.monotonic()
    instance = await ctx.engine.load(key, jit=False, ttl_s=ttl, parallel=parallel)
    body: dict[str, Any] = {"type": "embedding" if spec.is_embedding else "llm",
                            "instance_id": instance.id,
                            "load_time_seconds": round(time.monotonic() - started, 3),
                            "status": "loaded"}
    if ctx.body.get("echo_load_config"):
        body["load_config"] = {"context_length": spec.loaded_context_length,
                               "parallel": instance.parallel}
    await ctx.send_json(200, body)
    return 200


async def v1_unload(ctx: Ctx) -> int:
    instance_id = ctx.body.get("instance_id")
    if not isinstance(instance_id, str) or instance_id not in ctx.engine.instances:
        await ctx.send_json(404, _native_error(
            "model_not_found", f"No loaded model instance with id {instance_id!r}"))
        return 404
    ctx.engine.unload(instance_id, reason="unloaded through /api/v1/models/unload")
    await ctx.send_json(200, {"instance_id": instance_id})
    return 200


def _native_messages(body: dict[str, Any], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    value = body.get("input")
    msgs = list(history)
    system = rq.opt(body, "system_prompt", str)
    if system:
        msgs.insert(0, {"role": "system", "content": system})
    if isinstance(value, str) and value:
        msgs.append({"role": "user", "content": value})
    elif isinstance(value, list) and value:
        parts = [message_text([p]) for p in value if isinstance(p, dict)]
        msgs.append({"role": "user", "content": "\n".join(parts)})
    else:
        raise rq.BadRequest("'input' must be a non-empty string or array")
    return msgs


async def v1_chat(ctx: Ctx) -> int:
    body, engine = ctx.body, ctx.engine
    if not isinstance(body.get("model"), str):
        await ctx.send_json(400, _native_error("invalid_request", "'model' is required"))
        return 400
    previous = rq.opt(body, "previous_response_id", str)
    history: list[dict[str, Any]] = []
    if previous is not None:
        if not previous.startswith("resp_") or previous not in engine.responses:
            await ctx.send_json(400, _native_error(
                "invalid_request", f"Previous response '{previous}' not found"))
            return 400
        history = list(engine.responses[previous]["messages"])
    msgs = _native_messages(body, history)
    reasoning = rq.opt(body, "reasoning", str)
    request = ChatRequest(messages=tuple(msgs), seed=rq.opt(body, "seed", int),
                          max_tokens=rq.max_tokens(body, "max_output_tokens"),
                          reasoning_on=reasoning != "off")
    store = rq.opt(body, "store", bool, True)
    rid = enc.response_id() if store else None

    def plan(inst: Instance) -> Reply:
        reply = plan_chat_reply(inst.spec, request, inst.speed.reply_tokens)
        if rid is not None:
            engine.responses[rid] = {
                "messages": [*msgs, {"role": "assistant", "content": reply.text}]}
        return reply

    def body_for(reply: Reply, inst: Instance, t: Timing) -> dict[str, Any]:
        return enc.native_chat_body(reply, inst.id, rid, ttft_s=inst.speed.ttft_s,
                                    gen_s=t.last - t.t_first + t.interval,
                                    load_time_s=t.load_time_s)

    return await _generate(
        ctx, plan=plan, openai_style=False, native_prelude=True, body_for=body_for,
        frames_for=lambda r, i, t: enc.native_chat_frames(r, body_for(r, i, t)),
    )
