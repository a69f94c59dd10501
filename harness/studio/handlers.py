"""Route logic of the emulator: one function per LM Studio endpoint, returning the HTTP status.

All generating endpoints go through ``_generate``: resolve the model (JIT load, TTL, evict),
wait for a slot (FIFO), plan the deterministic reply, then stream it at the model's speed or
answer once the last token would have been produced. The per-endpoint parts are only the
request parsing and the wire format.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from harness.faults import OPENAI, RESPONSES, Dialect, PrefillPauseFault, WrongModelFault
from harness.studio import encoding as enc
from harness.studio import requests as rq
from harness.studio.app import Ctx
from harness.studio.engine import CutoffStyle, Engine, Instance
from harness.studio.generation import (
    VOCABULARY,
    ChatRequest,
    Reply,
    embedding_vector,
    plan_chat_reply,
    plan_text_reply,
    reply_prefix,
)
from harness.studio.pacer import Pacer
from harness.studio.semantic import apply_semantic
from harness.studio.streaming import (
    SSE_HEADERS,
    UNLOADED_MESSAGE,
    Cutoff,
    Pace,
    cutoff_frames,
    watch_disconnect,
    write_stream,
)


@dataclass
class Timing:
    """When the reply's first and last tokens are due (``time.monotonic()``) and its load wait."""

    t_first: float
    interval: float
    last: float
    load_time_s: float | None


Planner = Callable[[Instance], Reply | Awaitable[Reply]]
FramesFor = Callable[[Reply, Instance, Timing], enc.Frames]
BodyFor = Callable[[Reply, Instance, Timing], dict[str, Any]]


def _other_model(engine: Engine, requested: Any, fault: WrongModelFault) -> str | None:
    """The model that answers instead of ``requested`` (``None``: there is no other one)."""
    if fault.model:
        return fault.model if fault.model != requested else None
    wanted = engine.spec_for(requested) if isinstance(requested, str) else None
    for instance in engine.loaded():
        if instance.spec is not wanted and not instance.spec.is_embedding:
            return instance.id
    for spec in engine.catalog.models:
        if spec is not wanted and not spec.is_embedding:
            return spec.key
    return None


@dataclass(frozen=True)
class Wire:
    """How one endpoint speaks: its stream dialect and its error bodies.

    ``error_body(status, message, kind)`` gives a non-stream error; ``stream_error(message)`` the
    frames of an error before any token (after ``chat.start`` on ``/api/v1/chat``);
    ``partial_end(reply, instance, timing)`` the frames that close a stream cut off after the
    tokens of ``reply`` (``chat.end`` on ``/api/v1/chat``, documented to follow an error).
    """

    dialect: Dialect
    error_body: Callable[[int, str, str], dict[str, Any]]
    partial_end: Callable[[Reply, Instance, Timing], list[bytes]] | None = None

    def stream_error(self, message: str, reply: Reply, inst: Instance,
                     timing: Timing) -> list[bytes]:
        frames = [self.dialect.error(message)]
        if self.partial_end is not None:
            frames += self.partial_end(reply, inst, timing)
        return frames


def openai_error(status: int, message: str, kind: str) -> dict[str, Any]:
    """LM Studio's string error (shape A), what its OpenAI-compatible endpoints send on 400."""
    return {"error": message}


OPENAI_WIRE = Wire(OPENAI, openai_error)
RESPONSES_WIRE = Wire(RESPONSES, openai_error)


def native_error(status: int, message: str, kind: str) -> dict[str, Any]:
    """The native v1 error object (shape C)."""
    return {"error": {"type": kind, "message": message}}


async def _generate(
    ctx: Ctx,
    *,
    plan: Planner,
    frames_for: FramesFor,
    body_for: BodyFor,
    want: str = "llm",
    wire: Wire = OPENAI_WIRE,
    native_prelude: bool = False,
    context_length: int | None = None,
) -> int:
    engine, record, body = ctx.engine, ctx.record, ctx.body
    assert record is not None
    stream = rq.opt(body, "stream", bool, False)
    ttl = rq.ttl_seconds(body)
    name = body.get("model")
    fault = ctx.fault
    if isinstance(fault, WrongModelFault):
        other = _other_model(engine, name, fault)
        if other is not None:
            name = other
            ctx.fired()
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    watcher = loop.create_task(watch_disconnect(ctx.receive, record))
    try:
        if native_prelude and stream:
            resolution = await _native_load_events(ctx, engine, name, ttl, context_length)
        else:
            resolution = await engine.resolve(name, ttl_s=ttl, want=want,
                                              context_length=context_length)
        instance = resolution.instance
        record.instance_id = instance.id
        record.substituted = resolution.substituted
        record.load_wait_s = time.monotonic() - t0
        await engine.acquire(instance, record)
        try:
            await Pacer.current().catch_up()
            vocabulary = VOCABULARY.set(ctx.stress.vocabulary()) if ctx.stress else None
            try:
                planned = plan(instance)
                reply = await planned if inspect.isawaitable(planned) else planned
            finally:
                if vocabulary is not None:
                    VOCABULARY.reset(vocabulary)
            started = time.monotonic()
            context = context_length or instance.context_length
            overflow = reply.prompt_tokens > context
            if overflow and engine.options.overflow == "empty":
                reply = Reply(finish_reason="stop", prompt_tokens=reply.prompt_tokens)
            elif not overflow:
                changed = apply_semantic(fault, reply)
                if changed is not None:
                    reply = changed
                    ctx.fired()
            speed = instance.speed
            prefill = 0.0
            if isinstance(fault, PrefillPauseFault):
                instance.hold.pause(started, fault.seconds)
                prefill = fault.seconds
                ctx.fired()
            pace = Pace(instance.hold, started, own_pause=prefill > 0)
            interval = 1.0 / speed.tokens_per_s
            t_first = started + speed.ttft_s + prefill
            timing = Timing(t_first, interval, t_first + max(reply.emission_steps - 1, 0)
                            * interval, record.load_wait_s if resolution.loading else None)
            record.scheduled_ttft_s = t_first - record.received_at
            record.token_interval_s = interval
            record.finish_reason = reply.finish_reason
            record.completion_tokens = reply.completion_tokens
            if overflow and engine.options.overflow == "error":
                return await _overflow(ctx, wire, stream, reply, instance, timing, context)

            async def evict() -> None:
                if instance.id in engine.instances:
                    engine.unload(instance.id, reason="evict fault")

            if stream:
                frames = frames_for(reply, instance, timing)
                ok = await write_stream(
                    ctx.send, frames, t_first=t_first, interval=interval, record=record,
                    cutoff=_cutoff(engine.options.cutoff_style, wire, reply, instance, timing,
                                   frames),
                    fault=None if fault is None or fault.scope == "reply" else fault,
                    on_evict=evict, headers_sent=ctx.started, on_complete=watcher.cancel,
                    dialect=wire.dialect, on_fire=ctx.fired, pace=pace, stress=ctx.stress,
                )
                ctx.started = True
                if record.cancelled or not ok:
                    record.finish_reason = None
                return 200
            deadline = timing.last
            while not record.cancelled:
                deadline += pace.take(deadline)
                delay = deadline - time.monotonic()
                if delay <= 0:
                    break
                await asyncio.sleep(min(delay, 0.05))
            watcher.cancel()
            if record.cut_off:
                return await _non_stream_cut_off(ctx, reply, instance, timing, body_for, wire)
            if record.disconnect_seen:
                record.finish_reason = None
                return 499
            record.scheduled.append(deadline)
            payload = body_for(reply, instance, timing)
            await ctx.send_json(200, payload)
            record.sent_at.append(time.monotonic())
            return 200
        finally:
            engine.release(instance, record)
    finally:
        watcher.cancel()


