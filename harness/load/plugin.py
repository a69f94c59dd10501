"""The Locust side of a load run: users, shape, start broadcast, record shipping, wrap-up.

Imported by ``suites/load/locustfile.py`` (so plain ``locust -f`` works, web UI included) and run
by ``harness load`` as a headless master with K worker processes. What happens where:

- master (or the single local runner): loads the scenario (``--scenario``), prepares the server
  (reachability, preload with a long ``ttl``, metadata, fault plan, truth marker), picks the
  shared start time t0 (epoch) and sends ``harness_start`` {t0, scenario, workers} to every
  worker; drives the user count through ``ScenarioShape``; receives ``harness_records`` batches
  and appends them to ``requests.jsonl``; at the end fetches the truth and writes every output.
- worker: waits for t0, runs the users, ships records (and its CPU reading and in-flight count)
  to the master every half second and on a final flush request.

Users never start a request after the plan's end; the shape waits until nothing is in flight (or
``drain_s`` passed) and asks workers for a last flush before stopping, so no record is lost.

In Locust's terms: every request is exactly one Locust entry (streamed: request type ``TTFT``,
response time = TTFT; not streamed: ``POST``, response time = E2E; response length = output
tokens), so Locust's RPS is the real requests/s. ITL, TPOT and tokens/s, which Locust's table
cannot hold, are aggregated per request by the master (``harness.load.live``) and shown in the web
UI's "LLM metrics" tab and in ``<--csv prefix>_llm.csv``.

Each START in the web UI is a new run (new t0, outputs in ``run-<n>/`` after the first); STOP, a
signal (SIGINT, SIGTERM) or a dead target end it early, and the summary and report of what ran
are still written, marked with why (see ``harness.load.analysis`` for the exit codes).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.load.analysis import EXIT_INTERRUPTED, entry_name
from harness.load.exchange import PreparedRequest, execute, prepare, to_epoch, to_perf
from harness.load.health import DEFAULT_POLICY, TargetHealth
from harness.load.live import LiveRun, scenario_rows
from harness.load.metrics import RequestRecord
from harness.load.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from harness.load.schedule import ArrivalQueue, arrival_offsets, worker_slice
from harness.load.server import api_token_for
from harness.load.stalls import (
    MAX_KEPT,
    MIN_STALL_S,
    TICK_S,
    Stall,
    freeze_times,
    quiet_gc,
    run_queue_wait_s,
)
from harness.load.transport import Connection

log = logging.getLogger("harness.load")

START_LEAD_S = 0.5  # time for harness_start to reach every worker before t0
FLUSH_INTERVAL_S = 0.5
FINAL_FLUSH_TIMEOUT_S = 10.0
INTERRUPT_FLUSH_TIMEOUT_S = 3.0  # a signalled run writes what it has, promptly
DEFAULT_SCENARIO = "fixtures/load/smoke.toml"


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    # On the parser itself, not a group: only its add_argument puts options in the web UI form.
    group = parser
    group.add_argument("--scenario", default=os.environ.get("HARNESS_SCENARIO", DEFAULT_SCENARIO),
                       help="TOML load scenario (fixtures/load/*.toml); read again at each START")
    group.add_argument("--harness-out", default=os.environ.get("HARNESS_LOAD_OUT", ""),
                       help="directory for requests.jsonl, summary.json, sweep.csv and report")
    group.add_argument("--harness-users", type=int, default=0, help="override the scenario's users")
    group.add_argument("--harness-duration", type=float, default=0.0,
                       help="override each level's duration (s)")


@dataclass
class RunState:
    """Process-wide state of the current run (one per Locust process)."""

    scenario: Scenario | None = None
    t0: float | None = None
    worker_index: int = 0
    workers: int = 1
    started: Event = field(default_factory=Event)
    arrivals: ArrivalQueue | None = None
    prepared: dict[str, PreparedRequest] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    stalls: list[dict[str, Any]] = field(default_factory=list)  # this process's, not shipped yet
    stalls_kept: int = 0
    inflight: int = 0
    cpu_max: float = 0.0
    stopping: bool = False  # users start no new request (plan over, interrupted, target down)
    health: TargetHealth = field(default_factory=TargetHealth)
    api_token: str | None = None
    # master / local only
    active: bool = False  # a run started (test_start) and its outputs are not written yet
    finishing: bool = False  # its outputs are being written
    plan_done: bool = False
    flushed: bool = False
    out_root: Path | None = None
    out_dir: Path | None = None
    records_file: Any = None
    live: LiveRun = field(default_factory=LiveRun)
    worker_cpu: dict[str, float] = field(default_factory=dict)
    worker_inflight: dict[str, int] = field(default_factory=dict)
    worker_flushed: set[str] = field(default_factory=set)
    run_stalls: list[Stall] = field(default_factory=list)  # every process's, for the outputs
    server_info: Any = None
    run_errors: list[str] = field(default_factory=list)
    target_error: str | None = None
    interrupted: str | None = None
    signal_number: int | None = None
    last_exit_code: int | None = None
    live_report: Any = None  # the last written report (the tab shows its verdict after a run)

    def begin(self, scenario: Scenario, t0: float, worker_index: int, workers: int) -> None:
        self.scenario, self.t0 = scenario, t0
        self.worker_index, self.workers = worker_index, workers
        self.prepared = {m: prepare(scenario.request, m) for m in scenario.request.models}
        self.arrivals = None
        if scenario.load.mode == "open":
            offsets = worker_slice(arrival_offsets(scenario.load), worker_index, workers)
            self.arrivals = ArrivalQueue(to_perf(t0), offsets)
        self.cpu_max = 0.0
        self.stalls, self.stalls_kept = [], 0
        self.stopping = False
        self.health = TargetHealth()
        self.api_token = api_token_for(scenario)
        _quiet_gc(scenario, t0)
        self.started.set()


STATE = RunState()


def _quiet_gc(scenario: Scenario, t0: float) -> None:
    """``harness.load.stalls.quiet_gc`` now, and a freeze (O(1)) as each level's measured window
    opens, after its users and connections were made in the warm-up."""
    quiet_gc()
    now = time.time()
    for at in freeze_times(scenario.load, t0):
        if at > now:
            gevent.spawn_later(at - now, gc.freeze)


def _scenario_from_options(environment: Environment) -> Scenario:
    opts = environment.parsed_options
    assert opts is not None
    scenario = load_scenario(Path(opts.scenario))
    return scenario.with_overrides(users=int(opts.harness_users or 0) or None,
                                   duration_s=float(opts.harness_duration or 0) or None)


def _headless(environment: Environment) -> bool:
    opts = environment.parsed_options
    return bool(opts is not None and getattr(opts, "headless", False))


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    opts = environment.parsed_options
    if isinstance(runner, WorkerRunner):
        runner.register_message("harness_start", _worker_on_start)
        runner.register_message("harness_flush", _worker_on_flush)
        gevent.spawn(_worker_shipper, environment)
        gevent.spawn(_cpu_sampler, environment)
        gevent.spawn(_stall_watch)
        return
    if opts is None:
        return
    STATE.scenario = _scenario_from_options(environment)  # a bad file fails at start-up
    STATE.out_root = Path(opts.harness_out or f"reports/out/load/{STATE.scenario.name}")
    STATE.live.scenario = STATE.scenario
    if isinstance(runner, MasterRunner):
        runner.register_message("harness_records", _master_on_records)
        runner.register_message("harness_target_down", _master_on_target_down)
    gevent.spawn(_cpu_sampler, environment)
    if not isinstance(runner, MasterRunner):  # a master times nothing: its stalls say nothing
        gevent.spawn(_stall_watch)
    _note_signals()
    from harness.load import webui

    webui.install(environment, llm_rows=_live_llm_rows, scenario_rows=_live_scenario_rows,
                  live_page=_live_page)


def _note_signals() -> None:
    """Remember which signal ends the run, for its exit code (128 + the signal's number).

    Locust turns SIGINT into KeyboardInterrupt and SIGTERM into its own shutdown; both fire
    ``quitting`` with the run still going, where the interrupted run is written."""
    def on_sigint(signum: int, frame: Any) -> None:
        # Locust's own SIGINT path raises KeyboardInterrupt in whichever greenlet runs; its
        # SIGTERM path shuts down in order. Take that one, remembering the signal.
        STATE.signal_number = STATE.signal_number or signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)

    def on_sigterm() -> None:
        STATE.signal_number = STATE.signal_number or signal.SIGTERM

    try:
        signal.signal(signal.SIGINT, on_sigint)
        gevent.signal_handler(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (a test's Environment): nothing to note
        pass


def _cpu_sampler(environment: Environment) -> None:
    """This process's CPU every second while the plan runs (Locust's own monitor samples every
    5 s, too coarse for runs of a few seconds); the maximum feeds the CPU validity gate."""
    import psutil

    process = psutil.Process()
    process.cpu_percent(None)
    while True:
        gevent.sleep(1.0)
        usage = process.cpu_percent(None)
        if STATE.t0 is not None and time.time() >= STATE.t0 and not STATE.stopping:
            STATE.cpu_max = max(STATE.cpu_max, usage)
            STATE.live.cpu_max = max([STATE.cpu_max, *STATE.worker_cpu.values()])


def _stall_watch() -> None:
    """Note every stall of this process's loop in a measured window (``harness.load.stalls``):
    when a first token comes out late, the report can say whether the worker was busy or
    waited for its core."""
    clock = time.perf_counter
    while True:
        started, waited = clock(), run_queue_wait_s()
        gevent.sleep(TICK_S)
        lag = clock() - started - TICK_S
        if lag <= MIN_STALL_S:
            continue
        scenario, t0, now = STATE.scenario, STATE.t0, time.time()
        if (scenario is None or t0 is None or STATE.stopping or now < t0
                or scenario.load.is_warmup(now - t0) or STATE.stalls_kept >= MAX_KEPT):
            continue
        STATE.stalls_kept += 1
        STATE.stalls.append(Stall(at=now, lag_s=lag, cpu_wait_s=run_queue_wait_s() - waited,
                                  worker=STATE.worker_index).to_json())


# -- master / local: one run from START (test_start) to its outputs ---------------------------


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner) or STATE.out_root is None or STATE.active:
        return
    _new_run(environment)
    from harness.load.server import LoadRunError, TargetUnreachable, prepare_server

    try:
        scenario = _scenario_from_options(environment)  # the form may have changed it
    except ScenarioError as exc:
        if STATE.scenario is not None:
            STATE.live.restart(STATE.scenario, None)  # a run (number) that failed to start
        _abort(environment, str(exc))
        return
    STATE.scenario = scenario
    STATE.api_token = api_token_for(scenario)
    STATE.live.restart(scenario, None)
    base_url = environment.host or ""
    try:
        STATE.server_info = prepare_server(
            base_url, models=scenario.request.models, ttl_s=scenario.request.ttl_s,
            preload=not scenario.measures_jit, faults=scenario.faults, api_token=STATE.api_token)
    except TargetUnreachable as exc:
        _abort(environment, f"server preparation failed: {exc}", target=True)
        return
    except (LoadRunError, ValueError) as exc:
        _abort(environment, f"server preparation failed: {exc}")
        return
    t0 = time.time() + START_LEAD_S
    STATE.live.t0 = t0
    if isinstance(runner, MasterRunner):
        workers = runner.worker_count
        runner.send_message("harness_start", {"t0": t0, "workers": workers,
                                              "scenario": scenario.model_dump(mode="json")})
        STATE.begin(scenario, t0, 0, workers)
    else:
        STATE.begin(scenario, t0, 0, 1)


def _new_run(environment: Environment) -> None:
    """Fresh per-run state; the first run writes into the output directory, later ones (START
    again in the web UI) into ``run-<n>/`` beside it, so no run overwrites another."""
    assert STATE.out_root is not None
    STATE.active, STATE.finishing, STATE.plan_done, STATE.flushed = True, False, False, False
    STATE.run_errors, STATE.target_error, STATE.interrupted = [], None, None
    STATE.signal_number = None
    STATE.server_info, STATE.t0 = None, None
    STATE.worker_cpu.clear()
    STATE.worker_inflight.clear()
    STATE.worker_flushed.clear()
    STATE.run_stalls = []
    number = STATE.live.number + 1
    out = STATE.out_root if number == 1 else STATE.out_root / f"run-{number}"
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("summary.json", "requests.jsonl", "report.md", "report.html", "sweep.csv"):
        (out / stale).unlink(missing_ok=True)
    STATE.out_dir = out
    if STATE.records_file is not None:
        STATE.records_file.close()
    STATE.records_file = (out / "requests.jsonl").open("w", encoding="utf-8")


def _abort(environment: Environment, message: str, *, target: bool = False) -> None:
    """End the run now: a harness error (exit 3) or, with ``target``, a target error (exit 4)."""
    log.error("harness load: %s", message)
    if target:
        STATE.target_error = STATE.target_error or message
    else:
        STATE.run_errors.append(message)
    STATE.stopping = True
    runner = environment.runner
    if runner is not None:
        gevent.spawn_later(0, runner.quit if _headless(environment) else runner.stop)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        STATE.started.clear()  # users of a later START wait for its harness_start
        return
    if not STATE.active:
        return
    if not (STATE.plan_done or STATE.run_errors or STATE.target_error):
        STATE.interrupted = STATE.interrupted or _interruption()
    _finish_run(environment)


def _interruption() -> str:
    signum = STATE.signal_number
    if signum:
        return f"{signal.Signals(signum).name} received before the end of the plan"
    return "stopped before the end of the plan (STOP in the web UI, or a quit request)"


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    """A signal (or any quit) while a run is going: write what ran, marked interrupted."""
    if isinstance(environment.runner, WorkerRunner):
        return
    if STATE.active:
        if not (STATE.plan_done or STATE.run_errors or STATE.target_error):
            STATE.interrupted = STATE.interrupted or _interruption()
        _finish_run(environment)
    if STATE.records_file is not None:
        STATE.records_file.close()
        STATE.records_file = None
    if STATE.last_exit_code is not None:
        environment.process_exit_code = STATE.last_exit_code


def _finish_run(environment: Environment) -> None:
    """Collect the last records, then write every output of the run; exactly once per run."""
    if STATE.finishing:
        return
    STATE.finishing = STATE.stopping = True
    runner = environment.runner
    if not STATE.flushed:
        _final_flush(runner, INTERRUPT_FLUSH_TIMEOUT_S if STATE.interrupted
                     else FINAL_FLUSH_TIMEOUT_S)
    STATE.active = False  # records arriving from now on belong to no run
    if STATE.records_file is not None:
        STATE.records_file.flush()
    abandoned = (sum(STATE.worker_inflight.values()) if isinstance(runner, MasterRunner)
                 else STATE.inflight)
    scenario = STATE.scenario
    if STATE.out_dir is None or scenario is None:
        return
    from harness.load.finalize import RunFacts, finalize

    opts = environment.parsed_options
    signum = STATE.signal_number
    facts = RunFacts(
        t0=STATE.t0,
        base_url=environment.host or "",
        workers=STATE.workers,
        cpu_max=max([STATE.cpu_max, *STATE.worker_cpu.values()]) if STATE.t0 else None,
        cpu_warning=bool(getattr(runner, "cpu_warning_emitted", False)
                         or getattr(runner, "worker_cpu_warning_emitted", False)),
        run_errors=list(STATE.run_errors),
        server=STATE.server_info,
        api_token=STATE.api_token,
        target_error=STATE.target_error,
        interrupted=STATE.interrupted,
        interrupt_code=128 + signum if signum else EXIT_INTERRUPTED,
        abandoned=abandoned if STATE.interrupted else 0,
        ended_at=time.time(),
        csv_prefix=getattr(opts, "csv_prefix", None) if opts is not None else None,
        stalls=[*STATE.run_stalls, *map(Stall.from_json, STATE.stalls)],
    )
    try:
        report = finalize(STATE.out_dir, scenario, facts)
    except Exception as exc:  # the run's outputs failed: say so and fail the process
        log.exception("harness load: writing the outputs to %s failed", STATE.out_dir)
        STATE.run_errors.append(f"writing outputs failed: {exc}")
        STATE.last_exit_code = environment.process_exit_code = 3
        return
    STATE.last_exit_code = environment.process_exit_code = report.exit_code
    STATE.live_report = report
    _print_verdict(report, STATE.out_dir)


def _print_verdict(report: Any, out_dir: Path) -> None:
    """The verdict on stderr (headless runs have no other place to read it); server text in the
    reasons is shown, never interpreted (``visible``: no control sequences reach the terminal)."""
    from harness.reporting.escaping import visible

    lines = [f"harness load: {report.scenario['name']}: {report.verdict.upper()} "
             f"(exit {report.exit_code}); outputs in {out_dir}"]
    lines += [f"  - {visible(reason)}" for reason in report.reasons]
    for lv in report.levels:
        ttft = lv.ttft_ms.p95
        lines.append(f"  level {lv.target:g} {lv.unit}: {lv.requests} requests, {lv.errors} "
                     f"errors, TTFT p95 {'-' if ttft is None else f'{ttft:.1f}'} ms, "
                     f"{lv.output_tps:.1f} output tok/s, SLOs {'ok' if lv.passed else 'MISSED'}")
    print("\n".join(lines), file=sys.stderr, flush=True)


# -- workers: start, flush and ship ------------------------------------------------------------


def _worker_on_start(environment: Environment, msg: Any, **_: Any) -> None:
    data = msg.data
    runner = environment.runner
    index = getattr(runner, "worker_index", 0)
    workers = max(int(data["workers"]), index + 1)
    STATE.begin(parse_scenario(data["scenario"], where="harness_start message"),
                float(data["t0"]), index, workers)


def _worker_on_flush(environment: Environment, msg: Any, **_: Any) -> None:
    _ship(environment, final=True)


def _worker_shipper(environment: Environment) -> None:
    while True:
        gevent.sleep(FLUSH_INTERVAL_S)
        if STATE.pending or STATE.started.is_set():
            _ship(environment)


def _ship(environment: Environment, final: bool = False) -> None:
    batch, STATE.pending = STATE.pending, []
    stalls, STATE.stalls = STATE.stalls, []
    runner = environment.runner
    if runner is None:
        return
    runner.send_message("harness_records", {
        "records": batch, "cpu_max": STATE.cpu_max, "inflight": STATE.inflight, "final": final,
        "stalls": stalls,
    })


def _master_on_records(environment: Environment, msg: Any, **_: Any) -> None:
    data = msg.data
    _write_records(data["records"])
    if STATE.active:
        STATE.run_stalls.extend(Stall.from_json(s) for s in data.get("stalls", ()))
    node = msg.node_id
    STATE.worker_cpu[node] = max(STATE.worker_cpu.get(node, 0.0), float(data["cpu_max"]))
    STATE.worker_inflight[node] = int(data["inflight"])
    if data.get("final"):
        STATE.worker_flushed.add(node)


def _master_on_target_down(environment: Environment, msg: Any, **_: Any) -> None:
    if STATE.active and STATE.target_error is None:
        _abort(environment, f"worker {msg.node_id}: {msg.data['reason']}", target=True)


def _write_records(rows: list[dict[str, Any]]) -> None:
    handle = STATE.records_file
    if handle is None or not rows or not STATE.active:
        return
    handle.write("".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows))
    handle.flush()
    STATE.live.add(rows)


def _record(row: dict[str, Any]) -> None:
    if STATE.out_root is not None:  # local runner: straight to the file
        _write_records([row])
    else:
        STATE.pending.append(row)


class ScenarioShape(LoadTestShape):
    """Users over time from the scenario; stops after the plan once in-flight requests drained."""

    def tick(self) -> tuple[int, float] | None:
        scenario, runner = STATE.scenario, self.runner
        if scenario is None:
            return None
        if STATE.run_errors or STATE.target_error:
            return None
        if isinstance(runner, MasterRunner) and runner.clients.missing:
            _abort(runner.environment, f"{len(runner.clients.missing)} worker(s) stopped "
                                       "answering heartbeats (crashed or killed); run aborted")
            return None
        shape = scenario.load
        # Not active: a START after a finished run; its first tick must not read the old t0
        # (which would end the new run at once). The run begins at test_start.
        offset = -1.0 if STATE.t0 is None or not STATE.active else time.time() - STATE.t0
        if offset >= shape.total_s:
            STATE.stopping = True
            inflight = (sum(STATE.worker_inflight.values()) if isinstance(runner, MasterRunner)
                        else STATE.inflight)
            if (inflight == 0 and offset >= shape.total_s + 1.0) or (
                    offset >= shape.total_s + shape.drain_s):
                _final_flush(runner, FINAL_FLUSH_TIMEOUT_S)
                STATE.plan_done = True
                return None
        users = shape.users_at(max(offset, 0.0))
        return users, shape.spawn_rate_for(users)


def _final_flush(runner: Any, timeout: float) -> None:
    STATE.flushed = True
    if not isinstance(runner, MasterRunner):
        return
    STATE.worker_flushed.clear()
    runner.send_message("harness_flush", None)
    deadline = time.time() + timeout
    expected = runner.worker_count
    while len(STATE.worker_flushed) < expected and time.time() < deadline:
        gevent.sleep(0.05)
    if len(STATE.worker_flushed) < expected and not STATE.interrupted:
        STATE.run_errors.append(
            f"only {len(STATE.worker_flushed)} of {expected} worker(s) sent their final records "
            f"within {timeout:g}s"
        )


class LLMUser(User):
    """One simulated client: closed loop (back-to-back requests) or open loop (takes the next
    arrival of its worker's schedule), all through one keep-alive connection."""

    wait_time = constant(0)
    _ids = 0

    def on_start(self) -> None:
        LLMUser._ids += 1
        self.user_id = LLMUser._ids
        self.conn: Connection | None = None
        self.turn = 0

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()

    @task
    def generate(self) -> None:
        if not STATE.started.wait(timeout=30) or STATE.stopping:
            gevent.sleep(0.1)
            return
        scenario, t0 = STATE.scenario, STATE.t0
        assert scenario is not None and t0 is not None
        shape = scenario.load
        if self.conn is None:
            self.conn = Connection(self.host or "", api_token=STATE.api_token)
        intended: float | None = None
        now = time.perf_counter()
        if shape.mode == "open":
            due = STATE.arrivals.next_due() if STATE.arrivals is not None else None
            if due is None:
                return self._idle()
            if due > now:
                gevent.sleep(due - now)
            intended = due
            offset = to_epoch(due) - t0
        else:
            start = to_perf(t0)
            if now < start:
                gevent.sleep(start - now)
            offset = to_epoch(time.perf_counter()) - t0
            if offset >= shape.total_s:
                return self._idle()
        if STATE.stopping:
            return self._idle()
        models = scenario.request.models
        index = (self.user_id if scenario.request.model_choice == "per_user" else self.turn)
        self.turn += 1
        req = STATE.prepared[models[index % len(models)]]
        STATE.inflight += 1
        try:
            record = self.execute_request(req, intended)
        finally:
            STATE.inflight -= 1
        level = shape.level_at(offset)
        record.level = len(shape.levels) - 1 if level is None else level
        record.warmup = shape.is_warmup(offset)
        record.worker = STATE.worker_index
        record.user = self.user_id
        _record(record.to_json())
        _fire(self.environment, record)
        down = STATE.health.observe(record)
        if down is not None:
            _target_down(self.environment, down)
        if TargetHealth.unanswered(record) and shape.mode == "closed":
            gevent.sleep(DEFAULT_POLICY.backoff_s)

    def execute_request(self, req: PreparedRequest, intended: float | None) -> RequestRecord:
        assert self.conn is not None
        scenario = STATE.scenario
        batch = scenario.load.read_batch_ms / 1000 if scenario is not None else 0.0
        return execute(self.conn, req, intended=intended, read_batch_s=batch)

    def _idle(self) -> None:
        gevent.sleep(0.25)


def _target_down(environment: Environment, reason: str) -> None:
    STATE.stopping = True
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message("harness_target_down", {"reason": reason})
    else:
        _abort(environment, reason, target=True)


def _fire(environment: Environment, record: RequestRecord) -> None:
    """One Locust entry per request, never one per chunk: streamed, a ``TTFT`` entry whose
    response time is the TTFT; otherwise a ``POST`` entry timed by E2E. Failures are the same
    entry with the typed error, so Locust's RPS and failure rate are the real ones."""
    name = entry_name(record.endpoint, record.model)
    streamed = record.stream and record.ok and record.ttft is not None
    elapsed = record.ttft if streamed else record.e2e
    error = None if record.ok else _LoadError(
        f"{record.error_kind} (HTTP {record.status if record.status is not None else '-'})")
    environment.events.request.fire(
        request_type="TTFT" if record.stream else "POST", name=name,
        response_time=(elapsed or 0.0) * 1000, response_length=record.output_tokens,
        exception=error, context={})


class _LoadError(Exception):
    """A failed request as Locust's failure table shows it: typed category and status."""


# -- the web UI's live views -------------------------------------------------------------------


def _snapshot() -> Any:
    return STATE.live.snapshot(run_errors=STATE.run_errors, target_error=STATE.target_error,
                               interrupted=STATE.interrupted)


def _live_llm_rows() -> list[dict[str, Any]]:
    snap = _snapshot()
    return snap.llm if snap is not None else []


def _live_scenario_rows() -> list[dict[str, str]]:
    scenario = STATE.live.scenario or STATE.scenario
    if scenario is None:
        return []
    report = STATE.live_report
    if STATE.active or report is None:
        snap = _snapshot()
        state = [("verdict (so far)", snap.verdict.name.upper() if snap else "-"),
                 *((f"reason {i + 1}", r) for i, r in enumerate(snap.verdict.reasons if snap
                                                                 else ()))]
    else:
        state = [("verdict (written)", f"{report.verdict.upper()} (exit {report.exit_code})"),
                 *((f"reason {i + 1}", r) for i, r in enumerate(report.reasons)),
                 ("outputs", str(STATE.out_dir))]
    progress = STATE.live.progress() if STATE.active or report is None else "finished"
    rows = [{"field": "run", "value": f"{STATE.live.number}: {progress}"},
            *({"field": k, "value": v} for k, v in state),
            {"field": "live charts", "value": "./harness/live"}]
    return rows + scenario_rows(scenario)


def _live_page() -> str:
    from harness.load.analysis import time_series
    from harness.load.finalize import report_charts
    from harness.reporting.env import report_environment

    live = STATE.live
    scenario = live.scenario or STATE.scenario
    snap = _snapshot()
    if scenario is None or snap is None:
        return "<p>No scenario loaded.</p>"
    measured = [r for r in live.records if not r.warmup]
    charts = report_charts(scenario, snap.levels, live.records,
                           time_series(measured, live.t0 or time.time()))
    template = report_environment().get_template("load/live.html.j2")
    return template.render(scenario=scenario, verdict=snap.verdict, progress=live.progress(),
                           run_number=live.number, charts=charts, llm=snap.llm)
