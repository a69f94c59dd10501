"""Concurrency suite. Gap: "No Async/Await Safety" (reference analysis, major issue 3).

The review found only synchronous code, no test of concurrent requests, and named the risks:
a model parameter overwritten by another request, and timeouts under thread contention. These
tests put 200 concurrent async calls and 32 threads on one client in front of a server with 4
parallel slots: every call completes or fails with a typed error, every answer is the answer to
its own request (each prompt carries a tag the emulator echoes back), connections stay bounded,
and nothing is leaked: no socket, no task, no thread. The ``subject`` tests judge any client by
its tagged answers and the model that answered; the ``harness_api`` test checks the harness's own
pool limit and leaks.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from harness.client import AsyncClient, ChatResult, Client, RetryPolicy
from harness.client.errors import LMStudioError
from harness.evaluate.support import (
    Outcome,
    acall_outcome,
    astream_outcome,
    bare_model,
    call_outcome,
    client_connections,
    echo_answer,
    echo_messages,
    live_bound,
    load_models,
    prompt,
    socket_fds,
    stream_outcome,
)
from harness.evaluate.target import Faults, Target, Truth
from harness.faults import DisconnectFault, FaultMatch, FaultPlan, FaultRule, StatusFault
from harness.pytest_plugin import fast_retry, suite_timeouts

pytestmark = pytest.mark.concurrency

MAX_CONNECTIONS = 16
LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=8)


def check_answer(target: Target, tag: str, result: ChatResult, model: str) -> None:
    assert result.model == model, f"{tag}: answered by {result.model}"
    finished = ("stop",) if target.can("emulator") else ("stop", "length")  # live: max_tokens
    assert result.finish_reason in finished, f"{tag}: {result.finish_reason}"
    if target.can("emulator"):
        assert result.text == echo_answer(tag), f"cross-talk: {tag} got {result.text!r}"


def tagged(tag: str, bound: dict[str, Any]) -> list[dict[str, Any]]:
    """The emulator echoes a tool result verbatim (proof of no cross-talk); a live model may
    answer that conversation with nothing at all, so it gets a plain prompt naming the tag."""
    return prompt(f"Repeat this tag: {tag}") if bound else echo_messages(tag)


async def _one(client: AsyncClient, tag: str, stream: bool, bound: dict[str, Any]
               ) -> ChatResult:
    if stream:
        async with client.stream_chat(tagged(tag, bound), **bound) as s:
            return await s.result()
    return await client.chat(tagged(tag, bound), **bound)


def judge(target: Target, tag: str, outcome: Outcome, model: str) -> None:
    """A tagged call's outcome: its own answer, from its own model, complete."""
    assert outcome.answer is not None, f"{tag}: {outcome.describe()}"
    answer = outcome.answer
    assert bare_model(answer.model) == model, f"{tag}: answered by {answer.model}"
    finished = ("stop",) if target.can("emulator") else ("stop", "length")  # live: max_tokens
    assert answer.finish_reason in finished, f"{tag}: {outcome.describe()}"
    if target.can("emulator"):
        assert answer.text == echo_answer(tag), f"cross-talk: {tag} got {answer.text!r}"


def _all_settled_ok(target: Target, expect: int) -> list[dict[str, Any]]:
    """The truth log's chat records once `expect` of them settled, each asserted a 200."""
    assert target.control is not None
    records = Truth(target.control).settled("/v1/chat/completions", expect=expect)
    assert len(records) == expect and all(r["status"] == 200 for r in records)
    return records


async def _subject_one(subject: Any, tag: str, model: str, stream: bool,
                       bound: dict[str, Any]) -> Outcome:
    if stream:
        return await astream_outcome(subject, tagged(tag, bound), model=model, **bound)
    return await acall_outcome(subject.achat, tagged(tag, bound), model=model, **bound)


@pytest.mark.target_needs("concurrent")
@pytest.mark.subject_needs("async", "stream")
async def test_200_concurrent_calls_each_get_their_own_answer(
        target: Target, subject: Any, record_property: Any) -> None:
    """Gap: no async/await safety. 200 concurrent async calls (half streamed) on one client,
    4 server slots: every call completes with the answer to its own request (each carries a
    tag the emulator echoes back) from its own model; the server saw 200 successes."""
    model = target.model(0)
    count = target.calibration.concurrency(200)
    bound = live_bound(target, max_tokens=16)
    await subject.achat(tagged("warm-up", bound), model=model, **bound)  # JIT load first
    tags = [f"req-{i:03d}" for i in range(count)]
    outcomes = await asyncio.gather(*(_subject_one(subject, tag, model, i % 2 == 0, bound)
                                      for i, tag in enumerate(tags)))
    for tag, outcome in zip(tags, outcomes, strict=True):
        judge(target, tag, outcome, model)
    if target.can("truth"):
        _all_settled_ok(target, count + 1)
    record_property("evidence", f"{count}/{count} concurrent answers matched their own tags "
                                "and model")


