"""``harness load``: a headless Locust master plus K local worker processes, watched to the end.

Why explicit ``locust --master`` / ``locust --worker`` subprocesses instead of ``--processes``:
this process watches every one of them. A worker that dies (crash, OOM kill) ends the run at once
with an error naming it, instead of the master carrying on with fewer workers; a run that does
not finish within its plan plus a margin is stopped, never left hanging. Remote workers (other
machines) join with ``locust -f suites/load/locustfile.py --worker --master-host <this host>``.

Progress is read from the outputs as they grow (records appended by the master), and the verdict
and exit code come from ``summary.json``, written by the master itself.

No process outlives the run: every child gets its own session (a terminal's Ctrl-C reaches only
this process, which then stops the children in order) and, on Linux, dies with this process
(``PR_SET_PDEATHSIG``). SIGINT or SIGTERM here is forwarded to the master, which writes the
summary and report of what ran, marked interrupted; then workers and the emulator are stopped,
and the exit code is 128 + the signal's number. A second signal stops everything at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.load.analysis import EXIT_ERROR, EXIT_TARGET, SERVER_USAGE
from harness.load.emulator import EmulatorError, EmulatorProcess, die_with_parent
from harness.load.scenario import Scenario, ScenarioError, load_scenario
from harness.load.server import LoadRunError, ServerSession, TargetUnreachable, api_token_for
from harness.studio.server import free_port

STARTUP_MARGIN_S = 30.0
FINISH_MARGIN_S = 30.0
INTERRUPT_GRACE_S = 20.0  # a signalled master writes its outputs within this, or is killed


@dataclass(frozen=True)
class LoadOptions:
    scenario_path: Path
    base_url: str
    out_dir: Path
    users: int | None = None
    duration_s: float | None = None
    workers: int = 1
    remote_workers: int = 0
    master_bind_host: str = "127.0.0.1"
    master_port: int = 0
    emulator: bool = False  # start a fresh emulator for the run (the scenario's [emulator])


def default_locustfile() -> Path:
    import harness

    path = Path(harness.__file__).resolve().parents[1] / "suites" / "load" / "locustfile.py"
    if not path.is_file():
        raise LoadRunError(f"locustfile not found at {path} (run from a checkout of the repo)")
    return path


class RecordTally:
    """Records and failed records in the growing JSONL, reading only what was appended since
    the last look (re-reading the whole file every tick cost 60 ms per 30k records, on the
    cores the load generator runs on). A line counts once complete; failures by substring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.records = 0
        self.failed = 0

    def update(self) -> tuple[int, int]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                appended = handle.read()
        except OSError:
            return self.records, self.failed
        self.offset += len(appended)
        complete, newline, self.partial = (self.partial + appended).rpartition(b"\n")
        if newline:
            lines = complete.split(b"\n")
            self.records += len(lines)
            self.failed += sum(b'"ok":false' in line for line in lines)
        return self.records, self.failed


