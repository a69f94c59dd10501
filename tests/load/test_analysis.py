"""Sweep rows, SLO verdict, validity gates and truth pairing on hand-made records."""

from __future__ import annotations

import csv
from pathlib import Path

from harness.load.analysis import (
    CHUNK_COUNTED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_PASS,
    EXIT_SLO_FAILED,
    EXIT_TARGET,
    SERVER_USAGE,
    entry_name,
    level_records,
    level_stats,
    llm_rows,
    token_counts,
    validity_gates,
    verdict,
    write_llm_csv,
    write_sweep_csv,
)
from harness.load.metrics import RequestRecord
from harness.load.scenario import parse_scenario
from harness.load.truth import compare_with_truth


def _rec(level: int, t: float, ttft: float = 0.05, n: int = 11, ok: bool = True,
         warmup: bool = False, usage: bool = True, lag: float = 0.0) -> RequestRecord:
    return RequestRecord(
        endpoint="chat", model="m", stream=True, t_intended=t - lag, t_send=t,
        t_first_token=t + ttft, t_last_token=t + ttft + 0.01 * (n - 1), t_done=t + 1,
        gaps=[0.01] * (n - 1), chunks=n, n_server=n if usage else None, ok=ok,
        error_kind=None if ok else "RateLimited", status=200 if ok else 429, level=level,
        warmup=warmup)


def _scenario(**slo: float):  # type: ignore[no-untyped-def]
    return parse_scenario({"name": "t", "load": {"levels": [1, 2, 4], "level_duration_s": 5,
                                                 "warmup_s": 1}, "slo": slo})


def test_sweep_gives_one_row_per_level(tmp_path: Path) -> None:
    scenario = _scenario()
    records = [_rec(level, 100 + level * 5 + i * 0.1) for level in range(3) for i in range(4)]
    records.append(_rec(0, 99, warmup=True, ttft=9.0))  # warm-up: never counted
    levels = [level_stats(scenario, i, level_records(records, i)) for i in range(3)]
    assert [lv.requests for lv in levels] == [4, 4, 4]
    assert levels[0].ttft_ms.max is not None and levels[0].ttft_ms.max < 100
    write_sweep_csv(tmp_path / "sweep.csv", levels)
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [float(r["target"]) for r in rows] == [1, 2, 4]
    assert all(abs(float(r["tpot_p50_ms"]) - 10.0) < 1e-6 for r in rows)


def test_slo_verdict_pass_fail_and_exit_codes() -> None:
    scenario = _scenario(ttft_p95_ms=100, tpot_p99_ms=20, error_rate_max=0.1, min_output_tps=1)
    good = [_rec(0, 100 + i) for i in range(10)]
    stats = level_stats(scenario, 0, good)
    assert stats.passed and len(stats.slo) == 4
    assert (verdict([stats], [], run_errors=[]).name, verdict([stats], [], run_errors=[]).exit_code
            ) == ("pass", EXIT_PASS)
    slow = [_rec(0, 100 + i, ttft=0.2) for i in range(10)]
    stats = level_stats(scenario, 0, slow)
    assert not stats.passed
    outcome = verdict([stats], [], run_errors=[])
    assert (outcome.name, outcome.exit_code) == ("fail", EXIT_SLO_FAILED)
    assert any("p95 TTFT" in r for r in outcome.reasons)
    errors = [_rec(0, 100 + i, ok=i < 8) for i in range(10)]
    stats = level_stats(scenario, 0, errors)
    assert stats.error_rate == 0.2 and stats.errors_by_kind == {"RateLimited": 2}
    assert not stats.passed
    assert verdict([stats], [], run_errors=["worker 1 died"]).exit_code == EXIT_ERROR


def test_target_error_and_interruption_outrank_slos_and_keep_every_reason() -> None:
    scenario = _scenario(ttft_p95_ms=100)
    slow = level_stats(scenario, 0, [_rec(0, 100 + i, ttft=0.2) for i in range(10)])
    down = verdict([slow], [], run_errors=[], target_error="connection refused")
    assert (down.name, down.exit_code) == ("target-error", EXIT_TARGET)
    assert down.reasons[0] == "target error: connection refused"
    assert any("p95 TTFT" in r for r in down.reasons)  # the partial numbers still say so
    stopped = verdict([slow], [], run_errors=[], interrupted="SIGTERM", interrupt_code=143)
    assert (stopped.name, stopped.exit_code) == ("interrupted", 143)
    assert verdict([], [], run_errors=[], interrupted="STOP").exit_code == EXIT_INTERRUPTED
    assert verdict([], [], run_errors=["x"], target_error="y").exit_code == EXIT_ERROR


