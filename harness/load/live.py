"""The run so far, as the web UI shows it: LLM metrics per level, the scenario and a live verdict.

Why on the master and from the records: Locust's own statistics hold one response time per
request (one entry per request: its TTFT), and cannot aggregate ITL, TPOT or tokens/s. The master
already receives every record for ``requests.jsonl``; keeping them here lets the web UI compute,
with the same analysis code as the final report, the same numbers the report will print, and a
verdict that is the report's verdict on the requests finished so far (truth excluded).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from harness.load.analysis import (
    LevelStats,
    Verdict,
    level_records,
    level_stats,
    llm_rows,
    validity_gates,
    verdict,
)
from harness.load.metrics import RequestRecord
from harness.load.scenario import Scenario

SNAPSHOT_TTL_S = 1.0  # the web UI polls every 2 s; one computation serves every tab and poll


@dataclass
class Snapshot:
    at: float
    levels: list[LevelStats]
    llm: list[dict[str, Any]]
    verdict: Verdict


@dataclass
class LiveRun:
    """Records of the current run, kept by the master (or the single local runner)."""

    scenario: Scenario | None = None
    t0: float | None = None
    number: int = 0
    records: list[RequestRecord] = field(default_factory=list)
    cpu_max: float = 0.0
    _cached: Snapshot | None = None

    def restart(self, scenario: Scenario, t0: float | None) -> None:
        self.scenario, self.t0 = scenario, t0
        self.number += 1
        self.records = []
        self.cpu_max = 0.0
        self._cached = None

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.records.extend(RequestRecord.from_json(row) for row in rows)

    def snapshot(self, *, run_errors: list[str], target_error: str | None,
                 interrupted: str | None, now: float | None = None) -> Snapshot | None:
        scenario = self.scenario
        if scenario is None:
            return None
        now = time.time() if now is None else now
        cached = self._cached
        if cached is not None and now - cached.at < SNAPSHOT_TTL_S:
            return cached
        started = {r.level for r in self.records}
        levels = [level_stats(scenario, i, level_records(self.records, i))
                  for i in range(len(scenario.load.levels)) if i in started]
        gates = validity_gates(scenario, self.records, cpu_max=self.cpu_max or None,
                               cpu_warning=False, truth=None)
        outcome = verdict(levels, gates, run_errors=run_errors, target_error=target_error,
                          interrupted=interrupted)
        self._cached = Snapshot(at=now, levels=levels,
                                llm=llm_rows(scenario, self.records, levels), verdict=outcome)
        return self._cached

    def progress(self, now: float | None = None) -> str:
        scenario, t0 = self.scenario, self.t0
        if scenario is None or t0 is None:
            return "not started"
        shape = scenario.load
        elapsed = (time.time() if now is None else now) - t0
        if elapsed < 0:
            return "starting"
        level = shape.level_at(elapsed)
        if level is None:
            return f"plan done ({shape.total_s:g} s); draining and writing the report"
        phase = "warm-up" if shape.is_warmup(elapsed) else "measuring"
        unit = "users" if shape.mode == "closed" else "req/s"
        return (f"{elapsed:.0f} of {shape.total_s:g} s: level {level + 1}/{len(shape.levels)} "
                f"({shape.levels[level]:g} {unit}), {phase}")


def scenario_rows(scenario: Scenario) -> list[dict[str, str]]:
    """The scenario as (field, value) rows for the web UI's scenario tab."""
    request, load, slo = scenario.request, scenario.load, scenario.slo
    unit = "users" if load.mode == "closed" else "req/s"
    rows = [
        ("scenario", scenario.name),
        ("description", scenario.description or "-"),
        ("request", f"{request.endpoint} ({'stream' if request.stream else 'no stream'}), "
                    f"max_tokens {request.max_tokens}, models {', '.join(request.models)}"),
        ("load", f"{load.mode} loop" + (f", {load.arrival} arrivals, at most "
                                        f"{load.max_concurrency} in flight"
                                        if load.mode == "open" else "")),
        ("levels", ", ".join(f"{v:g}" for v in load.levels) + f" {unit}"),
        ("level duration / warm-up / drain",
         f"{load.level_duration_s:g} s / {load.warmup_s:g} s / {load.drain_s:g} s"),
    ]
    for name, value in slo.model_dump().items():
        if value is not None:
            rows.append((f"SLO {name}", f"{value:g}"))
    for name, value in scenario.gates.model_dump().items():
        if value is not None:
            rows.append((f"gate {name}", str(value)))
    return [{"field": k, "value": v} for k, v in rows]
