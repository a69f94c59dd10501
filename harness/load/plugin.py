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
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.load.exchange import PreparedRequest, execute, prepare, to_epoch, to_perf
from harness.load.metrics import RequestRecord
from harness.load.scenario import Scenario, load_scenario, parse_scenario
from harness.load.schedule import ArrivalQueue, arrival_offsets, worker_slice
from harness.load.transport import Connection

log = logging.getLogger("harness.load")

START_LEAD_S = 0.5  # time for harness_start to reach every worker before t0
FLUSH_INTERVAL_S = 0.5
FINAL_FLUSH_TIMEOUT_S = 10.0
DEFAULT_SCENARIO = "fixtures/load/smoke.toml"


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    group = parser.add_argument_group("harness", "LM Studio harness load test")
    group.add_argument("--scenario", default=os.environ.get("HARNESS_SCENARIO", DEFAULT_SCENARIO),
                       help="TOML load scenario (fixtures/load/*.toml)")
    group.add_argument("--harness-out", default=os.environ.get("HARNESS_LOAD_OUT", ""),
                       help="directory for requests.jsonl, summary.json, sweep.csv and report")
    group.add_argument("--harness-users", type=int, default=0, help="override the scenario's users")
    group.add_argument("--harness-duration", type=float, default=0.0,
                       help="override each level's duration (s)")
    group.add_argument("--harness-icl-events", default="on", choices=["on", "off"],
                       help="fire one Locust ICL sample per chunk gap (off: per-request mean)")


@dataclass
class RunState:
    """Process-wide state of one run (one per Locust process)."""

    scenario: Scenario | None = None
    t0: float | None = None
    worker_index: int = 0
    workers: int = 1
    started: Event = field(default_factory=Event)
    arrivals: ArrivalQueue | None = None
    prepared: dict[str, PreparedRequest] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)
    inflight: int = 0
    cpu_max: float = 0.0
    # master / local only
    out_dir: Path | None = None
    records_file: Any = None
    worker_cpu: dict[str, float] = field(default_factory=dict)
    worker_inflight: dict[str, int] = field(default_factory=dict)
    worker_flushed: set[str] = field(default_factory=set)
    server_info: Any = None
    run_errors: list[str] = field(default_factory=list)
    api_token: str | None = None
    fire_icl: bool = True

    def begin(self, scenario: Scenario, t0: float, worker_index: int, workers: int) -> None:
        self.scenario, self.t0 = scenario, t0
        self.worker_index, self.workers = worker_index, workers
        self.prepared = {m: prepare(scenario.request, m) for m in scenario.request.models}
        if scenario.load.mode == "open":
            offsets = worker_slice(arrival_offsets(scenario.load), worker_index, workers)
            self.arrivals = ArrivalQueue(to_perf(t0), offsets)
        self.started.set()


STATE = RunState()


def _scenario_from_options(environment: Environment) -> Scenario:
    opts = environment.parsed_options
    assert opts is not None
    scenario = load_scenario(Path(opts.scenario))
    return scenario.with_overrides(users=opts.harness_users or None,
                                   duration_s=opts.harness_duration or None)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    opts = environment.parsed_options
    if opts is not None:
        STATE.fire_icl = getattr(opts, "harness_icl_events", "on") == "on"
    if isinstance(runner, WorkerRunner):
        runner.register_message("harness_start", _worker_on_start)
        runner.register_message("harness_flush", _worker_on_flush)
        gevent.spawn(_worker_shipper, environment)
        gevent.spawn(_cpu_sampler, environment)
        return
    if opts is None:
        return
    STATE.scenario = _scenario_from_options(environment)
    STATE.api_token = _token(STATE.scenario)
    out = Path(opts.harness_out or f"reports/out/load/{STATE.scenario.name}")
    out.mkdir(parents=True, exist_ok=True)
    STATE.out_dir = out
    STATE.records_file = (out / "requests.jsonl").open("w", encoding="utf-8")
    if isinstance(runner, MasterRunner):
        runner.register_message("harness_records", _master_on_records)
    gevent.spawn(_cpu_sampler, environment)


def _cpu_sampler(environment: Environment) -> None:
    """This process's CPU every second while the plan runs (Locust's own monitor samples every
    5 s, too coarse for runs of a few seconds); the maximum feeds the CPU validity gate."""
    import psutil

    process = psutil.Process()
    process.cpu_percent(None)
    while True:
        gevent.sleep(1.0)
        usage = process.cpu_percent(None)
        if STATE.t0 is not None and time.time() >= STATE.t0:
            STATE.cpu_max = max(STATE.cpu_max, usage)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner) or STATE.scenario is None or STATE.t0 is not None:
        return
    from harness.load.server import LoadRunError, prepare_server

    scenario = STATE.scenario
    base_url = environment.host or ""
    try:
        STATE.server_info = prepare_server(
            base_url, models=scenario.request.models, ttl_s=scenario.request.ttl_s,
            preload=not scenario.measures_jit, faults=scenario.faults, api_token=STATE.api_token)
    except (LoadRunError, ValueError) as exc:
        _abort(environment, f"server preparation failed: {exc}")
        return
    t0 = time.time() + START_LEAD_S
    if isinstance(runner, MasterRunner):
        workers = runner.worker_count
        runner.send_message("harness_start", {"t0": t0, "workers": workers,
                                              "scenario": scenario.model_dump(mode="json")})
        STATE.begin(scenario, t0, 0, workers)
    else:
        STATE.begin(scenario, t0, 0, 1)


