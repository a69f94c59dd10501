"""The harness against llama.cpp's own server (llama-cpp-python), a server we did not write.

What only a real engine can show: which LM Studio features an OpenAI-compatible server lacks
(and that their absence is a skip, not an error), how fast it really is (calibration), and how
it really ends a stream it cuts off for another request: ``[DONE]`` without a ``finish_reason``,
which the ``openai`` SDK returns as a complete answer and the harness client must not.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from harness.calibration import calibrate
from harness.capabilities import discover
from harness.client import Client, RetryPolicy, Timeouts
from harness.client.errors import StreamInterrupted
from harness.engines.llamacpp import LlamaCppServer
from harness.evaluate.target import live_target

LONG = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]
LIMITS = Timeouts(connect=5, read=120, stream_idle=60, deadline=240)


def test_engine_is_an_openai_server_without_lm_studios_native_api(
        queued_engine: LlamaCppServer) -> None:
    profile = discover(queued_engine.base_url)
    assert profile.chat_models == queued_engine.models
    # Forced tool calls work (a grammar constrains the answer); usage is never streamed,
    # whatever stream_options asks; no LM Studio native API, no auth, no reasoning field.
    assert profile.capabilities == {"openai", "tools"}, profile.findings
    target = live_target(queued_engine.base_url, None, ())
    assert target.kind == "live" and target.info["server"] == "OpenAI-compatible server (live)"
    reason = target.missing("load_unload")
    assert reason is not None and "no native v1 API" in reason, reason


def test_calibration_finds_one_request_at_a_time(queued_engine: LlamaCppServer) -> None:
    """llama-cpp-python serialises requests on one lock: three at once take three times one."""
    measured = calibrate(queued_engine.base_url, queued_engine.models[0])
    assert measured.parallel == 1, measured
    assert measured.ttft_s is not None and measured.tokens_per_s, measured
    assert measured.concurrency(200) == 4  # four waiting per slot, not two hundred
    assert not measured.cuts_running


def test_calibration_sees_a_server_that_cuts_the_running_stream(engine: LlamaCppServer) -> None:
    """With interrupt_requests (the default) the three probes cut each other off."""
    measured = calibrate(engine.base_url, engine.models[0])
    assert measured.cuts_running and measured.parallel == 1, measured
    assert "cuts the running stream off" in measured.summary()


def stream_until_cut(engine: LlamaCppServer, frames: list[dict[str, Any] | str],
                     ready: threading.Event) -> None:
    """Raw SSE of one long stream on alias A: every ``data:`` payload, as the server sent it."""
    body = {"model": engine.models[0], "messages": LONG, "stream": True, "max_tokens": 400,
            "temperature": 0, "seed": 1}
    with httpx.stream("POST", f"{engine.base_url}/v1/chat/completions", json=body,
                      timeout=120) as response:
        try:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line.removeprefix("data: ")
                frames.append(payload if payload == "[DONE]" else json.loads(payload))
                if len(frames) == 5:
                    ready.set()
        except httpx.RemoteProtocolError as exc:  # the end of the body, after [DONE]
            frames.append(f"transport: {exc}")


def request_b_while_a_streams(engine: LlamaCppServer, consume: Any) -> tuple[Any, float]:
    """Start ``consume()`` (a stream on A) in a thread; once it has read a few chunks, ask for
    alias B. Returns what ``consume`` returned and B's answer time."""
    result: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        try:
            result["value"] = consume(ready)
        except BaseException as exc:  # handed to the test thread
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert ready.wait(60), "stream on A produced no chunks"
    started = time.perf_counter()
    answer = httpx.post(f"{engine.base_url}/v1/chat/completions", timeout=120, json={
        "model": engine.models[1], "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 8})
    elapsed = time.perf_counter() - started
    thread.join(120)
    assert answer.status_code == 200 and answer.json()["model"] == engine.models[1], answer.text
    if "error" in result:
        raise result["error"]
    return result.get("value"), elapsed


def test_requesting_b_while_a_streams_cuts_a_with_done_and_no_finish_reason(
        engine: LlamaCppServer) -> None:
    frames: list[dict[str, Any] | str] = []
    request_b_while_a_streams(engine, lambda ready: stream_until_cut(engine, frames, ready))
    # The last data frame is [DONE]; then the server drops the connection without the chunked
    # body's terminator (measured: httpx says "incomplete chunked read").
    data = [f for f in frames if not (isinstance(f, str) and f.startswith("transport: "))]
    assert data[-1] == "[DONE]", frames[-3:]
    chunks = [f for f in frames if isinstance(f, dict)]
    reasons = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
    assert not any(reasons), f"a finish_reason arrived: {reasons}"
    assert 5 <= len(chunks) < 400, len(chunks)  # cut after a few, not run to max_tokens


def test_openai_sdk_takes_the_cut_stream_as_complete(engine: LlamaCppServer) -> None:
    """What the harness exists to fix: the SDK ends the loop normally on ``[DONE]``."""
    from openai import OpenAI

    sdk = OpenAI(base_url=f"{engine.base_url}/v1", api_key="none", max_retries=0)

    def consume(ready: threading.Event) -> tuple[str, list[Any], int]:
        text, reasons, chunks = "", [], 0
        for chunk in sdk.chat.completions.create(model=engine.models[0], messages=LONG,
                                                 stream=True, max_tokens=400, temperature=0):
            chunks += 1
            if chunks == 5:
                ready.set()
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reasons.append(chunk.choices[0].finish_reason)
        return text, reasons, chunks

    (text, reasons, chunks), _ = request_b_while_a_streams(engine, consume)
    assert text and chunks >= 5 and not any(reasons)  # no error, no finish_reason: "complete"


def test_harness_client_raises_with_the_partial_text_kept(engine: LlamaCppServer) -> None:
    def consume(ready: threading.Event) -> None:
        with Client(engine.base_url, model=engine.models[0], retry=RetryPolicy.none(),
                    timeout=LIMITS) as client:
            with client.stream_chat(LONG, max_tokens=400, temperature=0) as stream:
                for chunks, _event in enumerate(stream, 1):
                    if chunks == 5:
                        ready.set()
                stream.result()

    with pytest.raises(StreamInterrupted) as caught:
        request_b_while_a_streams(engine, consume)
    error = caught.value
    assert error.partial is not None and error.partial.text and error.partial.chunks >= 5
    assert engine.models[0] in str(error) and "/v1/chat/completions" in str(error), str(error)