@pytest.mark.target_needs("concurrent")
@pytest.mark.subject_needs("sync", "stream")
def test_32_threads_share_one_client(target: Target, subject: Any,
                                     record_property: Any) -> None:
    """Gap: no async/await safety ("thread contention -> model parameter overwrite"). 32
    threads on one client, half of the calls on a second model: every answer belongs to its
    request and to the model that request named."""
    models = [target.model(0), target.model(1)]
    if target.can("load_unload"):
        load_models(target, models)
    calls = target.calibration.concurrency(96)
    bound = live_bound(target, max_tokens=16)

    def work(i: int) -> tuple[str, str, Outcome]:
        tag, model = f"thread-{i:02d}", models[i % 2]
        messages = tagged(tag, bound)
        if i % 4 < 2:
            return tag, model, stream_outcome(subject, messages, model=model, **bound)
        return tag, model, call_outcome(subject.chat, messages, model=model, **bound)

    with ThreadPoolExecutor(max_workers=min(32, calls)) as pool:
        outcomes = list(pool.map(work, range(calls)))
    for tag, model, outcome in outcomes:
        judge(target, tag, outcome, model)
    record_property("evidence", f"{calls} calls from {min(32, calls)} threads on one client: "
                                "every answer matched its tag and model")


@pytest.mark.needs_faults
@pytest.mark.subject_needs("async", "stream")
async def test_failures_under_faults_stay_with_their_own_call(
        target: Target, subject: Any, faults: Faults, record_property: Any) -> None:
    """Gap: no async/await safety. Under random 503s and dropped streams, 100 concurrent calls
    each either return their own complete answer or raise: no failure becomes a wrong or
    truncated answer, and none leaks into another call."""
    model = target.model(0)
    bound = live_bound(target, max_tokens=16)
    await subject.achat(tagged("warm-up", bound), model=model, **bound)
    faults.set(FAULTY)
    tags = [f"faulty-{i:03d}" for i in range(target.calibration.concurrency(100, per_slot=16))]
    outcomes = await asyncio.gather(*(_subject_one(subject, tag, model, i % 2 == 0, bound)
                                      for i, tag in enumerate(tags)))
    ok = failed = 0
    for tag, outcome in zip(tags, outcomes, strict=True):
        if outcome.raised:
            failed += 1
        else:
            judge(target, tag, outcome, model)
            ok += 1
    assert ok and failed, f"faults did not mix outcomes: {ok} ok, {failed} failed"
    record_property("evidence", f"{ok} answered correctly, {failed} raised "
                                "(503 / dropped stream)")


FAULTY = FaultPlan(seed=7, rules=(
    FaultRule(match=FaultMatch(endpoint="/v1/chat/completions", probability=0.15),
              action=StatusFault(status=503)),
    FaultRule(match=FaultMatch(endpoint="/v1/chat/completions", probability=0.15),
              action=DisconnectFault(after_chunks=2)),
))


@pytest.mark.harness_api
@pytest.mark.target_needs("concurrent", "realtime")  # counts open sockets: no replay has them
async def test_200_concurrent_async_calls_no_cross_talk(target: Target,
                                                        record_property: Any) -> None:
    """Gap: no async/await safety. 200 concurrent async calls (half streamed) on one client,
    4 server slots: all complete, each answer carries its own request's tag, the server never
    ran more than 4 at once, connections stay within the pool limit, no socket or task leaks.
    On a live server the count is sized to the width calibration measured."""
    model = target.model(0)
    count = target.calibration.concurrency(200)
    bound = live_bound(target, max_tokens=16)
    tasks_before = {t for t in asyncio.all_tasks() if not t.done()}
    sockets_before = socket_fds()
    if target.control is not None:  # the control client's own keep-alive connection, if any
        target.control.state()
    others = client_connections(target.base_url)
    peak_sockets = 0
    peak_connections = 0
    peak_active = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak_sockets, peak_active, peak_connections
        while not done.is_set():
            peak_sockets = max(peak_sockets, socket_fds())
            peak_connections = max(peak_connections, client_connections(target.base_url))
            if target.can("emulator"):  # slot occupancy is engine state
                assert target.control is not None
                state = await asyncio.to_thread(target.control.state)
                active = sum(i["active"] for i in state.get("instances", []))
                peak_active = max(peak_active, active)
            await asyncio.sleep(0.02)

    async with AsyncClient(target.base_url, model=model, api_token=target.api_token,
                           timeout=suite_timeouts(target), retry=fast_retry(),
                           limits=LIMITS) as client:
        await client.chat(tagged("warm-up", bound), **bound)  # JIT load before the crowd
        sampler = asyncio.create_task(sample())
        tags = [f"req-{i:03d}" for i in range(count)]
        results = await asyncio.gather(*(_one(client, tag, i % 2 == 0, bound)
                                         for i, tag in enumerate(tags)))
        done.set()
        await sampler
    for tag, result in zip(tags, results, strict=True):
        check_answer(target, tag, result, model)
    if target.can("truth"):
        records = _all_settled_ok(target, count + 1)
    if target.can("emulator"):
        assert 1 <= peak_active <= 4, f"server ran {peak_active} generations at once"
        assert max(r["queue_wait_s"] for r in records) > 0, "nothing ever queued"
    opened = peak_connections - others
    assert 0 < opened <= MAX_CONNECTIONS, f"{opened} connections open (limit {MAX_CONNECTIONS})"
    assert client_connections(target.base_url) <= others, "connections left open after close"
    await asyncio.sleep(0.05)
    tasks_after = {t for t in asyncio.all_tasks() if not t.done()}
    assert not tasks_after - tasks_before, f"leaked tasks: {tasks_after - tasks_before}"
    if target.can("emulator"):  # every socket of the run lives in this process: all must go
        leaked = socket_fds() - sockets_before
        assert leaked <= 0 or await _settles(sockets_before), f"{leaked} sockets leaked"
    record_property("evidence", f"{count}/{count} answers matched their tags; peak {peak_active} "
                                f"active on the server; peak {opened} connections "
                                f"(limit {MAX_CONNECTIONS}); 0 leaked tasks or sockets")


