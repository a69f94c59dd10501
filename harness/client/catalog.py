"""``ModelCatalog``: the model listing, cached with a TTL, a size bound and single-flight refresh.

The reference review found a validator that cached ``/models`` forever: models loaded or removed
later were never seen, and "model not found" came from a stale cache. Here an entry is never
served past ``ttl`` seconds (clock injectable), a model-not-found answer from the server
invalidates the cache, and when many callers find it cold at once only one request goes upstream
(a double-checked lock: the first caller fetches, the others wait on the lock and then read what
it stored).
"""

from __future__ import annotations

import asyncio
import difflib
import threading
import time
from collections.abc import Awaitable, Callable

from harness.client.errors import ModelNotFound, ValidationError
from harness.client.models import ModelInfo
from harness.client.validation import same_model, validate_model_id

Fetch = Callable[[], list[ModelInfo]]
AsyncFetch = Callable[[], Awaitable[list[ModelInfo]]]


class ModelCatalog:
    def __init__(
        self,
        fetch: Fetch | None = None,
        afetch: AsyncFetch | None = None,
        *,
        ttl: float = 600.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValidationError("catalog.ttl", "must be positive")
        if max_entries <= 0:
            raise ValidationError("catalog.max_entries", "must be positive")
        self._fetch, self._afetch = fetch, afetch
        self.ttl, self.max_entries, self._clock = ttl, max_entries, clock
        self._entries: dict[str, ModelInfo] = {}
        self._fetched_at: float | None = None
        self._generation = 0
        self._sync_lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None
        self.fetches = 0
        self.truncated = 0

    # -- state ---------------------------------------------------------------------------------
    def _fresh(self) -> list[ModelInfo] | None:
        fetched_at = self._fetched_at
        if fetched_at is None or self._clock() - fetched_at >= self.ttl:
            return None
        return list(self._entries.values())

    def _store(self, items: list[ModelInfo], generation: int) -> list[ModelInfo]:
        self.fetches += 1
        kept = items[: self.max_entries]
        self.truncated = len(items) - len(kept)
        if generation == self._generation:  # an invalidate() during the fetch wins
            self._entries = {m.id: m for m in kept}
            self._fetched_at = self._clock()
        return kept

    def invalidate(self) -> None:
        """Forget everything: the next lookup fetches again."""
        self._generation += 1
        self._fetched_at = None
        self._entries = {}

    @property
    def age(self) -> float | None:
        return None if self._fetched_at is None else self._clock() - self._fetched_at

    # -- sync ----------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        # The shell is checked first, so a catalog asked on the wrong one fails the same way
        # whether or not its listing happens to be cached.
        if self._fetch is None:
            raise RuntimeError("this catalog belongs to an AsyncClient: use await amodels()")
        cached = self._fresh()
        if cached is not None:
            return cached
        with self._sync_lock:
            cached = self._fresh()
            if cached is not None:
                return cached
            generation = self._generation
            return self._store(self._fetch(), generation)

    def get(self, model: str) -> ModelInfo | None:
        return _find(self.models(), model)

    def validate_model(self, model: str) -> ModelInfo:
        """The listing entry for ``model``, or ``ModelNotFound`` naming the closest ids."""
        validate_model_id(model)
        return _require(self.models(), model)

    # -- async ---------------------------------------------------------------------------------
    async def amodels(self) -> list[ModelInfo]:
        if self._afetch is None:
            raise RuntimeError("this catalog belongs to a Client: use models()")
        cached = self._fresh()
        if cached is not None:
            return cached
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            cached = self._fresh()
            if cached is not None:
                return cached
            generation = self._generation
            return self._store(await self._afetch(), generation)

    async def aget(self, model: str) -> ModelInfo | None:
        return _find(await self.amodels(), model)

    async def avalidate_model(self, model: str) -> ModelInfo:
        validate_model_id(model)
        return _require(await self.amodels(), model)


def _find(models: list[ModelInfo], model: str) -> ModelInfo | None:
    for info in models:
        if info.id == model:
            return info
    for info in models:
        if same_model(model, info.id):
            return info
    return None


def _require(models: list[ModelInfo], model: str) -> ModelInfo:
    found = _find(models, model)
    if found is not None:
        return found
    ids = [m.id for m in models]
    closest = tuple(difflib.get_close_matches(model, ids, n=5, cutoff=0.3)) or tuple(ids[:5])
    raise ModelNotFound(f"model {model!r} is not available on the server",
                        available=closest)