def test_llm_rows_aggregate_per_request_per_level_and_name(tmp_path: Path) -> None:
    scenario = _scenario()
    records = [_rec(0, 100 + i * 0.1) for i in range(4)] + [_rec(1, 105 + i * 0.1, n=6)
                                                            for i in range(3)]
    records[1].model = "other"
    records.append(_rec(0, 100, warmup=True, ttft=9.0))  # never counted
    rows = llm_rows(scenario, records)
    assert [(r["level"], r["name"], r["requests"]) for r in rows] == [
        (0, entry_name("chat", "m"), 3), (0, entry_name("chat", "other"), 1),
        (0, "Aggregated", 4), (1, entry_name("chat", "m"), 3)]
    level0 = rows[2]
    assert abs(level0["ttft_p95_ms"] - 50.0) < 1e-6  # the warm-up's 9 s TTFT is excluded
    assert abs(level0["itl_p50_ms"] - 10.0) < 1e-6 and abs(level0["tpot_p99_ms"] - 10.0) < 1e-6
    # per request: 11 tokens over its E2E of 0.05 + 0.1 s
    assert abs(level0["request_tps_p50"] - 11 / 0.15) < 1e-6
    # the live snapshot hands over the whole-level stats it has: the same rows, not recomputed
    levels = [level_stats(scenario, i, level_records(records, i)) for i in (0, 1)]
    assert llm_rows(scenario, records, levels) == rows
    write_llm_csv(tmp_path / "run_llm.csv", scenario, records)
    lines = list(csv.DictReader((tmp_path / "run_llm.csv").open()))
    assert len(lines) == 4 and lines[0]["itl_p50_ms"] == "10.000"


def test_no_data_fails_an_slo_rather_than_passing_it() -> None:
    stats = level_stats(_scenario(ttft_p95_ms=100), 0, [])
    assert not stats.passed


def test_gates_mark_runs_invalid() -> None:
    scenario = parse_scenario({"name": "t", "load": {"mode": "open", "levels": [5]}})
    fine = [_rec(0, 100 + i, lag=0.001) for i in range(20)]
    gates = validity_gates(scenario, fine, cpu_max=50, cpu_warning=False, truth=None)
    assert all(g.passed for g in gates)
    late = [_rec(0, 100 + i, lag=0.050) for i in range(20)]
    some_usage = [_rec(0, 100 + i, usage=i % 2 == 0) for i in range(20)]
    for records, cpu, warn, failing in ((late, 50, False, "schedule lag p99"),
                                        (some_usage, 50, False, "server token counts (usage)"),
                                        (fine, 95, False, "load generator CPU"),
                                        (fine, 10, True, "load generator CPU"),
                                        ([], 10, False, "requests measured")):
        gates = validity_gates(scenario, records, cpu_max=cpu, cpu_warning=warn, truth=None)
        assert [g.name for g in gates if not g.passed] == [failing]
        assert verdict([], gates, run_errors=[]).exit_code == EXIT_INVALID


def test_a_server_that_streams_no_usage_is_counted_by_chunks_and_says_so() -> None:
    """llama-cpp-python's server never streams usage: N = content chunks, the run stays valid
    and says how N was counted. Usage on some requests only, or a non-streamed answer without
    usage (one chunk says nothing about N), cannot be trusted: invalid."""
    scenario = parse_scenario({"name": "t", "load": {"levels": [1]}})
    gate = "server token counts (usage)"
    none = [_rec(0, 100 + i, usage=False) for i in range(10)]
    assert token_counts(none) == CHUNK_COUNTED
    detail = next(g for g in validity_gates(scenario, none, cpu_max=10, cpu_warning=False,
                                            truth=None) if g.name == gate)
    assert detail.passed and CHUNK_COUNTED in detail.detail, detail
    stats = level_stats(scenario, 0, none)
    assert stats.output_tokens == 110 and stats.usage_missing == 10  # 11 chunks each
    assert abs((stats.tpot_ms.p50 or 0) - 10.0) < 1e-6
    assert token_counts([_rec(0, 100 + i) for i in range(3)]) == SERVER_USAGE
    assert token_counts([_rec(0, 100, ok=False)]) is None
    plain = _rec(0, 100, usage=False, n=1)
    plain.stream = False
    for records, why in (([*none, _rec(0, 200)], "the server sent usage for the others"),
                         ([plain], "non-streamed answer(s) without usage cannot be counted")):
        assert (token_counts(records) or "").startswith("mixed: ")
        failed = [g for g in validity_gates(scenario, records, cpu_max=10, cpu_warning=False,
                                            truth=None) if not g.passed]
        assert [g.name for g in failed] == [gate] and why in failed[0].detail, failed


