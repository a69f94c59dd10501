"""Open-loop schedules (hypothesis), scenario parsing and its clear errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.load.scenario import LoadShape, ScenarioError, load_scenario, parse_scenario
from harness.load.schedule import ArrivalQueue, arrival_offsets, worker_slice

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "load"

shapes = st.builds(
    lambda rates, dur, arrival, seed: LoadShape(mode="open", levels=tuple(rates),
                                                level_duration_s=dur, warmup_s=0.0,
                                                arrival=arrival, seed=seed),
    st.lists(st.floats(0.5, 50), min_size=1, max_size=3), st.floats(0.5, 5),
    st.sampled_from(["constant", "poisson"]), st.integers(0, 1000))


@given(shapes, st.integers(1, 8))
def test_worker_slices_partition_the_shared_schedule(shape: LoadShape, workers: int) -> None:
    offsets = arrival_offsets(shape)
    assert offsets == sorted(offsets)
    assert all(0 <= t < shape.total_s for t in offsets)
    slices = [worker_slice(offsets, w, workers) for w in range(workers)]
    assert sorted(t for s in slices for t in s) == offsets  # every arrival exactly once
    assert arrival_offsets(shape) == offsets  # identical on every worker (seeded)


@given(st.floats(1, 40), st.floats(1, 4))
def test_constant_rate_delivers_rate_times_duration(rate: float, duration: float) -> None:
    shape = LoadShape(mode="open", levels=(rate,), level_duration_s=duration, warmup_s=0)
    offsets = arrival_offsets(shape)
    assert abs(len(offsets) - rate * duration) <= 1
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert all(abs(g - 1 / rate) < 1e-9 for g in gaps)


def test_arrival_queue_hands_out_absolute_due_times() -> None:
    queue = ArrivalQueue(100.0, [0.0, 0.5, 1.0])
    assert [queue.next_due(), queue.next_due(), queue.next_due(), queue.next_due()] == [
        100.0, 100.5, 101.0, None]


def test_levels_warmup_and_users_over_time() -> None:
    shape = LoadShape(levels=(1, 4), level_duration_s=10, warmup_s=2)
    assert shape.level_at(0) == 0 and shape.level_at(10.5) == 1 and shape.level_at(20) is None
    assert shape.is_warmup(1.9) and not shape.is_warmup(2.1) and shape.is_warmup(11)
    assert shape.users_at(15) == 4
    assert shape.measure_window(1) == (12, 20)


def test_every_fixture_scenario_is_valid() -> None:
    names = {load_scenario(p).name for p in FIXTURES.glob("*.toml")}
    assert {"smoke", "sync-baseline", "concurrency-sweep", "open-constant", "open-poisson",
            "ramp", "mixed-models", "long-prompts", "storm-429", "native-stats"} <= names


def test_bad_scenarios_fail_with_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[load]\nlevels = [1]\nlevel_duration_s = 1\nwarmup_s = 2\n')
    with pytest.raises(ScenarioError, match=r"bad\.toml.*warmup_s"):
        load_scenario(bad)
    bad.write_text("name = [")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    with pytest.raises(ScenarioError, match=r"request\.endpoint"):
        parse_scenario({"name": "x", "request": {"endpoint": "nope"}})
    with pytest.raises(ScenarioError, match="faults"):
        parse_scenario({"name": "x", "faults": {"rules": [{"action": {"kind": "nope"}}]}})
    with pytest.raises(ScenarioError, match="whole numbers"):
        parse_scenario({"name": "x", "load": {"levels": [1.5]}})


def test_cli_overrides() -> None:
    scenario = load_scenario(FIXTURES / "concurrency_sweep.toml")
    assert scenario.with_overrides(users=3).load.levels == (3,)
    assert scenario.with_overrides(duration_s=9).load.level_duration_s == 9
    with pytest.raises(ScenarioError, match="warmup"):
        scenario.with_overrides(duration_s=1)
    open_loop = load_scenario(FIXTURES / "open_constant.toml").with_overrides(users=7)
    assert open_loop.load.max_concurrency == 7


@pytest.mark.parametrize(("raw", "field", "bound"), [
    ({"load": {"levels": [1e9]}}, "load", "over the bound of 20000 users"),
    ({"load": {"level_duration_s": float("inf")}}, "load.level_duration_s", "finite number"),
    ({"load": {"level_duration_s": 1e6}}, "load.level_duration_s", "less than or equal to 3600"),
    ({"request": {"prompt": "x" * 1000, "prompt_repeat": 10_000_0}}, "request",
     "over the bound of 4,000,000"),
    ({"load": {"mode": "open", "levels": [float("nan")]}}, "load.levels.0", "finite number"),
    ({"load": {"mode": "open", "levels": [5000], "level_duration_s": 3600}}, "load",
     "over the bound of 2,000,000"),
    ({"request": {"max_tokens": 10**9}}, "request.max_tokens", "131072"),
    ({"load": {"max_concurrency": 10**6}}, "load.max_concurrency", "20000"),
    ({"emulator": {"tokens_per_s": 0}}, "emulator.tokens_per_s", "greater than 0"),
])
def test_absurd_values_are_refused_in_one_line_naming_field_and_bound(
        raw: dict, field: str, bound: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"name": "absurd", **raw})
    message = str(caught.value)
    assert "\n" not in message
    assert f"{field}: " in message and bound in message, message
