"""The stressing emulator (``harness.studio.stress``): what it puts on the wire, that good
readers (the harness client on both shells, the openai SDK) still read it exactly, and that
readers with the classic flaws are caught by it and would not be caught without it."""

from __future__ import annotations

import asyncio
import json
from array import array
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import AsyncClient, Client
from harness.studio import stress as stress_mod
from harness.studio.stress import KEEPALIVE, MULTIBYTE_WORDS, Stress, cuts, reschedule
from harness.studio.testing import StudioHandle, running_studio

CHAT = "/v1/chat/completions"
MODEL = "qwen/qwen3-4b"
STORY = [{"role": "user", "content": "Tell me a long story"}]


@pytest.fixture(scope="module")
def stressed() -> Iterator[StudioHandle]:
    with running_studio(stress=Stress(seed=7)) as handle:
        yield handle


@pytest.fixture(scope="module")
def plain() -> Iterator[StudioHandle]:
    with running_studio() as handle:
        yield handle


def body(seed: int, stream: bool = True) -> dict[str, Any]:
    return {"model": MODEL, "messages": STORY, "seed": seed, "stream": stream}


def raw_reads(studio: StudioHandle, seed: int, headers: dict[str, str] | None = None
              ) -> list[bytes]:
    """The stream as the network delivered it: one item per read."""
    with httpx.Client(timeout=10) as http, http.stream(
            "POST", studio.base_url + CHAT, json=body(seed), headers=headers) as response:
        assert response.status_code == 200
        return list(response.iter_raw())


def whole_text(studio: StudioHandle, seed: int, headers: dict[str, str] | None = None) -> str:
    with httpx.Client(timeout=10) as http:
        reply = http.post(studio.base_url + CHAT, json=body(seed, stream=False), headers=headers)
    return str(reply.json()["choices"][0]["message"]["content"])


def frames_of(data: bytes) -> list[bytes]:
    """The data frames (stressed streams end lines with CRLF)."""
    return [f for f in data.replace(b"\r\n", b"\n").split(b"\n\n") if f.startswith(b"data:")]


