"""From raw per-request records to per-level statistics, SLO verdict and validity gates.

Windows: a level's statistics use the requests *sent* (open loop: *intended*) inside that level's
measure window, i.e. after its warm-up; warm-up requests stay in the JSONL, flagged, and are never
counted. Aggregate rates follow vLLM: duration = first measured send to last measured completion,
output tokens/s = sum of N / duration, requests/s = completed / duration, goodput = requests
meeting every per-request goodput SLO / duration.

Exit codes (``harness load`` and the locustfile alike): 0 SLOs met, 1 an SLO missed, 2 run
invalid (a validity gate failed: the numbers cannot be trusted), 3 the run itself failed (the
harness: bad scenario, a worker died, outputs not written), 4 target error (the server stopped
answering: connections refused or reset, so the run stopped early; not an SLO miss), 130
interrupted (SIGINT/Ctrl-C, SIGTERM or STOP in the web UI: the summary and report of what ran
are written, marked interrupted; ``harness load`` returns 128 + the signal's number, so 143 for
SIGTERM).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from harness.load.metrics import Distribution, RequestRecord, percentile, pooled_gaps
from harness.load.scenario import SLO, Scenario
from harness.load.stalls import MIN_STALL_S, Stall, describe
from harness.load.truth import TruthComparison

EXIT_PASS, EXIT_SLO_FAILED, EXIT_INVALID, EXIT_ERROR, EXIT_TARGET = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130


class SLOCheck(BaseModel):
    name: str
    limit: float
    measured: float | None
    passed: bool


class LevelStats(BaseModel):
    index: int
    target: float
    unit: str
    requests: int
    ok: int
    errors: int
    error_rate: float
    errors_by_kind: dict[str, int]
    duration_s: float
    output_tokens: int
    output_tps: float
    rps: float
    goodput_rps: float | None
    usage_missing: int
    ttft_ms: Distribution
    ttfo_ms: Distribution
    e2e_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution  # per request: its mean inter-chunk gap
    request_tps: Distribution  # per request: N / E2E
    icl_ms: Distribution  # pooled: every inter-chunk gap of every request
    tokens_per_chunk: Distribution
    schedule_lag_ms: Distribution
    queued_e2e_ms: Distribution
    server_ttft_ms: Distribution
    server_tps: Distribution
    slo: list[SLOCheck] = Field(default_factory=list)
    passed: bool = True


class Gate(BaseModel):
    name: str
    passed: bool
    detail: str


class TimePoint(BaseModel):
    second: int
    completed: int
    output_tokens: int
    ttft_p95_ms: float | None
    errors: int


def _good(record: RequestRecord, slo: SLO) -> bool:
    if not record.ok:
        return False
    checks = ((slo.goodput_ttft_ms, record.ttft), (slo.goodput_tpot_ms, record.tpot),
              (slo.goodput_e2e_ms, record.e2e))
    return all(limit is None or (value is not None and value * 1000 <= limit)
               for limit, value in checks)


def level_records(records: list[RequestRecord], level: int) -> list[RequestRecord]:
    return [r for r in records if r.level == level and not r.warmup]


def level_stats(scenario: Scenario, level: int, records: list[RequestRecord]) -> LevelStats:
    shape, slo = scenario.load, scenario.slo
    ok = [r for r in records if r.ok]
    kinds = Counter(r.error_kind or "Error" for r in records if not r.ok)
    if records:
        start = min(r.t_send for r in records)
        end = max((r.t_done or r.t_send) for r in records)
        duration = max(end - start, 1e-9)
    else:
        duration = 0.0
    tokens = sum(r.output_tokens for r in ok)
    goodput_set = any(v is not None for v in (slo.goodput_ttft_ms, slo.goodput_tpot_ms,
                                              slo.goodput_e2e_ms))
    stats = LevelStats(
        index=level,
        target=shape.levels[level],
        unit="users" if shape.mode == "closed" else "req/s",
        requests=len(records),
        ok=len(ok),
        errors=len(records) - len(ok),
        error_rate=(len(records) - len(ok)) / len(records) if records else 0.0,
        errors_by_kind=dict(kinds),
        duration_s=duration,
        output_tokens=tokens,
        output_tps=tokens / duration if duration else 0.0,
        rps=len(ok) / duration if duration else 0.0,
        goodput_rps=(sum(_good(r, slo) for r in records) / duration
                     if goodput_set and duration else None),
        usage_missing=sum(r.usage_missing for r in ok),
        ttft_ms=Distribution.of(r.ttft for r in ok),
        ttfo_ms=Distribution.of(r.ttfo for r in ok),
        e2e_ms=Distribution.of(r.e2e for r in ok),
        tpot_ms=Distribution.of(r.tpot for r in ok),
        itl_ms=Distribution.of(r.itl for r in ok),
        request_tps=Distribution.of((r.output_tps for r in ok), scale=1.0),
        icl_ms=Distribution.of(pooled_gaps(ok)),
        tokens_per_chunk=Distribution.of((r.tokens_per_chunk for r in ok), scale=1.0),
        schedule_lag_ms=Distribution.of(r.schedule_lag for r in records),
        queued_e2e_ms=Distribution.of(r.queued_e2e for r in ok),
        server_ttft_ms=Distribution.of(r.server_ttft_s for r in ok),
        server_tps=Distribution.of((r.server_tps for r in ok), scale=1.0),
    )
    stats.slo = slo_checks(slo, stats)
    stats.passed = all(c.passed for c in stats.slo)
    return stats


def slo_checks(slo: SLO, stats: LevelStats) -> list[SLOCheck]:
    """One check per SLO the scenario sets; a missing measurement fails its check."""
    checks: list[SLOCheck] = []

    def at_most(name: str, limit: float | None, measured: float | None) -> None:
        if limit is not None:
            checks.append(SLOCheck(name=name, limit=limit, measured=measured,
                                   passed=measured is not None and measured <= limit))

    at_most("p95 TTFT (ms)", slo.ttft_p95_ms, stats.ttft_ms.p95)
    at_most("p99 TPOT (ms)", slo.tpot_p99_ms, stats.tpot_ms.p99)
    at_most("p95 E2E (ms)", slo.e2e_p95_ms, stats.e2e_ms.p95)
    at_most("error rate", slo.error_rate_max, stats.error_rate if stats.requests else None)
    if slo.min_output_tps is not None:
        checks.append(SLOCheck(name="output tokens/s (min)", limit=slo.min_output_tps,
                               measured=stats.output_tps,
                               passed=stats.output_tps >= slo.min_output_tps))
    return checks


SERVER_USAGE = "server usage"
CHUNK_COUNTED = "tokens counted from stream chunks, server sent no usage"


def token_counts(records: list[RequestRecord]) -> str | None:
    """Where N (output tokens) came from over ``records``' successful requests.

    ``SERVER_USAGE`` when each carried usage (or native stats); ``CHUNK_COUNTED`` when the
    server sent usage for none and every request streamed: llama-cpp-python's server never
    streams usage, whatever ``stream_options`` asks, and such a run is still measurable, one
    content chunk per token, said as such. Anything else (usage on some requests only, or a
    non-streamed answer without usage, whose single chunk says nothing about N) is a mix: the
    counts cannot be trusted. None without successful requests."""
    ok = [r for r in records if r.ok]
    if not ok:
        return None
    missing = sum(r.usage_missing for r in ok)
    if not missing:
        return SERVER_USAGE
    if missing == len(ok) and all(r.stream for r in ok):
        return CHUNK_COUNTED
    return (f"mixed: {missing} of {len(ok)} successful request(s) without usage/stats "
            f"(N fell back to counting chunks for them)")


def _usage_detail(counted: str | None, measured: list[RequestRecord]) -> str:
    if counted is None or counted == SERVER_USAGE:
        return "every successful request carried usage"
    if counted == CHUNK_COUNTED:
        n = sum(r.ok for r in measured)
        return (f"{CHUNK_COUNTED}: N = content chunks for all {n} request(s), one token per "
                "chunk (TPOT and tokens/s rest on it; no usage was invented)")
    unstreamed = sum(r.ok and r.usage_missing and not r.stream for r in measured)
    why = (f"; {unstreamed} non-streamed answer(s) without usage cannot be counted"
           if unstreamed else "; the server sent usage for the others")
    return counted + why


def validity_gates(scenario: Scenario, records: list[RequestRecord], *, cpu_max: float | None,
                   cpu_warning: bool, truth: TruthComparison | None,
                   stalls: Sequence[Stall] = ()) -> list[Gate]:
    gates = scenario.gates
    measured = [r for r in records if not r.warmup]
    out = [Gate(name="requests measured", passed=bool(measured),
                detail=f"{len(measured)} request(s) outside warm-up")]
    cpu_text = "-" if cpu_max is None else f"{cpu_max:.0f}%"
    cpu_bad = cpu_warning or (cpu_max is not None and cpu_max > gates.cpu_percent_max)
    out.append(Gate(name="load generator CPU", passed=not cpu_bad,
                    detail=f"max {cpu_text} (limit {gates.cpu_percent_max:.0f}%"
                           f"{'; Locust CPU warning fired' if cpu_warning else ''})"))
    if scenario.load.mode == "open":
        lag = percentile([r.schedule_lag * 1000 for r in measured], 99)
        out.append(Gate(name="schedule lag p99",
                        passed=lag is None or lag <= gates.schedule_lag_p99_ms,
                        detail=f"{'-' if lag is None else f'{lag:.2f}'} ms "
                               f"(limit {gates.schedule_lag_p99_ms:g} ms)"))
    if gates.require_usage:
        counted = token_counts(measured)
        out.append(Gate(name="server token counts (usage)",
                        passed=counted in (None, SERVER_USAGE, CHUNK_COUNTED),
                        detail=_usage_detail(counted, measured)))
    streamed = [r for r in measured if r.stream and r.ok and r.t_first_token is not None]
    if truth is not None and truth.paired:
        # The truth says when each first token was written: a merged read the server caused
        # (it wrote two frames at once) is no generator fault, a late read of the generator is.
        pct = 100.0 * truth.late_first_tokens / truth.paired
        passed = pct <= gates.late_first_tokens_pct_max
        why = "" if passed else describe(stalls, MIN_STALL_S)
        out.append(Gate(name="load generator kept up (first tokens read in time)",
                        passed=passed,
                        detail=f"{truth.late_first_tokens} of {truth.paired} first token(s) "
                               f"({pct:.1f}%) were read over {truth.late_ms:g} ms after the "
                               f"emulator wrote them (limit {gates.late_first_tokens_pct_max:g}"
                               "%); add workers or free the load generator's cores"
                               + (f". {why}" if why else "")))
    elif streamed:
        limit_s = gates.late_first_token_ms / 1000
        late = sum(r.ttft_uncertainty > limit_s for r in streamed)
        pct = 100.0 * late / len(streamed)
        out.append(Gate(name="load generator kept up (first tokens read in time)",
                        passed=pct <= gates.late_first_tokens_pct_max,
                        detail=f"{late} of {len(streamed)} first token(s) ({pct:.1f}%) were read "
                               f"together with later ones, so their TTFT may be over "
                               f"{gates.late_first_token_ms:g} ms late (limit "
                               f"{gates.late_first_tokens_pct_max:g}%); add workers"))
    if gates.truth_ttft_error_p95_ms is not None:
        err = truth.ttft_abs_error_ms.p95 if truth and truth.ttft_abs_error_ms else None
        out.append(Gate(name="TTFT error vs emulator truth p95",
                        passed=err is not None and err <= gates.truth_ttft_error_p95_ms,
                        detail=f"{'-' if err is None else f'{err:.2f}'} ms "
                               f"(limit {gates.truth_ttft_error_p95_ms:g} ms)"))
    return out


def time_series(records: list[RequestRecord], t0: float) -> list[TimePoint]:
    """Per-second completions, output tokens, p95 TTFT and errors (by completion time)."""
    buckets: dict[int, list[RequestRecord]] = {}
    for r in records:
        end = r.t_done if r.t_done is not None else r.t_send
        buckets.setdefault(int(end - t0), []).append(r)
    points = []
    for second in sorted(buckets):
        group = buckets[second]
        ok = [r for r in group if r.ok]
        ttfts = [r.ttft * 1000 for r in ok if r.ttft is not None]
        points.append(TimePoint(second=second, completed=len(ok),
                                output_tokens=sum(r.output_tokens for r in ok),
                                ttft_p95_ms=percentile(ttfts, 95),
                                errors=len(group) - len(ok)))
    return points


class Verdict(BaseModel):
    name: str  # pass | fail | invalid | interrupted | target-error | error
    exit_code: int
    reasons: list[str]


def verdict(levels: list[LevelStats], gates: list[Gate], *, run_errors: list[str],
            target_error: str | None = None, interrupted: str | None = None,
            interrupt_code: int = EXIT_INTERRUPTED) -> Verdict:
    """The run's verdict, the worst first: the harness failed, the target failed, the run was
    interrupted, a validity gate failed, an SLO was missed; otherwise pass. Every reason is kept,
    so an interrupted run still says which gates and SLOs its partial numbers missed."""
    reasons = [f"run error: {e}" for e in run_errors]
    if target_error:
        reasons.append(f"target error: {target_error}")
    if interrupted:
        reasons.append(f"interrupted: {interrupted}")
    reasons += [f"invalid: {g.name}: {g.detail}" for g in gates if not g.passed]
    ended_early = bool(target_error or interrupted or run_errors)
    reached = [lv for lv in levels if lv.requests or not ended_early]
    if len(reached) < len(levels):
        reasons.append("levels not reached: " + ", ".join(
            f"{lv.target:g} {lv.unit}" for lv in levels if lv not in reached))
    reasons += [f"level {lv.index} ({lv.target:g} {lv.unit}): SLO {c.name} measured "
                f"{'-' if c.measured is None else f'{c.measured:.3g}'} vs limit {c.limit:g}"
                for lv in reached for c in lv.slo if not c.passed]
    if run_errors:
        return Verdict(name="error", exit_code=EXIT_ERROR, reasons=reasons)
    if target_error:
        return Verdict(name="target-error", exit_code=EXIT_TARGET, reasons=reasons)
    if interrupted:
        return Verdict(name="interrupted", exit_code=interrupt_code, reasons=reasons)
    if any(not g.passed for g in gates):
        return Verdict(name="invalid", exit_code=EXIT_INVALID, reasons=reasons)
    if any(not lv.passed for lv in levels):
        return Verdict(name="fail", exit_code=EXIT_SLO_FAILED, reasons=reasons)
    return Verdict(name="pass", exit_code=EXIT_PASS, reasons=reasons)


def read_records(path: Path) -> list[RequestRecord]:
    records = []
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read request records {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(RequestRecord.from_json(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a request record: {exc}") from exc
    return records


SWEEP_COLUMNS = (
    "level", "target", "unit", "requests", "ok", "errors", "error_rate", "output_tps", "rps",
    "goodput_rps", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms",
    "itl_p50_ms", "itl_p99_ms", "request_tps_p50", "icl_p50_ms", "icl_p99_ms", "e2e_p50_ms",
    "e2e_p95_ms", "schedule_lag_p99_ms",
    "queued_e2e_p95_ms", "tokens_per_chunk_mean", "usage_missing", "slo_passed",
)


def sweep_row(stats: LevelStats) -> dict[str, Any]:
    return {
        "level": stats.index, "target": stats.target, "unit": stats.unit,
        "requests": stats.requests, "ok": stats.ok, "errors": stats.errors,
        "error_rate": round(stats.error_rate, 6), "output_tps": round(stats.output_tps, 3),
        "rps": round(stats.rps, 3),
        "goodput_rps": None if stats.goodput_rps is None else round(stats.goodput_rps, 3),
        "ttft_p50_ms": stats.ttft_ms.p50, "ttft_p95_ms": stats.ttft_ms.p95,
        "ttft_p99_ms": stats.ttft_ms.p99, "tpot_p50_ms": stats.tpot_ms.p50,
        "tpot_p99_ms": stats.tpot_ms.p99, "itl_p50_ms": stats.itl_ms.p50,
        "itl_p99_ms": stats.itl_ms.p99, "request_tps_p50": stats.request_tps.p50,
        "icl_p50_ms": stats.icl_ms.p50,
        "icl_p99_ms": stats.icl_ms.p99, "e2e_p50_ms": stats.e2e_ms.p50,
        "e2e_p95_ms": stats.e2e_ms.p95, "schedule_lag_p99_ms": stats.schedule_lag_ms.p99,
        "queued_e2e_p95_ms": stats.queued_e2e_ms.p95,
        "tokens_per_chunk_mean": stats.tokens_per_chunk.mean,
        "usage_missing": stats.usage_missing, "slo_passed": stats.passed,
    }


def write_sweep_csv(path: Path, levels: list[LevelStats]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SWEEP_COLUMNS)
        writer.writeheader()
        for stats in levels:
            row = sweep_row(stats)
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def entry_name(endpoint: str, model: str) -> str:
    """The name of a request's one Locust entry (and of its row in the LLM table and CSV)."""
    return f"{endpoint} {model}"


