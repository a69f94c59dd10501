"""The shared pacer (never early, re-arms on the earliest bucket) and the paced stream over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.studio.pacer import Pacer
from harness.studio.testing import running_studio
from harness.studio.wire import DirectBody

ROOT = Path(__file__).resolve().parents[2]
BENCH_CATALOG = ROOT / "fixtures/catalogs/bench.json"  # 20 tokens/s, no load time
MODEL = "qwen/qwen3-4b"
OTHER = "google/gemma-3-12b"


async def _fire_all(offsets: list[float]) -> list[tuple[float, float]]:
    loop = asyncio.get_running_loop()
    pacer = Pacer.current()
    base = loop.time()
    fired: list[tuple[float, float]] = []
    done = loop.create_future()

    def make(due: float) -> Callable[[], None]:
        def callback() -> None:
            fired.append((due, time.monotonic()))
            if len(fired) == len(offsets):
                done.set_result(None)
        return callback

    for offset in offsets:
        pacer.call_at(base + offset, make(base + offset))
    await asyncio.wait_for(done, 2)
    return fired


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(min_value=-0.005, max_value=0.02), min_size=1, max_size=40))
def test_every_callback_runs_once_never_early(offsets: list[float]) -> None:
    fired = asyncio.run(_fire_all(offsets))
    assert len(fired) == len(offsets)
    assert all(at >= due for due, at in fired)
    ticks = [math.ceil(due * 1000) for due, _ in fired]
    assert ticks == sorted(ticks)  # whole buckets, earliest first


def test_callbacks_filing_later_deadlines_do_not_delay_earlier_ones() -> None:
    async def go() -> list[str]:
        loop = asyncio.get_running_loop()
        pacer = Pacer.current()
        now = loop.time()
        order: list[str] = []
        pacer.call_at(now + 0.001, lambda: pacer.call_at(now + 0.2, lambda: order.append("late")))
        pacer.call_at(now + 0.01, lambda: order.append("early"))
        await asyncio.sleep(0.05)
        return order

    assert asyncio.run(go()) == ["early"]


def test_a_failing_callback_does_not_stall_the_bucket() -> None:
    async def go() -> list[str]:
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(str(ctx["exception"])))
        pacer = Pacer.current()
        due = loop.time() + 0.002
        ran: list[str] = []
        pacer.call_at(due, lambda: 1 / 0)
        pacer.call_at(due, lambda: ran.append("ok"))
        await asyncio.sleep(0.02)
        return ran + errors

    assert asyncio.run(go()) == ["ok", "division by zero"]


def test_direct_body_only_for_uvicorn_httptools() -> None:
    async def send(message: dict) -> None:
        return None

    assert DirectBody.attach(send) is None


def _raw_stream(port: int, body: dict) -> list[bytes]:
    """The HTTP chunks of one streamed response, as written by the server."""

    async def go() -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = json.dumps(body).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: " + str(len(data)).encode()
                     + b"\r\n\r\n" + data)
        await reader.readuntil(b"\r\n\r\n")
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        writer.close()
        return chunks

    return asyncio.run(go())


def test_paced_stream_truth_and_one_write_for_the_end() -> None:
    with running_studio(preload=[MODEL]) as s:
        chunks = _raw_stream(s.port, {"model": MODEL, "stream": True, "max_tokens": 30,
                                      "messages": [{"role": "user", "content": "pace"}]})
        record = s.truth()[-1]
    frames = b"".join(chunks).split(b"\n\n")[:-1]
    assert record["chunks_sent"] == len(frames) and record["finish_reason"] is not None
    late = [a - d for a, d in zip(record["sent_chunk_times_s"],
                                  record["scheduled_chunk_times_s"], strict=True)]
    assert min(late) >= 0 and max(late) < 0.5
    assert b'"finish_reason":"' in chunks[-1] and chunks[-1].endswith(b"data: [DONE]\n\n")


def test_cut_off_while_the_pacer_writes() -> None:
    with running_studio(catalog=BENCH_CATALOG) as s, httpx.Client(base_url=s.base_url) as c:
        c.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 1,
                                             "messages": [{"role": "user", "content": "load"}]})
        lines: list[str] = []

        def read() -> None:
            with c.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "stream": True, "max_tokens": 40,
                "messages": [{"role": "user", "content": "long"}]}) as r:
                lines.extend(line for line in r.iter_lines() if line)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.3)
        switch = c.post("/v1/chat/completions", json={
            "model": OTHER, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]})
        reader.join(5)
        truth = next(r for r in s.truth() if r["stream"])
    assert switch.status_code == 200
    assert lines[-1] == "data: [DONE]" and not any('"finish_reason":"' in x for x in lines)
    assert truth["cut_off"] and 3 <= truth["chunks_sent"] < 40


def test_catch_up_lets_overdue_callbacks_run_first() -> None:
    async def go() -> list[str]:
        loop = asyncio.get_running_loop()
        pacer = Pacer.current()
        order: list[str] = []
        pacer.call_at(loop.time() + 0.002, lambda: order.append("chunk"))
        time.sleep(0.01)  # the loop was busy past the deadline (e.g. a burst of requests)
        await pacer.catch_up()
        order.append("next request")
        return order

    assert asyncio.run(go()) == ["chunk", "next request"]


class _SlowAfter:
    """A DirectBody stand-in whose reader falls behind after ``n`` writes (buffer paused)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.written: list[bytes] = []
        self.disconnected = False

    def writable(self) -> bool:
        return len(self.written) < self.n

    def write(self, frames: list[bytes]) -> None:
        self.written.append(b"".join(frames))

    def write_one(self, frame: bytes) -> None:
        self.written.append(frame)


def test_slow_reader_hands_the_rest_to_the_awaited_send(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.faults import OPENAI
    from harness.studio import streaming
    from harness.studio.encoding import Frames
    from harness.studio.truth import RequestTruth

    body = _SlowAfter(3)
    monkeypatch.setattr(streaming.DirectBody, "attach", classmethod(lambda cls, send: body))
    frames = Frames(tuple(b"data: %d\n\n" % i for i in range(8)), (0, 1, 2, 3, 4, 5, 6, 6))

    async def go() -> tuple[list[dict], RequestTruth]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        record = RequestTruth(1, "/v1/chat/completions", "POST", True)
        loop = asyncio.get_running_loop()
        ok = await streaming.write_stream(
            # 50 ms apart: a callback late by less than that (a busy CI machine) still writes
            # one frame per write, which is what this test counts.
            send, frames, t_first=loop.time() + 0.005, interval=0.05, record=record,
            cutoff=streaming.cutoff_frames("done_no_finish", OPENAI), fault=None,
            on_evict=None)
        assert ok
        return sent, record

    sent, record = asyncio.run(go())
    through_send = [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]
    assert b"".join(body.written + through_send) == b"".join(frames.frames)
    assert len(body.written) == 3 and sent[-1]["more_body"] is False
    assert len(record.scheduled) == len(record.sent_at) == 8
    assert all(a >= s for a, s in zip(record.sent_at, record.scheduled, strict=True))