def text_of(frames: list[bytes]) -> str:
    text = []
    for frame in frames:
        payload = frame[len(b"data: "):]
        if payload != b"[DONE]":
            for choice in json.loads(payload)["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


# -- what goes on the wire ------------------------------------------------------------------------


def test_the_wire_carries_split_coalesced_multibyte_frames_and_keepalives(
        stressed: StudioHandle) -> None:
    mark = len(stressed.truth())
    reads = [read for seed in (1, 2, 3) for read in raw_reads(stressed, seed)]
    data = b"".join(reads)
    assert KEEPALIVE.replace(b"\n", b"\r\n") in data and b"\r\n\r\n" in data
    assert any(read.endswith(b"\r") for read in reads), "no cut between a CR and its LF"
    assert any(byte >= 0xF0 for byte in data), "no 4-byte UTF-8 (emoji) in the text"
    assert any(not read.endswith(b"\n\n") for read in reads), "no frame was split"
    assert any(len(frames_of(read)) >= 2 for read in reads), "no write held two frames"
    split_chars = [r for r in reads if r and 0x80 <= r[0] <= 0xBF]
    assert split_chars, "no read started inside a multibyte character"
    # Every frame still arrives whole and in order once the reads are joined, and the truth
    # records each frame (not each write, not the keep-alives).
    records = stressed.truth(mark)
    assert sum(r["chunks_sent"] for r in records) == len(frames_of(data))


@pytest.mark.parametrize("seed", [1, 2])
def test_text_is_deterministic_and_equals_the_non_stream_twin(stressed: StudioHandle,
                                                               seed: int) -> None:
    first = text_of(frames_of(b"".join(raw_reads(stressed, seed))))
    again = text_of(frames_of(b"".join(raw_reads(stressed, seed))))
    assert first == again == whole_text(stressed, seed)
    assert any(word in first for word in MULTIBYTE_WORDS)


def test_the_header_turns_stress_on_off_and_reseeds(stressed: StudioHandle,
                                                    plain: StudioHandle) -> None:
    assert whole_text(stressed, 1, {"X-Harness-Stress": "off"}).isascii()
    assert whole_text(plain, 1).isascii()
    assert not whole_text(plain, 1, {"X-Harness-Stress": "on"}).isascii()
    reseeded = whole_text(stressed, 1, {"X-Harness-Stress": '{"seed": 99}'})
    assert reseeded != whole_text(stressed, 1)
    assert len(reseeded.split()) == len(whole_text(stressed, 1).split())  # same choices


@pytest.mark.parametrize("header", ["maybe", '{"coalesce": 0}', '{"splits": true}'])
def test_a_bad_stress_header_is_a_400_naming_it(plain: StudioHandle, header: str) -> None:
    with httpx.Client(timeout=10) as http:
        reply = http.post(plain.base_url + CHAT, json=body(1),
                          headers={"X-Harness-Stress": header})
    assert reply.status_code == 400 and "X-Harness-Stress" in reply.text


def test_scripted_answers_keep_their_exact_text(stressed: StudioHandle) -> None:
    directive = '[[tools: [[{"name": "add", "arguments": {"a": 1}}]]]] go'
    messages = [{"role": "user", "content": directive},
                {"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
                                                      "function": {"name": "add",
                                                                   "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "1", "content": "wrote 8 chars to plan.txt"}]
    with Client(stressed.base_url, model=MODEL) as client, client.stream_chat(messages) as stream:
        for _ in stream:
            pass
        text = stream.result().text
    assert text == "Done after 1 round(s). Tool results: wrote 8 chars to plan.txt"


def test_a_fault_still_counts_frames_under_stress(stressed: StudioHandle) -> None:
    """Fault rules count frames; under stress the frames before the drop all arrive."""
    mark = len(stressed.truth())
    fault = json.dumps({"kind": "disconnect", "after_chunks": 3})
    reads: list[bytes] = []
    with httpx.Client(timeout=10) as http, http.stream(
            "POST", stressed.base_url + CHAT, json=body(1),
            headers={"X-Harness-Fault": fault}) as response:
        with pytest.raises(httpx.RemoteProtocolError):  # the connection drops mid-body
            for read in response.iter_raw():
                reads.append(read)
    assert len(frames_of(b"".join(reads))) == 3
    assert [r["chunks_sent"] for r in stressed.truth(mark)] == [3]


# -- good readers read it exactly -----------------------------------------------------------------


def test_the_harness_sync_client_reads_stressed_streams(stressed: StudioHandle) -> None:
    with Client(stressed.base_url, model=MODEL) as client:
        for seed in (1, 2, 3):
            with client.stream_chat(STORY, seed=seed) as stream:
                pieces = [getattr(e, "text", "") for e in stream]
                result = stream.result()
            assert "".join(pieces) == result.text == whole_text(stressed, seed)
            assert "\ufffd" not in result.text


async def test_the_harness_async_client_reads_stressed_streams(stressed: StudioHandle) -> None:
    async def one(client: AsyncClient, seed: int) -> str:
        async with client.stream_chat(STORY, seed=seed) as stream:
            async for _ in stream:
                pass
            return (await stream.result()).text

    async with AsyncClient(stressed.base_url, model=MODEL) as client:
        texts = await asyncio.gather(*(one(client, seed) for seed in (1, 2, 3, 4)))
    assert texts == [whole_text(stressed, seed) for seed in (1, 2, 3, 4)]


def test_the_openai_sdk_reads_stressed_streams(stressed: StudioHandle) -> None:
    sdk = openai.OpenAI(base_url=stressed.base_url + "/v1", api_key="lm-studio", max_retries=0)
    try:
        for seed in (1, 2):
            chunks = sdk.chat.completions.create(model=MODEL, messages=STORY,  # type: ignore[arg-type]
                                                 seed=seed, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == whole_text(stressed, seed)
    finally:
        sdk.close()


# -- flawed readers are caught (and only by the stress) -------------------------------------------


def per_read_decoding_reader(reads: list[bytes]) -> str:
    """Flaw: decodes each network read on its own, so a character split across reads breaks."""
    text, pending = [], ""
    for read in reads:
        pending = (pending + read.decode("utf-8", "replace")).replace("\r\n", "\n")
        *events, pending = pending.split("\n\n")
        text += [text_of([e.encode()]) for e in events if e.startswith("data:")]
    return "".join(text)


def one_event_per_read_reader(reads: list[bytes]) -> str:
    """Flaw: takes each read for exactly one event (true of a tidy local server)."""
    return text_of([frames_of(read)[0] for read in reads if frames_of(read)])


def every_line_is_data_reader(reads: list[bytes]) -> str:
    """Flaw: parses every non-empty line as ``data:`` JSON (comments are not expected)."""
    lines = [line for line in b"".join(reads).split(b"\n") if line]
    return text_of([b"data: " + line.split(b":", 1)[1].strip() for line in lines])


FLAWED = [per_read_decoding_reader, one_event_per_read_reader, every_line_is_data_reader]


@pytest.mark.parametrize("reader", [per_read_decoding_reader, every_line_is_data_reader],
                         ids=lambda r: r.__name__)
def test_a_flawed_reader_passes_a_tidy_stream(plain: StudioHandle, reader: Any) -> None:
    """The control: on the plain emulator's ASCII, comment-free streams these flaws are
    invisible, which is why the suites missed them. (No control for the one-event-per-read
    reader: a busy machine merges the plain emulator's reads too, now and then.)"""
    assert reader(raw_reads(plain, 1)) == whole_text(plain, 1)


@pytest.mark.parametrize("reader", FLAWED, ids=lambda r: r.__name__)
def test_a_flawed_reader_is_caught_by_the_stress(stressed: StudioHandle, reader: Any) -> None:
    caught = 0
    for seed in (1, 2, 3):
        try:
            caught += reader(raw_reads(stressed, seed)) != whole_text(stressed, seed)
        except (ValueError, IndexError):  # the comment line is no JSON
            caught += 1
    assert caught >= 1


# -- the pure parts -------------------------------------------------------------------------------


@given(st.lists(st.floats(0, 5), min_size=0, max_size=40), st.integers(0, 2**32),
       st.integers(1, 6), st.booleans())
def test_reschedule_never_sends_early_or_out_of_order(steps: list[float], seed: int,
                                                      coalesce: int, merge: bool) -> None:
    base = sorted(steps)
    dues = array("d", base)
    stress = Stress(seed=seed, coalesce=coalesce)
    groups = reschedule(stress, dues, 0.01, stress.rng(1), coalesce=merge)
    assert sum(groups) == len(base)
    assert all(g == 1 for g in groups) or merge
    assert all(1 <= g <= coalesce for g in groups)
    assert list(dues) == sorted(dues)
    assert all(d >= b for d, b in zip(dues, base, strict=True))
    if base:
        assert dues[0] == base[0]  # the first token keeps its scheduled time
    start = 0
    for size in groups:  # a group leaves together, at its last frame's deadline
        assert len(set(dues[start:start + size])) == 1
        start += size


@given(st.text(min_size=0, max_size=30), st.integers(0, 2**32))
def test_cuts_split_inside_a_character_when_there_is_one(text: str, seed: int) -> None:
    data = text.encode("utf-8")
    positions = cuts(data, Stress(seed=seed).rng(0))
    assert positions == sorted(set(positions))
    assert all(0 < p < len(data) for p in positions)
    if any(0x80 <= b <= 0xBF for b in data[1:]):
        assert any(0x80 <= data[p] <= 0xBF for p in positions)


def test_the_multibyte_vocabulary_keeps_the_length_and_the_seed() -> None:
    a, b = Stress(seed=1).vocabulary(), Stress(seed=2).vocabulary()
    assert len(a) == len(b) == len(stress_mod.WORDS) and a != b
    assert Stress(multibyte=False).vocabulary() is stress_mod.WORDS
    assert Stress.parse("off") is None and Stress.parse(" ON ") == Stress()
