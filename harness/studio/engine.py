"""The emulator's model lifecycle: instances, JIT loads, idle TTL, auto-evict and parallel slots.

This mirrors what LMSTUDIO_API.md §3 reports about LM Studio, including its bugs, each behind an
option so a suite can ask for the faithful behaviour or the kind one:

- JIT loading delays a request by the model's load time; concurrent JIT requests share one load,
  or (``duplicate_jit_instances``, BT#1751) each start their own ``key:N`` instance.
- Auto-evict unloads the previous JIT model before a new JIT load. With ``evict_mode="cancel"``
  (LM Studio, BT#671) the evicted model's running generations are cut off mid-stream; with
  ``"finish"`` the new load waits until they end.
- ``parallel`` slots per instance (default 4) with a strict FIFO queue behind them; LM Studio
  never answers 429, so neither does the engine.
- Idle TTL (request ``ttl``) counted from the moment an instance has nothing to do, measured on
  an injectable clock so tests never sleep for it.

The engine also keeps the ground truth of every request (a ``truth.RequestLedger``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from harness.studio.catalog import Catalog, ModelSpec, ResolvedSpeed
from harness.studio.downloads import DownloadJob
from harness.studio.truth import RequestLedger, RequestTruth

Clock = Callable[[], float]
EvictMode = Literal["cancel", "finish"]
CutoffStyle = Literal["done_no_finish", "error", "drop"]
#: A prompt longer than the loaded context: LM Studio's 400 / stream error frame, or the GGUF
#: engine's silent, well-formed empty completion with usage counted (BT#2339).
OverflowStyle = Literal["error", "empty"]


@dataclass(frozen=True)
class EngineOptions:
    """Server settings, as LM Studio's Developer page would have them."""

    jit: bool = True
    auto_evict: bool = True
    evict_mode: EvictMode = "cancel"
    cutoff_style: CutoffStyle = "done_no_finish"
    duplicate_jit_instances: bool = False
    parallel: int = 4
    default_ttl_s: float | None = 3600.0
    substitute_single_loaded: bool = True
    overflow: OverflowStyle = "error"
    allow_ephemeral_mcp: bool = False
    allow_mcp_json: bool = False
    allow_local_mcp: bool = False
    mcp_servers: tuple[tuple[str, str], ...] = ()
    download_bytes_per_s: float = 500_000_000.0
    max_body_bytes: int = 4 * 1024 * 1024
    truth_limit: int = 50_000
    preload: tuple[str, ...] = ()
    reap_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {self.parallel}")
        if self.download_bytes_per_s <= 0:
            raise ValueError(f"download_bytes_per_s must be > 0, got {self.download_bytes_per_s}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")


