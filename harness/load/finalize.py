"""Wrap-up of a run: records + truth + facts -> summary.json, sweep.csv and the report.

Runs in the Locust master (or local runner) at exit, so a plain ``locust -f`` run and
``harness load`` produce the same outputs and the same exit code.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from harness.load.analysis import (
    EXIT_INTERRUPTED,
    Gate,
    LevelStats,
    TimePoint,
    level_records,
    level_stats,
    read_records,
    time_series,
    token_counts,
    validity_gates,
    verdict,
    write_llm_csv,
    write_sweep_csv,
)
from harness.load.metrics import Distribution, RequestRecord
from harness.load.scenario import Scenario
from harness.load.stalls import Stall
from harness.load.truth import TruthComparison, compare_with_truth

DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("TTFT", "send -> first chunk carrying a content, reasoning or tool-call delta (never a "
             "role-only or empty frame, never the response headers)"),
    ("TTFO", "send -> first visible content (text or tool call; reasoning excluded)"),
    ("E2E", "send -> last token-bearing chunk (the usage chunk and [DONE] do not extend it)"),
    ("TPOT", "(E2E - TTFT) / (N - 1) per request, N = output tokens from the server's usage "
             "(stream_options.include_usage) or native stats; vLLM's definition. A server that "
             "streams no usage at all (llama-cpp-python) gets N = its content chunks, and the "
             "report says 'tokens counted from stream chunks'"),
    ("ITL", "a request's mean gap between content chunks (one value per request; the LLM tab "
            "and <prefix>_llm.csv aggregate it per request, never per chunk)"),
    ("request tokens/s", "N / E2E of one request"),
    ("ICL", "inter-chunk latency: every gap between successive content chunks, pooled over "
            "requests (what vLLM calls ITL)"),
    ("tokens per chunk", "N / content chunks (1.0 unless the server coalesces tokens)"),
    ("output tokens/s", "sum of N over measured requests / (last completion - first send)"),
    ("requests/s", "successful measured requests / the same duration"),
    ("goodput", "requests meeting every per-request goodput SLO / the same duration"),
    ("schedule lag", "actual send - intended send (open loop; 0 in closed loop)"),
    ("queue-inclusive E2E", "last token - intended send: what a user arriving on schedule "
                            "waited (coordinated omission made visible)"),
)


@dataclass
class RunFacts:
    """What the runner knows besides the records."""

    t0: float | None
    base_url: str
    workers: int
    cpu_max: float | None
    cpu_warning: bool
    run_errors: list[str] = field(default_factory=list)
    server: Any = None
    api_token: str | None = None
    target_error: str | None = None  # the server stopped answering (connections refused)
    interrupted: str | None = None  # why the run stopped before its plan ended
    interrupt_code: int = EXIT_INTERRUPTED
    abandoned: int = 0  # requests in flight when an interrupted run stopped (not recorded)
    ended_at: float | None = None
    csv_prefix: str | None = None  # Locust's --csv: also write <prefix>_llm.csv
    stalls: list[Stall] = field(default_factory=list)  # worker loop stalls while measuring


class ServerCrossCheck(BaseModel):
    """The client's numbers beside the server's own, per request where it measured itself:
    LM Studio's native ``stats`` or llama.cpp's ``timings`` (``prompt_ms`` is prompt
    processing, so client TTFT - server TTFT is queueing, the first decode step and HTTP;
    ``predicted_per_token_ms`` is its decode time per token, against the client's ITL)."""

    requests: int
    source: str
    client_ttft_ms_mean: float | None
    server_ttft_ms_mean: float | None
    client_decode_tps_mean: float | None
    server_tps_mean: float | None
    client_itl_ms_mean: float | None = None
    server_itl_ms_mean: float | None = None
    ttft_minus_server_ms: Distribution | None = None  # per request: client TTFT - server's
    itl_over_server: Distribution | None = None  # per request: client ITL / server per token


class LoadReport(BaseModel):
    scenario: dict[str, Any]
    verdict: str
    valid: bool
    exit_code: int
    reasons: list[str]
    started_at: str | None
    ran_s: float | None = None  # t0 to the end of the run (shorter than the plan if interrupted)
    base_url: str
    workers: int
    locust_version: str
    server: dict[str, Any] | None
    records_total: int
    records_warmup: int
    token_counts: str | None = None  # where N came from: server usage, or stream chunks
    levels: list[LevelStats]
    gates: list[Gate]
    truth: TruthComparison | None
    server_crosscheck: ServerCrossCheck | None
    timeline: list[TimePoint]
    worker_stalls: list[dict[str, Any]] = []  # loop stalls over 20 ms while measuring
    definitions: list[tuple[str, str]]
    run_errors: list[str]
    outputs: dict[str, str]


def _on_this_host(base_url: str) -> bool:
    """Loopback targets share this host's monotonic clock with the load generator."""
    host = urlsplit(base_url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _crosscheck(records: list[RequestRecord]) -> ServerCrossCheck | None:
    both = [r for r in records if r.ok and not r.warmup and r.server_ttft_s is not None]
    if not both:
        return None

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    decode = [1.0 / r.tpot for r in both if r.tpot]
    itl = [r for r in both if r.itl is not None and r.server_itl_s]
    return ServerCrossCheck(
        requests=len(both),
        source="llama.cpp timings" if any(r.server_itl_s is not None for r in both)
        else "native stats",
        client_ttft_ms_mean=mean([r.ttft * 1000 for r in both if r.ttft is not None]),
        server_ttft_ms_mean=mean([r.server_ttft_s * 1000 for r in both
                                  if r.server_ttft_s is not None]),
        client_decode_tps_mean=mean(decode),
        server_tps_mean=mean([r.server_tps for r in both if r.server_tps is not None]),
        client_itl_ms_mean=mean([r.itl * 1000 for r in itl if r.itl is not None]),
        server_itl_ms_mean=mean([r.server_itl_s * 1000 for r in itl if r.server_itl_s]),
        ttft_minus_server_ms=Distribution.of(
            r.ttft - r.server_ttft_s for r in both
            if r.ttft is not None and r.server_ttft_s is not None),
        itl_over_server=Distribution.of(
            (r.itl / r.server_itl_s for r in itl if r.itl is not None and r.server_itl_s),
            scale=1.0) if itl else None,
    )


def finalize(out_dir: Path, scenario: Scenario, facts: RunFacts) -> LoadReport:
    from importlib.metadata import version  # not ``import locust``: that monkey-patches

    from harness.reporting.env import write_report

    records_path = out_dir / "requests.jsonl"
    records = read_records(records_path) if records_path.exists() else []
    truth_rows: list[dict[str, Any]] | None = None
    run_errors = list(facts.run_errors)
    if facts.server is not None and facts.target_error is None:
        from harness.load.server import LoadRunError, finish_server

        try:
            truth_rows = finish_server(facts.base_url, facts.server,
                                       faults_set=scenario.faults is not None,
                                       api_token=facts.api_token)
        except LoadRunError as exc:
            run_errors.append(f"fetching ground truth failed: {exc}")
    truth = (compare_with_truth(records, truth_rows, shared_clock=_on_this_host(facts.base_url),
                                late_ms=scenario.gates.late_first_token_ms)
             if truth_rows is not None else None)
    levels = [level_stats(scenario, i, level_records(records, i))
              for i in range(len(scenario.load.levels))]
    gates = validity_gates(scenario, records, cpu_max=facts.cpu_max,
                           cpu_warning=facts.cpu_warning, truth=truth, stalls=facts.stalls)
    interrupted = facts.interrupted
    if interrupted and facts.abandoned:
        interrupted += f" ({facts.abandoned} request(s) in flight were abandoned, not recorded)"
    outcome = verdict(levels, gates, run_errors=run_errors, target_error=facts.target_error,
                      interrupted=interrupted, interrupt_code=facts.interrupt_code)
    t0 = facts.t0 or (min((r.t_send for r in records), default=time.time()))
    outputs = {"records": "requests.jsonl", "summary": "summary.json", "sweep": "sweep.csv",
               "markdown": "report.md", "html": "report.html"}
    if facts.csv_prefix:
        outputs["llm_csv"] = f"{facts.csv_prefix}_llm.csv"
    report = LoadReport(
        scenario=scenario.model_dump(mode="json"),
        verdict=outcome.name, valid=all(g.passed for g in gates), exit_code=outcome.exit_code,
        reasons=outcome.reasons,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)) if facts.t0 else None,
        ran_s=(facts.ended_at - facts.t0) if facts.t0 and facts.ended_at else None,
        base_url=facts.base_url, workers=facts.workers, locust_version=version("locust"),
        server=facts.server.as_dict() if facts.server is not None else None,
        records_total=len(records), records_warmup=sum(r.warmup for r in records),
        token_counts=token_counts([r for r in records if not r.warmup]),
        levels=levels, gates=gates, truth=truth, server_crosscheck=_crosscheck(records),
        timeline=time_series([r for r in records if not r.warmup], t0),
        worker_stalls=[s.to_json() for s in sorted(facts.stalls, key=lambda s: s.at)],
        definitions=list(DEFINITIONS), run_errors=run_errors, outputs=outputs,
    )
    (out_dir / "summary.json").write_text(
        json.dumps(report.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    write_sweep_csv(out_dir / "sweep.csv", levels)
    if facts.csv_prefix:
        write_llm_csv(Path(f"{facts.csv_prefix}_llm.csv"), scenario, records, levels)
    charts = report_charts(scenario, levels, records, report.timeline)
    write_report(report, "report", out_dir, template="load/report", formats=("md", "html"),
                 extra_context={"charts": charts, "dist_rows": _dist_rows(levels)})
    return report


def report_charts(scenario: Scenario, levels: list[LevelStats], records: list[RequestRecord],
                  timeline: list[TimePoint]) -> dict[str, Any]:
    """The report's charts (also the live page's): the sweep as latency against throughput,
    TTFT and ITL CDFs per level, and the run over time."""
    from harness.load.charts import cdf_chart, line_chart

    ran = [lv for lv in levels if lv.ok]
    names = [f"{lv.target:g} {lv.unit}" for lv in ran]

    def curve(pick: Any) -> list[tuple[float, float | None]]:
        return [(lv.output_tps, pick(lv)) for lv in ran]

    by_level: dict[int, list[RequestRecord]] = {}
    for r in records:
        if r.ok and not r.warmup:
            by_level.setdefault(r.level, []).append(r)

    def cdf_series(pick: Any) -> list[tuple[str, list[float]]]:
        return [(name, [v * 1000 for r in by_level.get(lv.index, ()) if (v := pick(r)) is not None])
                for name, lv in zip(names, ran, strict=True)]

    return {
        "sweep": line_chart(
            "Latency against throughput (one point per level)", "output tokens/s", "ms",
            [("TTFT p50", curve(lambda lv: lv.ttft_ms.p50)),
             ("TTFT p95", curve(lambda lv: lv.ttft_ms.p95)),
             ("TPOT p99", curve(lambda lv: lv.tpot_ms.p99)),
             ("ITL p99", curve(lambda lv: lv.itl_ms.p99))],
            labels=[[], names]),  # the levels, once, on the TTFT p95 curve
        "ttft_cdf": cdf_chart("TTFT distribution per level (CDF)", "TTFT ms",
                              cdf_series(lambda r: r.ttft)),
        "itl_cdf": cdf_chart("ITL distribution per level (CDF, per-request mean gap)", "ITL ms",
                             cdf_series(lambda r: r.itl)),
        "over_time": line_chart(
            "Throughput over time (warm-up excluded)",
            "seconds after t0", "per second",
            [("completed req/s", [(p.second, p.completed) for p in timeline]),
             ("errors/s", [(p.second, p.errors) for p in timeline])]),
        "ttft_over_time": line_chart(
            "TTFT p95 over time (by completion second)", "seconds after t0", "ms",
            [("TTFT p95", [(p.second, p.ttft_p95_ms) for p in timeline])]),
    }


def _dist_rows(levels: list[LevelStats]) -> list[dict[str, Any]]:
    rows = []
    for lv in levels:
        for name, dist in (("TTFT ms", lv.ttft_ms), ("TTFO ms", lv.ttfo_ms),
                           ("E2E ms", lv.e2e_ms), ("TPOT ms", lv.tpot_ms), ("ITL ms", lv.itl_ms),
                           ("ICL ms (pooled)", lv.icl_ms),
                           ("tokens/chunk", lv.tokens_per_chunk),
                           ("schedule lag ms", lv.schedule_lag_ms),
                           ("queue-incl. E2E ms", lv.queued_e2e_ms),
                           ("server TTFT ms", lv.server_ttft_ms)):
            rows.append(_dist_row(f"{lv.target:g} {lv.unit}", name, dist))
    return rows


def _dist_row(level: str, name: str, dist: Distribution) -> dict[str, Any]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {"level": level, "metric": name, "count": dist.count, "mean": r(dist.mean),
            "p50": r(dist.p50), "p90": r(dist.p90), "p95": r(dist.p95), "p99": r(dist.p99),
            "max": r(dist.max)}