LLM_COLUMNS = (
    "level", "target", "unit", "name", "requests", "errors", "rps", "output_tps",
    "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p95_ms", "itl_p99_ms",
    "tpot_p50_ms", "tpot_p95_ms", "tpot_p99_ms", "request_tps_mean", "request_tps_p50",
    "request_tps_p5", "slo_passed",
)


def llm_rows(scenario: Scenario, records: list[RequestRecord],
             levels: Iterable[LevelStats] = ()) -> list[dict[str, Any]]:
    """Per level and per Locust entry name (plus an "Aggregated" row when a level has several):
    the LLM metrics Locust's own table cannot hold, aggregated per request, warm-up excluded.
    ``levels``: whole-level stats the caller already has, reused instead of computed again."""
    known = {lv.index: lv for lv in levels}
    rows: list[dict[str, Any]] = []
    for level in range(len(scenario.load.levels)):
        measured = level_records(records, level)
        if not measured:
            continue
        groups: dict[str, list[RequestRecord]] = {}
        for r in measured:
            groups.setdefault(entry_name(r.endpoint, r.model), []).append(r)
        named = sorted(groups.items())
        if len(named) > 1:
            named.append(("Aggregated", measured))
        for name, group in named:
            whole = len(named) == 1 or name == "Aggregated"
            stats = known.get(level) if whole else None
            if stats is None:
                stats = level_stats(scenario, level, group)
            p5 = percentile([v for r in group if r.ok and (v := r.output_tps) is not None], 5)
            rows.append({
                "level": level, "target": stats.target, "unit": stats.unit, "name": name,
                "requests": stats.requests, "errors": stats.errors, "rps": stats.rps,
                "output_tps": stats.output_tps,
                "ttft_p50_ms": stats.ttft_ms.p50, "ttft_p95_ms": stats.ttft_ms.p95,
                "ttft_p99_ms": stats.ttft_ms.p99, "itl_p50_ms": stats.itl_ms.p50,
                "itl_p95_ms": stats.itl_ms.p95, "itl_p99_ms": stats.itl_ms.p99,
                "tpot_p50_ms": stats.tpot_ms.p50, "tpot_p95_ms": stats.tpot_ms.p95,
                "tpot_p99_ms": stats.tpot_ms.p99, "request_tps_mean": stats.request_tps.mean,
                "request_tps_p50": stats.request_tps.p50, "request_tps_p5": p5,
                "slo_passed": stats.passed,
            })
    return rows


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else value


def llm_csv(handle: Any, rows: list[dict[str, Any]]) -> None:
    """``llm_rows`` as CSV into ``handle`` (a file, or a buffer for the web UI's download: the
    rows its LLM tab shows, so both read one aggregation)."""
    writer = csv.DictWriter(handle, fieldnames=LLM_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})


def write_llm_csv(path: Path, scenario: Scenario, records: list[RequestRecord],
                  levels: Iterable[LevelStats] = ()) -> None:
    """``<--csv prefix>_llm.csv``: Locust's CSVs hold one response time per request; this file
    holds the per-request LLM metrics beside them (TTFT, ITL, TPOT, tokens/s). ``levels``: as
    for ``llm_rows``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        llm_csv(handle, llm_rows(scenario, records, levels))
