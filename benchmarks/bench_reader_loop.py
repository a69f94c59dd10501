"""Prototype: N streaming users read by one epoll loop in one process, without gevent or Locust,
to price what the gevent user's per-chunk CPU is spent on (issue 13, item 5).

Each stream does what ``harness.load.exchange`` does per request (the client's call builder,
``X-Request-Id``, the llhttp parser, the client's sans-IO ``ResponseReader`` fed on the kernel's
``SO_TIMESTAMPNS`` receive stamps, a ``RequestRecord`` per request, back-to-back requests on
one keep-alive connection), but the loop is a plain ``selectors.EpollSelector``: one
``epoll_wait`` returns every socket that has data, and each is read once, with no greenlet
switch, no hub, no timer per read. The difference to the Locust worker at the same
concurrency is what gevent and Locust cost per chunk.

Setup as ``bench_load.py``: a fresh emulator pinned to CPU 0 at 20 tokens/s, 50 ms TTFT; this
process pinned to CPU 1. Per level: ``--warmup`` s, then ``--seconds`` s measured: CPU seconds of
this process over the window / chunks of the requests completed in it, and the |TTFT error| p95
against the emulator's truth (paired by ``X-Request-Id``, shared clock), as ``bench_load`` does.

    .venv/bin/python benchmarks/bench_reader_loop.py [--levels 500,1000,1500,2000]
        [--seconds 8] [--warmup 4] [--gevent]

``--gevent`` also runs ``bench_load``'s ``harness`` and ``harness-batched`` Locust users at the
same levels, against the same emulator, and prints the per-chunk CPU ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_load  # noqa: E402

from harness.client.models import ProgressEvent  # noqa: E402
from harness.client.stream import ResponseReader  # noqa: E402
from harness.control import ControlClient  # noqa: E402
from harness.load.emulator import EmulatorProcess  # noqa: E402
from harness.load.exchange import LIMITS, StampClock, prepare, to_epoch  # noqa: E402
from harness.load.metrics import RequestRecord  # noqa: E402
from harness.load.scenario import RequestShape  # noqa: E402
from harness.load.stalls import run_queue_wait_s  # noqa: E402
from harness.load.transport import _ANC_SIZE, _READ_SIZE, _SO_TIMESTAMPNS, _Parser, _stamp  # noqa: E402
from harness.load.truth import compare_with_truth  # noqa: E402

SHAPE = RequestShape(endpoint="chat", max_tokens=32)
MODEL = "qwen/qwen3-4b"
PREPARED = prepare(SHAPE, MODEL)


class Stream:
    """One user: closed loop over one keep-alive connection, driven by the selector."""

    __slots__ = ("base_url", "clock", "first", "gaps", "head_done", "last", "parser", "reader",
                 "record", "sock", "tokens")

    def __init__(self, base_url: str, host: str, port: int) -> None:
        self.base_url = base_url
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self.sock.setblocking(False)

    def start(self, head: str) -> None:
        call = PREPARED.call(self.base_url)
        self.clock = StampClock()
        t_send = time.perf_counter()
        self.reader = ResponseReader(call, call.context(1, 1, 0.0), LIMITS,
                                     deadline_at=t_send + LIMITS.deadline, started=t_send,
                                     clock=self.clock)
        body = call.body or b""
        extra = "".join(f"{k}: {v}\r\n" for k, v in call.headers.items())
        payload = (f"{call.method} {call.path} HTTP/1.1\r\n{head}{extra}"
                   f"content-length: {len(body)}\r\n\r\n").encode("latin-1") + body
        self.sock.send(payload)  # a few hundred bytes: fits an empty send buffer at once
        self.reader.sent()
        self.record = RequestRecord(endpoint="chat", model=MODEL, stream=True,
                                    t_intended=to_epoch(t_send), t_send=to_epoch(t_send),
                                    request_id=call.request_id)
        self.parser = _Parser("POST")
        self.head_done = False
        self.first = self.last = None
        self.tokens = 0
        self.gaps: list[float] = []

    def readable(self) -> RequestRecord | None:
        """Read once; the finished record when the response ended, else ``None``."""
        raw, ancillary, _, _ = self.sock.recvmsg(_READ_SIZE, _ANC_SIZE)
        now = _stamp(ancillary, time.perf_counter(), time.time())
        if not raw:
            raise ConnectionError("server closed the connection")
        parser, reader, clock = self.parser, self.reader, self.clock
        parser.feed(raw)
        clock.now = now
        if not self.head_done:
            if not parser.headers_complete:
                return None
            self.head_done = True
            self.record.status = parser.status_code
            reader.head(parser.status_code, {k.lower(): v for k, v in parser.items()})
        data = parser.take()
        if data:
            count = 0
            for event in reader.feed(data):
                if isinstance(event, ProgressEvent):
                    continue
                count += 1
                if self.first is None:
                    self.first = now
                else:
                    self.gaps.append(now - self.last)
                self.last = now
            if count and self.tokens == 0:
                self.record.first_read_tokens = count
            self.tokens += count
        if not parser.message_complete:
            return None
        reader.eof()
        record = self.record
        record.chunks = self.tokens
        record.gaps = self.gaps
        record.t_first_token = to_epoch(self.first) if self.first is not None else None
        record.t_last_token = to_epoch(self.last) if self.last is not None else None
        record.t_done = to_epoch(now)
        usage = reader.result.usage
        record.n_server = usage.completion_tokens if usage is not None else None
        record.finish_reason = reader.result.finish_reason
        return record


def run_level(url: str, users: int, seconds: float, warmup: float) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    from harness.client.request import base_headers

    headers = {"host": f"{host}:{port}", **base_headers(None)}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    control = ControlClient(url)
    since = control.truth_last_id()
    selector = selectors.EpollSelector()
    streams = [Stream(url, host, port) for _ in range(users)]
    load = os.getloadavg()[0]
    start = time.time()
    measure_from, measure_to = start + warmup, start + warmup + seconds
    for stream in streams:
        stream.start(head)
        selector.register(stream.sock, selectors.EVENT_READ, stream)
    records: list[RequestRecord] = []
    cpu_from = cpu_to = None
    waited = [0.0, 0.0]
    while True:
        now = time.time()
        if cpu_from is None and now >= measure_from:
            cpu_from = _cpu()
            waited[0] = run_queue_wait_s()
        if now >= measure_to:
            cpu_to = _cpu()
            waited[1] = run_queue_wait_s()
            break
        for key, _ in selector.select(0.05):
            stream = key.data
            record = stream.readable()
            if record is not None:
                record.warmup = record.t_send < measure_from
                records.append(record)
                stream.start(head)
    for stream in streams:
        selector.unregister(stream.sock)
        stream.sock.close()
    selector.close()
    time.sleep(0.5)  # let the emulator see every close before its truth is read
    truth = control.truth(since, page=500)
    control.close()
    window = [r for r in records if measure_from <= (r.t_done or 0) <= measure_to]
    chunks = sum(r.chunks for r in window)
    assert cpu_from is not None and cpu_to is not None
    cpu = cpu_to - cpu_from
    comparison = compare_with_truth(records, truth, shared_clock=True)
    err = comparison.ttft_abs_error_ms.p95 if comparison.ttft_abs_error_ms else None
    return {"users": users, "class": "epoll", "requests": len(window), "errors": 0,
            "paired": comparison.paired, "ttft_err_p95_ms": err,
            "ttft_p95_ms": None, "cpu_pct": 100 * cpu / seconds,
            "per_chunk_us": 1e6 * cpu / chunks if chunks else None, "load": load,
            "late": comparison.late_first_tokens, "cpu_wait_ms": 1000 * (waited[1] - waited[0]),
            "idle_ms": 1000 * (seconds - cpu - (waited[1] - waited[0])),
            "merged_first_reads": sum(r.first_read_tokens > 1 for r in records if not r.warmup),
            "sustained": err is not None and err <= bench_load.ERROR_LIMIT_MS}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="500,1000,1500,2000")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--gevent", action="store_true",
                        help="also the Locust users (harness, harness-batched) at each level")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    pinned = bench_load._pin(1)
    if pinned:
        os.sched_setaffinity(0, {1})
    per_chunk: dict[str, dict[int, float | None]] = {}
    with tempfile.TemporaryDirectory() as tmp, \
            EmulatorProcess(bench_load.SPEED, pin=bench_load._pin(0)) as emulator:
        work = Path(tmp)
        plain = bench_load.scenario_file(work, args.seconds, args.warmup)
        batched = bench_load.scenario_file(work, args.seconds, args.warmup, 200.0, "batched")
        for users in levels:
            rows = [run_level(emulator.url, users, args.seconds, args.warmup)]
            if args.gevent:
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))  # not the child's CPU
                for name, scenario in (("harness", plain), ("harness-batched", batched)):
                    row = bench_load.run_level(emulator.url, scenario, users, "harness", work,
                                               args.seconds, args.warmup)
                    row["class"] = name
                    rows.append(row)
                if pinned:
                    os.sched_setaffinity(0, {1})
            for row in rows:
                print(bench_load._line(row), flush=True)
                per_chunk.setdefault(row["class"], {})[users] = row["per_chunk_us"]
    if args.gevent:
        for users in levels:
            base = per_chunk["epoll"].get(users)
            for name in ("harness", "harness-batched"):
                other = per_chunk[name].get(users)
                if base and other:
                    print(f"users={users}: {name} per chunk / epoll per chunk = "
                          f"{other / base:.2f}x")


if __name__ == "__main__":
    main()
