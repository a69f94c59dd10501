"""Tests written against the catalog's mutants (docs/mutation.md): each pins one boundary or
counter the behavioural tests let drift: the TTL's exact edge, the size bound and its count,
the fetch counter, the age, an async invalidation during an in-flight refresh, exact ids
before loose matches, the closest-ids hint and its fallback, and the wrong-shell errors."""

from __future__ import annotations

import asyncio

import pytest

from harness.client.catalog import ModelCatalog
from harness.client.errors import ModelNotFound, ValidationError
from harness.client.models import ModelInfo


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def listing(*ids: str) -> list[ModelInfo]:
    return [ModelInfo(id=i) for i in ids]


def test_an_entry_is_stale_exactly_at_its_ttl() -> None:
    clock, calls = Clock(), []

    def fetch() -> list[ModelInfo]:
        calls.append(clock.now)
        return listing("a/one")

    catalog = ModelCatalog(fetch=fetch, ttl=10.0, clock=clock)
    assert catalog.age is None
    catalog.models()
    clock.now += 9.999
    catalog.models()
    assert calls == [50.0] and catalog.age == pytest.approx(9.999)
    clock.now += 0.001  # exactly ttl after the fetch
    catalog.models()
    assert calls == [50.0, 60.0] and catalog.fetches == 2 and catalog.age == 0.0


def test_the_size_bound_keeps_the_first_entries_and_counts_the_rest() -> None:
    catalog = ModelCatalog(fetch=lambda: listing("a", "b", "c", "d"), max_entries=3)
    assert [m.id for m in catalog.models()] == ["a", "b", "c"]
    assert catalog.truncated == 1
    exact = ModelCatalog(fetch=lambda: listing("a", "b", "c"), max_entries=3)
    assert len(exact.models()) == 3 and exact.truncated == 0


@pytest.mark.parametrize(("ttl", "entries"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_catalog_needs_a_positive_ttl_and_size(ttl: float, entries: int) -> None:
    with pytest.raises(ValidationError):
        ModelCatalog(fetch=list, ttl=ttl, max_entries=entries)


def test_the_smallest_positive_bounds_are_accepted() -> None:
    catalog = ModelCatalog(fetch=lambda: listing("a", "b"), ttl=0.001, max_entries=1)
    assert [m.id for m in catalog.models()] == ["a"]


def test_an_exact_id_wins_over_a_looser_match() -> None:
    catalog = ModelCatalog(fetch=lambda: listing("qwen/qwen3-4b@q8_0", "qwen/qwen3-4b"))
    found = catalog.get("qwen/qwen3-4b")
    assert found is not None and found.id == "qwen/qwen3-4b"
    loose = catalog.get("qwen3-4b@q8_0")
    assert loose is not None and loose.id.startswith("qwen/qwen3-4b")
    assert catalog.get("google/gemma-3-12b") is None


def test_model_not_found_names_the_closest_ids_or_else_the_first_five() -> None:
    ids = ("qwen/qwen3-4b", "qwen/qwen3-8b", "a/x", "b/y", "c/z", "d/w", "e/v")
    catalog = ModelCatalog(fetch=lambda: listing(*ids))
    with pytest.raises(ModelNotFound) as near:
        catalog.validate_model("qwen/qwen3-14b")
    assert near.value.available[:2] == ("qwen/qwen3-4b", "qwen/qwen3-8b")
    assert "qwen/qwen3-14b" in str(near.value)
    with pytest.raises(ModelNotFound) as far:
        catalog.validate_model("zzzzzzzzzzzzzzzzzzzzzzzz/qqqqqqqqqqqqqqqqq")
    assert far.value.available == ids[:5]


def test_a_loose_name_still_gets_its_near_miss() -> None:
    """"gemma" is a 0.3-0.6 match for "google/gemma-3-12b": named, not the first five ids."""
    ids = ("qwen/qwen3-4b", "google/gemma-3-12b", "a/x", "b/y", "c/z", "d/w")
    with pytest.raises(ModelNotFound) as info:
        ModelCatalog(fetch=lambda: listing(*ids)).validate_model("gemma")
    assert info.value.available == ("google/gemma-3-12b",)


def test_each_catalog_refuses_the_other_shells_calls() -> None:
    with pytest.raises(RuntimeError,
                       match=r"^this catalog belongs to an AsyncClient: use await amodels\(\)$"):
        ModelCatalog(afetch=None).models()

    async def sync_only() -> None:
        await ModelCatalog(fetch=list).amodels()

    with pytest.raises(RuntimeError, match=r"^this catalog belongs to a Client: use models\(\)$"):
        asyncio.run(sync_only())


async def test_an_async_invalidate_during_a_refresh_wins() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    versions = iter(["old", "new"])

    async def afetch() -> list[ModelInfo]:
        version = next(versions)
        if version == "old":
            started.set()
            await release.wait()
        return listing(f"m/{version}")

    catalog = ModelCatalog(afetch=afetch)
    refresh = asyncio.create_task(catalog.amodels())
    await started.wait()
    catalog.invalidate()  # the server changed while the listing was in flight
    release.set()
    assert [m.id for m in await refresh] == ["m/old"]  # the caller gets what it fetched
    assert catalog.age is None  # but it is not cached
    assert [m.id for m in await catalog.amodels()] == ["m/new"]
    assert catalog.fetches == 2
    assert (await catalog.aget("m/new")) is not None
    assert (await catalog.avalidate_model("m/new")).id == "m/new"