class LoadRun:
    """The processes of one run and the watch loop over them."""

    def __init__(self, options: LoadOptions, scenario: Scenario) -> None:
        self.options = options
        self.scenario = scenario
        self.port = options.master_port or free_port(options.master_bind_host)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_dir = options.out_dir / "logs"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HARNESS_LOAD_USER"] = "harness"  # never the openai-SDK comparison user
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / log_name).open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "locust", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=self._env(),
                                start_new_session=True, preexec_fn=die_with_parent())
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        o = self.options
        locustfile = str(default_locustfile())
        expected = o.workers + o.remote_workers
        master_args = [
            "-f", locustfile, "--headless", "--master", "--host", o.base_url,
            "--master-bind-host", o.master_bind_host, "--master-bind-port", str(self.port),
            "--expect-workers", str(expected),
            "--expect-workers-max-wait", str(int(STARTUP_MARGIN_S)),
            "--scenario", str(o.scenario_path), "--harness-out", str(o.out_dir),
            "--only-summary", "--loglevel", "WARNING",
        ]
        if o.users:
            master_args += ["--harness-users", str(o.users)]
        if o.duration_s:
            master_args += ["--harness-duration", str(o.duration_s)]
        self.master = self._spawn(master_args, "master.log")
        connect_host = "127.0.0.1" if o.master_bind_host in ("0.0.0.0", "*") else (
            o.master_bind_host)
        self.workers = [
            self._spawn(["-f", locustfile, "--worker", "--master-host", connect_host,
                         "--master-port", str(self.port), "--loglevel", "WARNING"],
                        f"worker-{i}.log")
            for i in range(o.workers)
        ]

    def interrupt(self, signum: int) -> None:
        """Pass a signal on to the master (it writes the interrupted run's outputs)."""
        if self.master.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.master.pid, signum)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 5
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def _tail(self, name: str, lines: int = 8) -> str:
        try:
            text = (self.log_dir / name).read_text("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def watch(self, progress: Any = None, signals: SignalWatch | None = None) -> int:
        """Wait for the master; abort on a dead worker or on overrun. Returns its exit code."""
        shape = self.scenario.load
        limit = STARTUP_MARGIN_S + shape.total_s + shape.drain_s + FINISH_MARGIN_S
        started = time.time()
        tally = RecordTally(self.options.out_dir / "requests.jsonl")
        forwarded_at: float | None = None
        while True:
            code = self.master.poll()
            if code is not None:
                return code
            if signals is not None and signals.received:
                if forwarded_at is None:
                    forwarded_at = time.time()
                    self.interrupt(signals.received[0])
                elif len(signals.received) > 1 or time.time() - forwarded_at > INTERRUPT_GRACE_S:
                    self.stop_all()
                    return self.master.wait(timeout=5)
                time.sleep(0.1)
                continue
            for index, worker in enumerate(self.workers):
                rc = worker.poll()
                if rc is not None and rc != 0:  # 0: the master told it to quit
                    self.stop_all()
                    raise LoadRunError(
                        f"worker {index} (pid {worker.pid}) exited with code {rc} "
                        f"{time.time() - started:.1f}s into the run; run aborted. Last log lines: "
                        f"{self._tail(f'worker-{index}.log') or '-'}"
                    )
            elapsed = time.time() - started
            if elapsed > limit:
                self.stop_all()
                raise LoadRunError(
                    f"run did not finish within {limit:.0f}s (plan {shape.total_s:g}s + drain "
                    f"{shape.drain_s:g}s + margins); stopped. Master log: "
                    f"{self._tail('master.log') or '-'}"
                )
            if progress is not None:
                progress(elapsed, *tally.update())
            time.sleep(0.25)


class SignalWatch:
    """SIGINT and SIGTERM noted instead of killing this process (main thread only), so the run
    can be stopped in order; the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        self.received.append(signum)

    def __enter__(self) -> SignalWatch:
        with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_load(options: LoadOptions, progress: Any = None) -> tuple[int, dict[str, Any]]:
    """Run a scenario end to end; returns (exit code, summary). Raises ``LoadRunError`` (or its
    ``TargetUnreachable``) or ``ScenarioError`` with a clear message when the run cannot start
    or has to stop. Interrupted by a signal, the code is 128 + its number."""
    if options.workers < 0 or options.workers + options.remote_workers < 1:
        raise LoadRunError("a run needs at least one worker (--workers and/or remote workers)")
    scenario = load_scenario(options.scenario_path).with_overrides(
        users=options.users, duration_s=options.duration_s)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("summary.json", "requests.jsonl"):
        (options.out_dir / stale).unlink(missing_ok=True)
    emulator: EmulatorProcess | None = None
    run: LoadRun | None = None
    with SignalWatch() as signals:
        try:
            if options.emulator:
                emulator = EmulatorProcess(scenario.emulator,
                                           log_path=options.out_dir / "emulator.log")
                try:
                    base_url = emulator.start()
                except EmulatorError as exc:
                    raise LoadRunError(str(exc)) from None
                options = replace(options, base_url=base_url)
            with ServerSession(options.base_url, api_token=api_token_for(scenario),
                               timeout=5.0) as session:
                session.check_reachable()
            run = LoadRun(options, scenario)
            run.start()
            code = run.watch(progress, signals)
        finally:
            if run is not None:
                run.stop_all()
            if emulator is not None:
                emulator.stop()
    summary_path = options.out_dir / "summary.json"
    if not summary_path.exists():
        assert run is not None
        raise LoadRunError(
            f"Locust master exited with code {code} without writing {summary_path}. Master log: "
            f"{run._tail('master.log') or '-'}"
        )
    summary = json.loads(summary_path.read_text("utf-8"))
    interrupted = 128 + signals.received[0] if signals.received else None
    return interrupted or int(summary.get("exit_code", code)), summary


def run_load_command(*, scenario: Path, base_url: str, users: int | None, duration: float | None,
                     workers: int, out: Path | None, remote_workers: int, master_bind_host: str,
                     master_port: int, emulator: bool = False) -> int:
    """The CLI body: rich progress, verdict table, exit code (0 pass, 1 SLO missed, 2 invalid,
    3 run error, 4 target error, 128 + signal number when interrupted)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from harness.reporting.terminal import console as safe_console
    from harness.reporting.terminal import term

    console = safe_console(stderr=True)
    try:
        plan = load_scenario(scenario).with_overrides(users=users, duration_s=duration)
    except ScenarioError as exc:
        console.print(f"[red]error:[/] {term(exc)}")
        return EXIT_ERROR
    out_dir = out or Path("reports/out/load") / plan.name
    options = LoadOptions(scenario_path=scenario, base_url=base_url, out_dir=out_dir,
                          users=users, duration_s=duration, workers=workers,
                          remote_workers=remote_workers, master_bind_host=master_bind_host,
                          master_port=master_port, emulator=emulator)
    total = plan.load.total_s
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"load {term(plan.name)}", total=total, info="starting")

        def progress(elapsed: float, done: int, failed: int) -> None:
            bar.update(task, completed=min(elapsed, total),
                       info=f"{done} requests, {failed} failed")

        try:
            code, summary = run_load(options, progress)
        except TargetUnreachable as exc:
            console.print(f"[red]target error:[/] {term(exc)}")
            return EXIT_TARGET
        except (LoadRunError, ScenarioError) as exc:
            console.print(f"[red]error:[/] {term(exc)}")
            return EXIT_ERROR
    table = Table(title=f"{term(plan.name)}: {summary['verdict'].upper()}")
    for column in ("level", "requests", "errors", "TTFT p95 ms", "TPOT p99 ms", "out tok/s",
                   "SLOs"):
        table.add_column(column)
    for lv in summary["levels"]:
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        table.add_row(f"{lv['target']:g} {lv['unit']}", str(lv["requests"]), str(lv["errors"]),
                      fmt(lv["ttft_ms"]["p95"]), fmt(lv["tpot_ms"]["p99"]), fmt(lv["output_tps"]),
                      "ok" if lv["passed"] else "MISSED")
    console.print(table)
    for reason in summary["reasons"]:
        console.print(f" - {term(reason)}")
    counted = summary.get("token_counts")
    if counted and counted != SERVER_USAGE:
        console.print(f"output token counts: {term(counted)}")
    truth = summary.get("truth")
    if truth and truth.get("ttft_abs_error_ms"):
        error_p95 = truth["ttft_abs_error_ms"]["p95"]
        console.print(f"TTFT error vs emulator truth: p95 {error_p95:.2f} ms "
                      f"over {truth['paired']} paired requests")
    console.print(f"outputs in {term(out_dir)}: requests.jsonl, summary.json, sweep.csv, "
                  "report.md, "
                  "report.html")
    return code
