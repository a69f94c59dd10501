"""The support bot's own tests, written with the harness's pytest plugin (installed with the
harness; no conftest needed): ``target`` is the embedded LM Studio emulator (or ``--lmstudio-url``
for a real one), ``faults`` breaks it on purpose, ``truth`` says what the server really did, and
``@pytest.mark.vcr`` replays a recorded exchange without any server."""

from __future__ import annotations

import socket

import pytest
from supportbot import BotError, IncompleteAnswer, SupportBot, WrongModel

from harness.faults import EarlyEndFault, FaultPlan, StatusFault, WrongModelFault

CHAT = "/v1/chat/completions"


@pytest.fixture
def bot(target):
    """The app configured the way production configures it, pointed at the target."""
    bot = SupportBot(target.openai_base_url, target.models[0], api_key=target.api_token)
    yield bot
    bot.close()


def test_answers_a_question(bot, truth):
    assert bot.answer("How do I reset my password?")
    [record] = truth.records(CHAT)
    assert record["status"] == 200 and record["model_requested"] == bot.model


def test_streamed_answer_matches_the_whole_one(bot):
    assert "".join(bot.stream_answer("Where is my order?")) == bot.answer("Where is my order?")


def test_a_cut_off_stream_is_not_an_answer(bot, faults, truth):
    faults.set(EarlyEndFault(after_chunks=3), endpoint=CHAT)
    with pytest.raises(IncompleteAnswer) as caught:
        "".join(bot.stream_answer("Where is my order?"))
    [record] = truth.records(CHAT)
    assert record["fault"] and caught.value.partial  # the server did cut it off; text kept


def test_rate_limit_is_retried_after_the_servers_hint(bot, faults, truth):
    faults.set(FaultPlan.single(StatusFault(status=429, retry_after=0.2), endpoint=CHAT,
                                nth=(1,)))
    assert bot.answer("Hello?")
    first, second = truth.settled(CHAT)
    assert (first["status"], second["status"]) == (429, 200)
    assert second["received_at_s"] - first["received_at_s"] >= 0.19


def test_an_answer_from_another_model_is_refused(bot, target, faults):
    faults.set(WrongModelFault(model=target.models[1]), endpoint=CHAT)
    with pytest.raises(WrongModel, match=target.models[1]):
        bot.answer("Hello?")


def test_errors_name_the_server_and_the_model():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bot = SupportBot(f"http://127.0.0.1:{port}/v1", "qwen/qwen3-4b", max_retries=0)
    with pytest.raises(BotError) as caught:
        bot.answer("Hello?")
    assert f"127.0.0.1:{port}" in str(caught.value) and "qwen/qwen3-4b" in str(caught.value)


@pytest.mark.vcr
def test_recorded_answer(bot):
    """Replayed from tests/cassettes/test_supportbot/test_recorded_answer.yaml (record it with
    ``pytest --record-mode=once``); no request reaches a server."""
    assert bot.answer("What are your opening hours?").startswith("Emulator measures agent")