def _read_with(first_read_tokens: int, interval: float) -> RequestRecord:
    rec = _rec(0, 100, n=11)
    rec.t_last_token = rec.t_first_token + interval * 10  # type: ignore[operator]
    rec.first_read_tokens = first_read_tokens
    return rec


def test_gate_for_first_tokens_read_late() -> None:
    """A first token read together with later ones may be late by their intervals: invalid when
    that exceeds the limit for more than the allowed share; harmless when intervals are tiny."""
    scenario = parse_scenario({"name": "t", "load": {"levels": [5]}})
    gate = "load generator kept up (first tokens read in time)"
    in_time = [_read_with(1, 0.05) for _ in range(99)]
    for extra, ok in (([_read_with(2, 0.05)], True),        # 1 of 100 = the 1 % allowed
                      ([_read_with(2, 0.05)] * 2, False),   # 2 of 101: 50 ms late, invalid
                      ([_read_with(3, 0.002)] * 10, True)):  # 4 ms late at most: fine
        gates = validity_gates(scenario, in_time + extra, cpu_max=10, cpu_warning=False,
                               truth=None)
        assert next(g for g in gates if g.name == gate).passed is ok


def _truth(i: int, ttft: float, n: int = 3) -> dict:  # type: ignore[type-arg]
    sched = [ttft + k * 0.01 for k in range(n)] + [ttft + (n - 1) * 0.01] * 3
    return {"id": i, "endpoint": "/v1/chat/completions", "method": "POST", "stream": True,
            "status": 200, "scheduled_ttft_s": ttft, "completion_tokens": n,
            "scheduled_chunk_times_s": sched, "sent_chunk_times_s": [s + 0.0002 for s in sched]}


def test_truth_pairing_by_order_and_error() -> None:
    records = [_rec(0, 100 + i, ttft=0.0205, n=3) for i in range(5)]
    truth = [{"id": 1, "endpoint": "/v1/models", "method": "GET"}]
    truth += [_truth(i + 2, 0.02) for i in range(5)]
    cmp = compare_with_truth(records, truth)
    assert cmp.paired == 5 and cmp.mismatched == 0
    assert cmp.ttft_error_ms is not None and abs(cmp.ttft_error_ms.p50 - 0.3) < 1e-6
    assert cmp.icl_error_ms is not None and abs(cmp.icl_error_ms.max) < 1e-6
    cmp = compare_with_truth(records[:4], truth)
    assert cmp.paired == 0 and "no per-request pairing" in cmp.note
    wrong_n = [_rec(0, 100 + i, ttft=0.0205, n=4) for i in range(5)]
    assert compare_with_truth(wrong_n, truth).mismatched == 5


def test_truth_first_token_is_the_first_frame_due_at_the_scheduled_ttft() -> None:
    from harness.load.truth import _first_token_s, _token_gaps_s

    tru = {"scheduled_ttft_s": 0.02, "completion_tokens": 3,
           "scheduled_chunk_times_s": [0.0, 0.02, 0.03, 0.04, 0.04],  # role frame, 3 tokens, end
           "sent_chunk_times_s": [0.001, 0.021, 0.032, 0.041, 0.042]}
    assert _first_token_s(tru) == 0.021
    assert [round(g, 6) for g in _token_gaps_s(tru)] == [0.011, 0.009]
    assert _first_token_s({**tru, "sent_chunk_times_s": [0.001]}) is None  # never sent
    assert _token_gaps_s({**tru, "completion_tokens": 1}) == []
    assert _first_token_s({**tru, "scheduled_ttft_s": None}) is None
    assert _token_gaps_s({**tru, "scheduled_ttft_s": 0.5}) == []  # no frame due that late
