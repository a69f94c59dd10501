"""ModelCatalog: TTL with a fake clock, single flight, invalidation, size bound."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from harness.client.catalog import ModelCatalog
from harness.client.errors import ModelNotFound
from harness.client.models import ModelInfo


class Upstream:
    def __init__(self) -> None:
        self.version = 0
        self.calls = 0

    def __call__(self) -> list[ModelInfo]:
        self.calls += 1
        return [ModelInfo(id=f"m/model-{self.version}"), ModelInfo(id="qwen/qwen3-4b")]


class CatalogMachine(RuleBasedStateMachine):
    """Never serves an entry older than its TTL, whatever the interleaving."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.upstream = Upstream()
        self.catalog = ModelCatalog(fetch=self.upstream, ttl=600, clock=lambda: self.now)
        self.fetched_version_at: tuple[int, float] | None = None

    @rule(seconds=st.floats(min_value=0, max_value=900))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def server_changes(self) -> None:
        self.upstream.version += 1

    @rule()
    def lookup(self) -> None:
        calls = self.upstream.calls
        ids = {m.id for m in self.catalog.models()}
        if self.upstream.calls > calls:
            self.fetched_version_at = (self.upstream.version, self.now)
        assert self.fetched_version_at is not None
        version, at = self.fetched_version_at
        assert self.now - at < 600  # served data is younger than the TTL
        assert f"m/model-{version}" in ids

    @rule()
    def invalidate(self) -> None:
        self.catalog.invalidate()

    @invariant()
    def age_within_ttl_or_stale(self) -> None:
        age = self.catalog.age
        assert age is None or age >= 0


TestCatalogMachine = CatalogMachine.TestCase
TestCatalogMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_single_flight_threads() -> None:
    started = threading.Event()
    upstream = Upstream()

    def slow() -> list[ModelInfo]:
        started.set()
        time.sleep(0.05)
        return upstream()

    catalog = ModelCatalog(fetch=slow)
    threads = [threading.Thread(target=catalog.models) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert upstream.calls == 1


async def test_single_flight_async() -> None:
    upstream = Upstream()

    async def slow() -> list[ModelInfo]:
        await asyncio.sleep(0.02)
        return upstream()

    catalog = ModelCatalog(afetch=slow)
    results = await asyncio.gather(*(catalog.amodels() for _ in range(100)))
    assert upstream.calls == 1 and all(len(r) == 2 for r in results)


def test_validate_model_names_closest_and_bound() -> None:
    catalog = ModelCatalog(fetch=lambda: [ModelInfo(id=f"qwen/qwen3-{i}b") for i in range(10)],
                           max_entries=4)
    assert len(catalog.models()) == 4 and catalog.truncated == 6
    with pytest.raises(ModelNotFound) as info:
        catalog.validate_model("qwen/qwen3-1")
    assert "qwen/qwen3-1b" in info.value.available
    assert catalog.validate_model("qwen3-2b:2").id == "qwen/qwen3-2b"


def test_invalidate_during_fetch_is_not_overwritten() -> None:
    catalog: ModelCatalog

    def fetch() -> list[ModelInfo]:
        catalog.invalidate()
        return [ModelInfo(id="a/b")]

    catalog = ModelCatalog(fetch=fetch)
    catalog.models()
    assert catalog.age is None