def _abort(environment: Environment, message: str) -> None:
    log.error("harness load: %s", message)
    STATE.run_errors.append(message)
    environment.process_exit_code = 3
    runner = environment.runner
    if runner is not None:
        gevent.spawn_later(0, runner.quit)


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
    runner = environment.runner
    if runner is None:
        return
    runner.send_message("harness_records", {
        "records": batch, "cpu_max": STATE.cpu_max, "inflight": STATE.inflight, "final": final,
    })


def _master_on_records(environment: Environment, msg: Any, **_: Any) -> None:
    data = msg.data
    _write_records(data["records"])
    node = msg.node_id
    STATE.worker_cpu[node] = max(STATE.worker_cpu.get(node, 0.0), float(data["cpu_max"]))
    STATE.worker_inflight[node] = int(data["inflight"])
    if data.get("final"):
        STATE.worker_flushed.add(node)


def _write_records(rows: list[dict[str, Any]]) -> None:
    handle = STATE.records_file
    if handle is None or not rows:
        return
    handle.write("".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows))
    handle.flush()


def _record(row: dict[str, Any]) -> None:
    if STATE.records_file is not None:  # local runner: straight to the file
        _write_records([row])
    else:
        STATE.pending.append(row)


class ScenarioShape(LoadTestShape):
    """Users over time from the scenario; stops after the plan once in-flight requests drained."""

    def tick(self) -> tuple[int, float] | None:
        scenario, runner = STATE.scenario, self.runner
        if scenario is None:
            return None
        if STATE.run_errors:
            return None
        if isinstance(runner, MasterRunner) and runner.clients.missing:
            _abort(runner.environment, f"{len(runner.clients.missing)} worker(s) stopped "
                                       "answering heartbeats (crashed or killed); run aborted")
            return None
        shape = scenario.load
        offset = -1.0 if STATE.t0 is None else time.time() - STATE.t0
        if offset >= shape.total_s:
            inflight = (sum(STATE.worker_inflight.values()) if isinstance(runner, MasterRunner)
                        else STATE.inflight)
            if (inflight == 0 and offset >= shape.total_s + 1.0) or (
                    offset >= shape.total_s + shape.drain_s):
                _final_flush(runner)
                return None
        users = shape.users_at(max(offset, 0.0))
        return users, shape.spawn_rate_for(users)


def _final_flush(runner: Any) -> None:
    if not isinstance(runner, MasterRunner):
        return
    STATE.worker_flushed.clear()
    runner.send_message("harness_flush", None)
    deadline = time.time() + FINAL_FLUSH_TIMEOUT_S
    expected = runner.worker_count
    while len(STATE.worker_flushed) < expected and time.time() < deadline:
        gevent.sleep(0.05)
    if len(STATE.worker_flushed) < expected:
        STATE.run_errors.append(
            f"only {len(STATE.worker_flushed)} of {expected} worker(s) sent their final records "
            f"within {FINAL_FLUSH_TIMEOUT_S:g}s"
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
        if not STATE.started.wait(timeout=30):
            gevent.sleep(0.1)
            return
        scenario, t0 = STATE.scenario, STATE.t0
        assert scenario is not None and t0 is not None
        shape = scenario.load
        if self.conn is None:
            self.conn = Connection(self.host or "", api_token=STATE.api_token or _token(scenario))
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
        if not record.warmup:
            _fire(self.environment, record)

    def execute_request(self, req: PreparedRequest, intended: float | None) -> RequestRecord:
        assert self.conn is not None
        return execute(self.conn, req, intended=intended)

    def _idle(self) -> None:
        gevent.sleep(0.25)


def _token(scenario: Scenario) -> str | None:
    """The scenario's own variable if it names one, else ``HARNESS_API_TOKEN`` (harness.secrets)."""
    from harness.secrets import register, token_from_env

    name = scenario.request.api_token_env
    return register(os.environ.get(name)) if name else token_from_env()


def _fire(environment: Environment, record: RequestRecord) -> None:
    """Feed Locust's statistics: the request (response time = E2E, not time to headers) and
    TTFT / TPOT / ICL as their own request types, so the UI, CSV and HTML show them."""
    fire = environment.events.request.fire
    name = f"{record.endpoint} {record.model}"
    e2e = record.e2e
    error = None if record.ok else _LoadError(f"{record.error_kind} (HTTP {record.status})")
    fire(request_type="POST", name=name, response_time=(e2e or 0.0) * 1000,
         response_length=record.output_tokens, exception=error, context={})
    if not record.ok:
        return
    ttft, tpot = record.ttft, record.tpot
    if ttft is not None:
        fire(request_type="TTFT", name=name, response_time=ttft * 1000, response_length=0,
             exception=None, context={})
    if tpot is not None:
        fire(request_type="TPOT", name=name, response_time=tpot * 1000, response_length=0,
             exception=None, context={})
    if record.gaps:
        if STATE.fire_icl:
            for gap in record.gaps:
                fire(request_type="ICL", name=name, response_time=gap * 1000,
                     response_length=0, exception=None, context={})
        else:
            fire(request_type="ICL-mean", name=name,
                 response_time=sum(record.gaps) / len(record.gaps) * 1000, response_length=0,
                 exception=None, context={})


class _LoadError(Exception):
    """A failed request as Locust's failure table shows it: typed category and status."""


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner) or STATE.out_dir is None or STATE.scenario is None:
        return
    if STATE.records_file is not None:
        STATE.records_file.close()
        STATE.records_file = None
    from harness.load.finalize import RunFacts, finalize

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
    )
    try:
        report = finalize(STATE.out_dir, STATE.scenario, facts)
    except Exception as exc:  # the run's outputs failed: say so and fail the process
        log.exception("harness load: writing the outputs to %s failed", STATE.out_dir)
        STATE.run_errors.append(f"writing outputs failed: {exc}")
        environment.process_exit_code = 3
        return
    environment.process_exit_code = report.exit_code