class EngineError(Exception):
    """An error LM Studio reports with a specific status and JSON body."""

    status: int = 400

    def __init__(self, message: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.body = body


class ModelNotFound(EngineError):
    status = 404


class NoModelsLoaded(EngineError):
    status = 400


class WrongModelType(EngineError):
    status = 400


class ContextLengthInvalid(EngineError):
    """A load asked for a context the model cannot have (native v1 error shape)."""

    status = 400

    def __init__(self, value: int, spec: ModelSpec) -> None:
        message = (f"Invalid context length {value} for model {spec.key}: it must be between 1 "
                   f"and the model's maximum context length of {spec.max_context_length}.")
        super().__init__(message, {"error": {"type": "invalid_request", "message": message,
                                             "param": "context_length"}})


class ModelUnloaded(Exception):
    """The instance serving a request was evicted or unloaded before the request finished."""

    def __init__(self, instance_id: str, reason: str) -> None:
        super().__init__(f"Model is unloaded. (instance {instance_id!r}, {reason})")
        self.instance_id = instance_id
        self.reason = reason


class Hold:
    """When an instance's generations are paused: the prompt processing of a new request stops
    every stream already running on it (BT#1709, MLX batching; BT#1487). One window at a time;
    a pause that arrives during another extends it, as the prefills run one after the other."""

    __slots__ = ("started", "until")

    def __init__(self) -> None:
        self.started = 0.0
        self.until = 0.0

    def pause(self, now: float, seconds: float) -> float:
        """Pause from ``now`` for ``seconds`` (after any pause under way); returns its end."""
        if self.until > now:
            self.until += seconds
        else:
            self.started, self.until = now, now + seconds
        return self.until


class Instance:
    """One loaded copy of a model with its own slots and queue."""

    def __init__(
        self,
        instance_id: str,
        spec: ModelSpec,
        speed: ResolvedSpeed,
        *,
        parallel: int,
        ttl_s: float | None,
        jit: bool,
        now: float,
        context_length: int | None = None,
        load_options: dict[str, Any] | None = None,
    ) -> None:
        self.id = instance_id
        self.spec = spec
        self.speed = speed
        self.parallel = parallel
        self.context_length = context_length or spec.loaded_context_length
        #: llama.cpp load options in LM Studio's keys (``load_config``), defaults filled in.
        self.load_options: dict[str, Any] = {"eval_batch_size": 512, "flash_attention": True,
                                             "offload_kv_cache_to_gpu": True,
                                             **({"num_experts": 8} if "moe" in spec.arch
                                                else {}),
                                             **(load_options or {})}
        self.hold = Hold()
        self.ttl_s = ttl_s
        self.jit = jit
        self.state: Literal["loading", "loaded", "unloaded"] = "loading"
        self.draining = False
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.idle_since = now
        self.load_time_s = speed.load_time_s
        self.active: set[RequestTruth] = set()
        self.waiters: deque[tuple[asyncio.Future[None], RequestTruth]] = deque()
        self.unload_reason: str | None = None

    @property
    def busy(self) -> int:
        return len(self.active) + len(self.waiters)

    def describe(self, now: float) -> dict[str, Any]:
        remaining = None
        if self.ttl_s is not None:
            idle_for = 0.0 if self.busy else max(0.0, now - self.idle_since)
            remaining = max(0.0, self.ttl_s - idle_for)
        return {
            "id": self.id,
            "model": self.spec.key,
            "state": self.state,
            "jit": self.jit,
            "parallel": self.parallel,
            "context_length": self.context_length,
            "active": len(self.active),
            "queued": len(self.waiters),
            "ttl_s": self.ttl_s,
            "remaining_ttl_seconds": remaining,
        }


@dataclass
class Resolution:
    """The instance chosen for a request, and whether this request had to wait for a load."""

    instance: Instance
    loading: bool
    substituted: bool = False


def _model_not_found(name: str, keys: list[str]) -> ModelNotFound:
    listing = "\n".join(f"\t{k}" for k in keys)
    message = (
        f'Model "{name}" not found. Please specify a valid model.\n\nYour models:\n\n{listing}'
    )
    return ModelNotFound(
        message,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
    )


NO_MODELS_LOADED = (
    "No models loaded. Please load a model in the developer page or use the 'lms load' command."
)


def _no_models_loaded() -> NoModelsLoaded:
    return NoModelsLoaded(
        NO_MODELS_LOADED,
        {
            "error": {
                "message": NO_MODELS_LOADED,
                "type": "invalid_request_error",
                "param": "model",
                "code": None,
            }
        },
    )


class Engine(RequestLedger):
    """Model instances and request bookkeeping for one emulator process (one event loop)."""

    def __init__(
        self, catalog: Catalog, options: EngineOptions | None = None, clock: Clock | None = None
    ) -> None:
        self.catalog = catalog
        self.options = options or EngineOptions()
        self.clock: Clock = clock or time.monotonic
        super().__init__(self.options.truth_limit)
        self.instances: dict[str, Instance] = {}
        self.responses: dict[str, dict[str, Any]] = {}
        self.downloads: dict[str, DownloadJob] = {}
        self._loads: dict[str, asyncio.Task[Instance]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        for key in self.options.preload:
            if self.catalog.get(key) is None:
                raise ValueError(f"preload model {key!r} is not in catalog {self.catalog.name!r}")

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load ``preload`` models (as if by ``lms load``) and start the idle-TTL reaper."""
        self.loop = asyncio.get_running_loop()
        for key in self.options.preload:
            await self.load(key, jit=False, ttl_s=None, instant=True)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for instance in list(self.instances.values()):
            self.unload(instance.id, reason="server stopped")

    async def reset(self) -> None:
        """Back to a fresh server: nothing loaded but preloads, no truth, no counters."""
        for instance in list(self.instances.values()):
            self.unload(instance.id, reason="reset")
        for task in self._loads.values():
            task.cancel()
        self._loads.clear()
        self.truth.clear()
        self.counters.clear()
        self.responses.clear()
        self.downloads.clear()
        for key in self.options.preload:
            await self.load(key, jit=False, ttl_s=None, instant=True)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.reap_interval_s)
            self.reap_expired()

    def reap_expired(self) -> list[str]:
        """Unload every instance idle for longer than its TTL; returns the unloaded ids."""
        now = self.clock()
        gone = []
        for instance in list(self.instances.values()):
            if (
                instance.state == "loaded"
                and instance.ttl_s is not None
                and not instance.busy
                and now - instance.idle_since >= instance.ttl_s
            ):
                self.unload(instance.id, reason="idle TTL expired")
                gone.append(instance.id)
        return gone

    # -- model resolution and loading ----------------------------------------------------------

    def loaded(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.state == "loaded"]

    def spec_for(self, name: str) -> ModelSpec | None:
        """Catalog spec for a key, a ``key@quant`` variant or a ``key:N`` instance id."""
        spec = self.catalog.get(name)
        if spec is None and "@" in name:
            spec = self.catalog.get(name.split("@", 1)[0])
        if spec is None and name in self.instances:
            spec = self.instances[name].spec
        return spec

    def _pick(self, key: str) -> Instance | None:
        candidates = [
            i for i in self.instances.values() if i.spec.key == key and not i.draining
        ]
        if not candidates:
            return None
        ready = [i for i in candidates if i.state == "loaded"]
        pool = ready or candidates
        return min(pool, key=lambda i: (i.busy >= i.parallel, i.busy, i.id))

    async def resolve(
        self, name: Any, *, ttl_s: float | None = None, want: str = "llm",
        context_length: int | None = None,
    ) -> Resolution:
        """The instance that answers a request for ``name``, JIT-loading it if needed (with
        ``context_length`` when the request sets one)."""
        self.reap_expired()
        if not isinstance(name, str) or not name:
            loaded = self.loaded()
            if len(loaded) == 1:
                return Resolution(loaded[0], loading=False, substituted=bool(name))
            if not loaded:
                raise _no_models_loaded()
            raise _model_not_found(str(name or ""), self._listing())
        exact = self.instances.get(name)
        if exact is not None and not exact.draining and exact.state != "unloaded":
            spec: ModelSpec | None = exact.spec
        else:
            spec = self.spec_for(name)
        if spec is None:
            return self._substitute(name)
        self._check_type(spec, want)
        if exact is not None and exact.state == "loaded" and not exact.draining:
            return Resolution(exact, loading=False)
        current = self._pick(spec.key)
        if current is not None and current.state == "loaded":
            return Resolution(current, loading=False)
        if not self.options.jit:
            return self._substitute(name)
        if current is not None and not self.options.duplicate_jit_instances:
            await current.ready.wait()
            self._ensure_alive(current)
            return Resolution(current, loading=True)
        ttl = ttl_s if ttl_s is not None else self.options.default_ttl_s
        instance = await self.load(spec.key, jit=True, ttl_s=ttl, context_length=context_length)
        return Resolution(instance, loading=True)

    def _substitute(self, name: str) -> Resolution:
        """Nothing can load ``name``: the only loaded model answers instead (BT#619, with
        ``substitute_single_loaded``), or the error says what is loaded or missing."""
        loaded = self.loaded()
        if not loaded:
            raise _no_models_loaded()
        if len(loaded) == 1 and self.options.substitute_single_loaded:
            return Resolution(loaded[0], loading=False, substituted=True)
        raise _model_not_found(name, self._listing())

    def _check_type(self, spec: ModelSpec, want: str) -> None:
        if want == "embedding" and not spec.is_embedding:
            message = f"Model '{spec.key}' is not an embedding model"
            raise WrongModelType(message, {"error": message})
        if want == "llm" and spec.is_embedding:
            message = f"Model '{spec.key}' is an embedding model and cannot generate text"
            raise WrongModelType(message, {"error": message})

    def _ensure_alive(self, instance: Instance) -> None:
        if instance.state == "unloaded":
            raise ModelUnloaded(instance.id, instance.unload_reason or "unloaded while loading")

    def _listing(self) -> list[str]:
        return [m.key for m in self.catalog.models]

    def _next_id(self, key: str) -> str:
        if key not in self.instances:
            return key
        n = 2
        while f"{key}:{n}" in self.instances:
            n += 1
        return f"{key}:{n}"

    async def load(
        self,
        key: str,
        *,
        jit: bool,
        ttl_s: float | None,
        instant: bool = False,
        parallel: int | None = None,
        context_length: int | None = None,
        load_options: dict[str, Any] | None = None,
    ) -> Instance:
        """Create and load a new instance of ``key`` (auto-evicting first when that is on)."""
        spec = self.catalog.get(key)
        if spec is None:
            raise _model_not_found(key, self._listing())
        if context_length is not None and not 0 < context_length <= spec.max_context_length:
            raise ContextLengthInvalid(context_length, spec)
        if jit and self.options.auto_evict:
            await self._evict_others(spec.key)
        instance = Instance(
            self._next_id(spec.key),
            spec,
            self.catalog.speed(spec),
            parallel=parallel or self.options.parallel,
            ttl_s=ttl_s,
            jit=jit,
            now=self.clock(),
            context_length=context_length,
            load_options=load_options,
        )
        self.instances[instance.id] = instance
        if not instant and instance.load_time_s > 0:
            await asyncio.sleep(instance.load_time_s)
        self._ensure_alive(instance)
        instance.state = "loaded"
        instance.idle_since = self.clock()
        instance.ready.set()
        return instance

    async def _evict_others(self, keep_key: str) -> None:
        victims = [
            i
            for i in self.instances.values()
            if i.jit and i.spec.key != keep_key and i.state != "unloaded"
        ]
        for victim in victims:
            if self.options.evict_mode == "finish":
                victim.draining = True
                await victim.idle.wait()
            self.unload(victim.id, reason="auto-evicted by a JIT load of another model")

    def unload(self, instance_id: str, *, reason: str) -> Instance:
        """Unload now: running generations are cut off, queued requests fail."""
        instance = self.instances.pop(instance_id, None)
        if instance is None:
            raise KeyError(instance_id)
        instance.state = "unloaded"
        instance.unload_reason = reason
        for record in instance.active:
            record.cut_off = True
            record.cut_off_reason = reason
        while instance.waiters:
            future, record = instance.waiters.popleft()
            record.cut_off = True
            record.cut_off_reason = reason
            if not future.done():
                future.set_exception(ModelUnloaded(instance_id, reason))
        instance.ready.set()
        instance.idle.set()
        return instance

    # -- slots ---------------------------------------------------------------------------------

    async def acquire(self, instance: Instance, record: RequestTruth) -> None:
        """Take a slot of ``instance`` (FIFO behind earlier requests); records the queue wait."""
        self._ensure_alive(instance)
        queued_at = time.monotonic()
        instance.idle.clear()
        if len(instance.active) < instance.parallel and not instance.waiters:
            instance.active.add(record)
            record.queue_wait_s = 0.0
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        instance.waiters.append((future, record))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(instance, record)  # the slot was handed over as we were cancelled
            else:
                for entry in list(instance.waiters):
                    if entry[0] is future:
                        instance.waiters.remove(entry)
                self._mark_idle(instance)
            raise
        record.queue_wait_s = time.monotonic() - queued_at

    def release(self, instance: Instance, record: RequestTruth) -> None:
        instance.active.discard(record)
        while instance.waiters and len(instance.active) < instance.parallel:
            future, nxt = instance.waiters.popleft()
            if future.done():
                continue
            instance.active.add(nxt)
            future.set_result(None)
        self._mark_idle(instance)

    def _mark_idle(self, instance: Instance) -> None:
        if not instance.busy:
            instance.idle_since = self.clock()
            instance.idle.set()

    def state(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "options": {k: v for k, v in self.options.__dict__.items()},
            "instances": [i.describe(now) for i in self.instances.values()],
        }
