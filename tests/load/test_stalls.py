"""Worker loop stalls: the GC policy against the worker's own, and what the late-first-token gate
says with the ones left (a failed gate names whether the worker was busy or waited for its CPU).

A stall longer than one token interval makes a first token look a whole frame late: its packet
merges with the next one's in the socket, under the newer stamp."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from harness.load.analysis import validity_gates
from harness.load.metrics import RequestRecord
from harness.load.scenario import parse_scenario
from harness.load.stalls import (
    GC_FULL_EVERY,
    Stall,
    describe,
    freeze_times,
    quiet_gc,
    run_queue_wait_s,
)
from harness.load.truth import compare_with_truth


def test_a_stall_mostly_spent_waiting_for_a_cpu_is_called_a_busy_machine() -> None:
    stalls = [Stall(at=1.0, lag_s=0.060, cpu_wait_s=0.050, worker=1),
              Stall(at=2.0, lag_s=0.030, cpu_wait_s=0.020)]
    text = describe(stalls, 0.02)
    assert text.startswith("2 worker loop stall(s) over 20 ms")
    assert "longest 60 ms (worker 1)" in text and "78%" in text and "busy machine" in text


def test_a_stall_of_the_workers_own_work_says_add_workers() -> None:
    text = describe([Stall(at=1.0, lag_s=0.080, cpu_wait_s=0.005)], 0.02)
    assert "add workers or batch reads" in text and "6%" in text


def test_short_stalls_are_not_described() -> None:
    assert describe([Stall(at=1.0, lag_s=0.015, cpu_wait_s=0.0)], 0.02) == ""
    assert describe([], 0.02) == ""


def test_stalls_survive_the_trip_from_worker_to_master() -> None:
    stall = Stall(at=1.5, lag_s=0.07, cpu_wait_s=0.01, worker=2)
    assert Stall.from_json(stall.to_json()) == stall


def test_run_queue_wait_reads_schedstat_and_is_zero_without_one() -> None:
    assert run_queue_wait_s() >= 0.0
    assert run_queue_wait_s(os.getpid()) >= 0.0
    assert run_queue_wait_s("no-such-process") == 0.0


def _late_run() -> tuple[list[RequestRecord], list[dict]]:  # type: ignore[type-arg]
    """Ten streamed requests, the emulator's first token 20 ms in; two read a frame late."""
    records, truth = [], []
    for i in range(10):
        late = 0.05 if i < 2 else 0.0
        records.append(RequestRecord(
            endpoint="chat", model="m", stream=True, t_intended=100.0 + i, t_send=100.0 + i,
            t_first_token=100.0 + i + 0.02 + late, t_last_token=100.0 + i + 0.1,
            t_done=100.0 + i + 0.1, chunks=3, n_server=3, status=200, request_id=f"r{i}",
            first_read_tokens=2 if late else 1))
        truth.append({"id": i + 1, "client_request_id": f"r{i}", "endpoint": "/v1/chat/completions",
                      "method": "POST", "stream": True, "status": 200, "scheduled_ttft_s": 0.02,
                      "completion_tokens": 3, "scheduled_chunk_times_s": [0.02, 0.07, 0.12],
                      "sent_chunk_times_s": [0.02, 0.07, 0.12]})
    return records, truth


def test_the_failed_late_first_token_gate_says_why_from_the_stalls() -> None:
    scenario = parse_scenario({"name": "t", "request": {"models": ["m"]}}, where="test")
    records, truth = _late_run()
    comparison = compare_with_truth(records, truth)
    assert comparison.late_first_tokens == 2
    stalls = [Stall(at=100.05, lag_s=0.065, cpu_wait_s=0.06)]
    gate = next(g for g in validity_gates(scenario, records, cpu_max=10, cpu_warning=False,
                                          truth=comparison, stalls=stalls)
                if g.name.startswith("load generator kept up"))
    assert not gate.passed
    assert "2 of 10 first token(s)" in gate.detail and "busy machine" in gate.detail
    quiet = next(g for g in validity_gates(scenario, records, cpu_max=10, cpu_warning=False,
                                           truth=comparison)
                 if g.name.startswith("load generator kept up"))
    assert "stall" not in quiet.detail


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _sweep(levels: list[int], duration: float, warmup: float):  # type: ignore[no-untyped-def]
    return parse_scenario({"name": "gc", "request": {"endpoint": "chat", "models": ["m"]},
                           "load": {"mode": "closed", "levels": levels,
                                    "level_duration_s": duration, "warmup_s": warmup}},
                          where="test")


def test_freezes_when_each_levels_measured_window_opens() -> None:
    scenario = _sweep([1, 4, 16], duration=10, warmup=3)
    assert freeze_times(scenario.load, 1000.0) == [1003.0, 1013.0, 1023.0]


def test_quiet_gc_freezes_the_heap_and_makes_full_passes_rare(restored_gc: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    survivor = [object() for _ in range(10)]  # alive now: frozen, never walked again
    quiet_gc()
    assert gc.get_freeze_count() > len(survivor)
    assert gc.get_threshold()[2] == GC_FULL_EVERY > 10  # Python's default is 10