def _cutoff(style: CutoffStyle, wire: Wire, reply: Reply, inst: Instance, timing: Timing,
            frames: enc.Frames) -> Cutoff:
    """How this stream ends if its model is unloaded before frame ``n``: the engine's
    ``cutoff_style``; on ``/api/v1/chat`` always the documented ``error`` + ``chat.end``."""
    if wire.partial_end is None or style == "drop":
        return cutoff_frames(style, wire.dialect)

    def end(n: int) -> list[bytes]:
        steps = frames.steps[n] if n < len(frames.steps) else reply.emission_steps
        partial = reply_prefix(reply, steps)
        return wire.stream_error(UNLOADED_MESSAGE, partial, inst, timing)

    return end


def overflow_messages(prompt_tokens: int, context: int) -> tuple[str, str]:
    """LM Studio's two context-overflow texts: the non-stream 400 (0.3.x, BT#237) and the
    stream's ``event: error`` (0.4.21, BT#2322, goose#11318)."""
    keep = (
        f"Trying to keep the first {prompt_tokens} tokens when context the overflows. However, "
        f"the model is loaded with context length of only {context} tokens, which is not "
        "enough. Try to load the model with a larger context length, or provide a shorter input"
    )
    fit = (
        f"Input does not fit in context length. The input has {prompt_tokens} tokens, but the "
        f"context length only supports {context} tokens."
    )
    return keep, fit


async def _overflow(ctx: Ctx, wire: Wire, stream: bool, reply: Reply, inst: Instance,
                    timing: Timing, context: int) -> int:
    """The prompt does not fit the loaded context: a 400, or (streaming) 200 with only the
    error frame; nothing is generated."""
    assert ctx.record is not None
    ctx.record.finish_reason = None
    ctx.record.completion_tokens = 0
    keep, fit = overflow_messages(reply.prompt_tokens, context)
    await asyncio.sleep(max(0.0, timing.t_first - timing.interval - time.monotonic()))
    if not stream:
        message = keep if wire.dialect is OPENAI else fit
        await ctx.send_json(400, wire.error_body(400, message, "invalid_request"))
        return 400
    empty = Reply(prompt_tokens=reply.prompt_tokens)
    frames = wire.stream_error(fit, empty, inst, timing)
    if not ctx.started:
        await _start_sse(ctx, frames[0])
        frames = frames[1:]
    for frame in frames:
        await _send_frame(ctx, frame)
    await ctx.send({"type": "http.response.body", "body": b"", "more_body": False})
    return 200


async def _non_stream_cut_off(ctx: Ctx, reply: Reply, instance: Instance, timing: Timing,
                              body_for: BodyFor, wire: Wire) -> int:
    assert ctx.record is not None
    ctx.record.finish_reason = None
    style = ctx.engine.options.cutoff_style
    if style == "error":
        body = ({"error": {"message": UNLOADED_MESSAGE}} if wire.dialect is OPENAI
                else wire.error_body(500, UNLOADED_MESSAGE, "unknown"))
        await ctx.send_json(500, body)
        return 500
    done = max(0, int((time.monotonic() - timing.t_first) / timing.interval))
    partial = replace(reply_prefix(reply, done), finish_reason="stop")
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


async def _native_load_events(ctx: Ctx, engine: Engine, name: Any, ttl: float | None,
                              context_length: int | None) -> Any:
    """``/api/v1/chat`` streams: ``chat.start`` and ``model_load.*`` while the model loads."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(engine.resolve(name, ttl_s=ttl, want="llm",
                                           context_length=context_length))
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
                                      t.last - t.t_first + t.interval, inst.context_length))
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
        ctx, plan=plan, wire=RESPONSES_WIRE,
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
        entry["loaded_context_length"] = loaded[0].context_length
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