async def _settles(baseline: int, timeout: float = 2.0) -> bool:
    """Server-side halves of closed connections go away a moment after the client's."""
    for _ in range(int(timeout / 0.02)):
        if socket_fds() <= baseline:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.harness_api
@pytest.mark.target_needs("concurrent")
def test_32_threads_share_one_sync_client(target: Target, client: Client,
                                          record_property: Any) -> None:
    """Gap: no async/await safety ("thread contention -> model parameter overwrite"). 32
    threads on one sync client, half with their own pinned model: every answer belongs to its
    request and to the model that request was pinned to; no thread or socket is leaked."""
    models = [target.model(0), target.model(1)]
    if target.can("load_unload"):
        for model in models:
            client.load_model(model)
    calls = target.calibration.concurrency(96)
    bound = live_bound(target, max_tokens=16)
    threads_before = threading.active_count()
    sockets_before = socket_fds()

    def work(i: int) -> tuple[str, str, ChatResult]:
        tag = f"thread-{i:02d}"
        model = models[i % 2]
        view = client.with_options(model=model) if i % 2 else client
        if i % 4 < 2:
            with view.stream_chat(tagged(tag, bound), **bound) as stream:
                return tag, model, stream.result()
        return tag, model, view.chat(tagged(tag, bound), **bound)

    with ThreadPoolExecutor(max_workers=min(32, calls)) as pool:
        outcomes = list(pool.map(work, range(calls)))
    for tag, model, result in outcomes:
        check_answer(target, tag, result, model)
    assert threading.active_count() <= threads_before
    assert socket_fds() - sockets_before <= 2 * 64  # at most the pool's keep-alive connections
    record_property("evidence", f"{calls} calls from {min(32, calls)} threads on one Client: "
                                "every answer matched its tag and pinned model")


@pytest.mark.harness_api
@pytest.mark.needs_faults
async def test_concurrent_calls_fail_typed_under_faults(target: Target, faults: Faults,
                                                        record_property: Any) -> None:
    """Gap: no async/await safety. Under random 503s and dropped streams, 100 concurrent calls
    each either succeed with their own answer or raise a typed ``LMStudioError``: nothing
    untyped escapes, and no failure leaks into another call."""
    model = target.model(0)
    plan = FaultPlan(seed=7, rules=(
        FaultRule(match=FaultMatch(endpoint="/v1/chat/completions", probability=0.15),
                  action=StatusFault(status=503)),
        FaultRule(match=FaultMatch(endpoint="/v1/chat/completions", probability=0.15),
                  action=DisconnectFault(after_chunks=2)),
    ))
    bound = live_bound(target, max_tokens=16)
    async with AsyncClient(target.base_url, model=model, api_token=target.api_token,
                           timeout=suite_timeouts(target), retry=RetryPolicy.none(),
                           limits=LIMITS) as client:
        await client.chat(tagged("warm-up", bound), **bound)
        faults.set(plan)
        tags = [f"faulty-{i:03d}" for i in range(target.calibration.concurrency(100, per_slot=16))]
        outcomes = await asyncio.gather(*(_one(client, tag, i % 2 == 0, bound)
                                          for i, tag in enumerate(tags)),
                                        return_exceptions=True)
    ok = failed = 0
    for tag, outcome in zip(tags, outcomes, strict=True):
        if isinstance(outcome, ChatResult):
            check_answer(target, tag, outcome, model)
            ok += 1
        else:
            assert isinstance(outcome, LMStudioError), f"{tag}: untyped {outcome!r}"
            assert outcome.model == model and client.base_url in str(outcome)
            failed += 1
    assert ok and failed, f"faults did not mix outcomes: {ok} ok, {failed} failed"
    record_property("evidence", f"{ok} answered correctly, {failed} failed typed "
                                "(503 / dropped stream)")
