"""The harness in Locust's own terms, with real Locust processes: one entry per request (so
Locust's RPS is the real request rate), the LLM metrics in their own CSV, and the web UI showing
and using the scenario, with a live verdict and clean restarts."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.studio.server import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "suites" / "load" / "locustfile.py"
SMOKE = ROOT / "fixtures" / "load" / "smoke.toml"


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_headless_csv_has_one_entry_per_request_and_an_llm_file(emulator_url: str,
                                                                 tmp_path: Path) -> None:
    out, prefix = tmp_path / "out", tmp_path / "csv" / "run"
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host",
         emulator_url, "--scenario", str(SMOKE), "--harness-out", str(out), "--csv", str(prefix),
         "--only-summary", "--loglevel", "WARNING"],
        capture_output=True, text=True, timeout=80, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    assert done.returncode == summary["exit_code"]
    assert f"harness load: smoke: {summary['verdict'].upper()}" in done.stderr  # headless verdict
    records = _records(out)
    stats = list(csv.DictReader((tmp_path / "csv" / "run_stats.csv").open()))
    entries = [row for row in stats if row["Name"] != "Aggregated"]
    assert [(row["Type"], row["Name"]) for row in entries] == [("TTFT", "chat qwen/qwen3-4b")]
    assert int(entries[0]["Request Count"]) == len(records)  # no per-chunk entries
    llm = list(csv.DictReader((tmp_path / "csv" / "run_llm.csv").open()))
    assert [float(row["target"]) for row in llm] == [2, 4]  # one row per level (one model)
    measured = [r for r in records if not r["warmup"] and r["level"] == 0]
    assert int(llm[0]["requests"]) == len(measured)
    for column in ("ttft_p95_ms", "itl_p50_ms", "tpot_p99_ms", "request_tps_p50"):
        assert float(llm[0][column]) > 0, column
    # the emulator streams 100 tokens/s: a per-request ITL near 10 ms, never a per-chunk sample
    assert 5 < float(llm[0]["itl_p50_ms"]) < 30


def _start(web: str) -> None:
    answer = httpx.post(f"{web}/swarm", data={"user_count": "1", "spawn_rate": "1"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["success"], answer.text


def _poll(web: str, until: Any, timeout: float = 40) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        data: dict[str, Any] = httpx.get(f"{web}/stats/requests", timeout=10).json()
        if until(data):
            return data
        assert time.time() < deadline, data.get("state")
        time.sleep(0.3)


def _tab(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return next(t["data"] for t in data["extended_stats"] if t["key"] == key)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_web_ui_shows_and_uses_the_scenario_with_a_live_verdict_and_restarts(
        emulator_url: str, tmp_path: Path) -> None:
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1",
         "--web-port", str(port), "--host", emulator_url, "--scenario", str(SMOKE),
         "--harness-out", str(tmp_path), "--loglevel", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                page = httpx.get(web + "/", timeout=2).text
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.2)
        args = json.loads(page.split('window.templateArgs = ', 1)[1].split("</script>")[0]
                          .strip().rstrip(";")) if "window.templateArgs = " in page else {}
        assert [t["title"] for t in args.get("extended_tabs", [])] == [
            "LLM metrics", "Scenario & verdict"], page[-2000:]
        assert args["hide_common_options"]  # no user count the scenario would ignore
        assert args["extra_options"]["scenario"]["default_value"] == str(SMOKE)  # in the form
        _start(web)
        running = _poll(web, lambda d: any(_tab(d, "harness-llm")))
        scenario = {row["field"]: row["value"] for row in _tab(running, "harness-scenario")}
        assert scenario["scenario"] == "smoke" and scenario["levels"] == "2, 4 users"
        assert scenario["SLO ttft_p95_ms"] == "2000"
        assert "verdict (so far)" in scenario
        live = httpx.get(web + "/harness/live", timeout=10).text
        assert "<svg" in live and "so far" in live
        first = _poll(web, lambda d: d["state"] == "stopped" and any(
            row["field"] == "verdict (written)" for row in _tab(d, "harness-scenario")))
        written = {row["field"]: row["value"] for row in _tab(first, "harness-scenario")}
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert written["verdict (written)"].startswith(summary["verdict"].upper())
        stats = {(e["method"], e["name"]): e["num_requests"] for e in first["stats"]
                 if e["name"] != "Aggregated"}
        assert stats == {("TTFT", "chat qwen/qwen3-4b"): len(_records(tmp_path))}
        llm_csv = httpx.get(web + "/harness/llm.csv", timeout=10).text
        assert llm_csv.startswith("level,target,unit,name,requests")
        _start(web)  # again: a second, complete run, not one stopped after 7 ms
        _poll(web, lambda d: d["state"] == "stopped" and (tmp_path / "run-2" /
                                                          "summary.json").exists(), timeout=60)
        second = json.loads((tmp_path / "run-2" / "summary.json").read_text())
        assert second["verdict"] != "interrupted", second["reasons"]
        assert all(lv["requests"] > 0 for lv in second["levels"])
        assert second["ran_s"] >= 6  # the whole 2 x 3 s plan
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
