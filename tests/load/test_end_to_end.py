"""Real, short, bounded Locust runs against the emulator on loopback."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from harness.load.runner import LoadOptions, LoadRun, run_load
from harness.load.scenario import load_scenario
from harness.load.server import LoadRunError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "load"
GENERATOR_GATES = ("invalid: load generator CPU", "invalid: load generator kept up")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_two_worker_run_produces_every_output(emulator_url: str, tmp_path: Path) -> None:
    options = LoadOptions(scenario_path=FIXTURES / "smoke.toml", base_url=emulator_url,
                          out_dir=tmp_path, workers=2)
    code, summary = run_load(options)
    # On a busy shared machine the generator may fall behind: then (and only then) the run is
    # invalid, by the gates that say so, never by an SLO or an error.
    assert summary["verdict"] in ("pass", "invalid") and code == summary["exit_code"], summary
    assert all(reason.startswith(GENERATOR_GATES) for reason in summary["reasons"]), summary
    for name in ("requests.jsonl", "summary.json", "sweep.csv", "report.md", "report.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert {r["worker"] for r in rows} == {0, 1}
    assert any(r["warmup"] for r in rows) and all(r["ok"] for r in rows)
    for key in ("t_intended", "t_send", "t_first_token", "t_last_token"):
        assert all(isinstance(r[key], float) for r in rows)
    sweep = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(sweep) == 1 + 2  # header + one row per level
    assert [lv["requests"] > 0 for lv in summary["levels"]] == [True, True]
    assert summary["server"]["models"]["qwen/qwen3-4b"]["parallel"] == [64]
    truth = summary["truth"]
    assert truth["paired"] == sum(not r["warmup"] for r in rows)
    assert truth["mismatched"] == 0
    assert truth["ttft_abs_error_ms"]["p50"] < 5.0
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "src=\"http" not in html and "TPOT" in html
    assert "Metric definitions" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_open_loop_429_storm_counts_typed_errors_and_misses_its_slo(emulator_url: str,
                                                                    tmp_path: Path) -> None:
    options = LoadOptions(scenario_path=FIXTURES / "storm_429.toml", base_url=emulator_url,
                          out_dir=tmp_path, workers=1, duration_s=2.0)
    code, summary = run_load(options)
    level = summary["levels"][0]
    assert any("SLO error rate" in reason for reason in summary["reasons"]), summary["reasons"]
    others = [r for r in summary["reasons"] if "SLO error rate" not in r]
    assert all(r.startswith(GENERATOR_GATES) for r in others), others  # a busy machine only
    assert (code, summary["verdict"]) in ((1, "fail"), (2, "invalid"))
    assert set(level["errors_by_kind"]) == {"RateLimited"}
    assert 0.2 < level["error_rate"] < 0.8


@pytest.mark.timeout(30)
def test_unreachable_server_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    options = LoadOptions(scenario_path=FIXTURES / "smoke.toml", base_url="http://127.0.0.1:9",
                          out_dir=tmp_path, workers=1)
    started = time.time()
    with pytest.raises(LoadRunError, match=r"127\.0\.0\.1:9/v1/models: server unreachable"):
        run_load(options)
    assert time.time() - started < 10


def _wait_for_records(out: Path, timeout: float = 20) -> None:
    """Until the run's first records are written (its first requests completed)."""
    deadline = time.time() + timeout
    records = out / "requests.jsonl"
    while not (records.exists() and records.stat().st_size) and time.time() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_crashed_worker_ends_the_run_with_an_error_naming_it(emulator_url: str,
                                                              tmp_path: Path) -> None:
    options = LoadOptions(scenario_path=FIXTURES / "smoke.toml", base_url=emulator_url,
                          out_dir=tmp_path, workers=2, duration_s=20)  # a 40 s plan
    run = LoadRun(options, load_scenario(options.scenario_path).with_overrides(duration_s=20))
    run.start()
    try:
        _wait_for_records(tmp_path)
        os.kill(run.workers[1].pid, signal.SIGKILL)
        started = time.time()
        with pytest.raises(LoadRunError, match=r"worker 1 \(pid \d+\) exited with code -9"):
            run.watch()
        assert time.time() - started < 15  # at once, not at the plan's end
    finally:
        run.stop_all()
    assert all(p.poll() is not None for p in run.procs)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_stopped_worker_reports_its_stall_in_the_summary(emulator_url: str,
                                                          tmp_path: Path) -> None:
    """A worker frozen for 300 ms inside a measured window (SIGSTOP: as if other processes had
    its core) notes the stall of its loop and ships it to the master's summary."""
    options = LoadOptions(scenario_path=FIXTURES / "smoke.toml", base_url=emulator_url,
                          out_dir=tmp_path, workers=2)
    run = LoadRun(options, load_scenario(options.scenario_path))
    run.start()
    try:
        _wait_for_records(tmp_path)
        time.sleep(0.3)  # inside level 0's measured window (0.5 s to 3 s after t0)
        os.kill(run.workers[1].pid, signal.SIGSTOP)
        time.sleep(0.3)
        os.kill(run.workers[1].pid, signal.SIGCONT)
        assert run.watch() in (0, 1, 2)  # 2: first tokens due in the stop were read late
    finally:
        run.stop_all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    stalls = summary["worker_stalls"]
    assert any(s["lag_s"] >= 0.25 for s in stalls), stalls
    assert all(s["cpu_wait_s"] <= s["lag_s"] + 0.01 for s in stalls)
    kept_up = next(g for g in summary["gates"] if g["name"].startswith("load generator kept up"))
    if not kept_up["passed"]:  # the gate says why: a stall of the worker's own (not runnable)
        assert "worker loop stall(s) over 20 ms" in kept_up["detail"], kept_up
