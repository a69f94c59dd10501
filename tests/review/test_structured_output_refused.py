"""A server without structured output (llama-cpp-python answers ``json_schema`` with a 500) still
gives a review: the runner asks again without the schema and the parse layers do the rest."""

from __future__ import annotations

from pathlib import Path

from harness.client import AsyncClient
from harness.faults import FaultMatch, FaultPlan, FaultRule, StatusFault
from harness.review.models import RunStatus
from harness.review.roster import parse_roster
from harness.review.runner import ReviewRunner
from harness.review.subject import load_subject
from harness.studio.testing import running_studio

SUBJECT = Path(__file__).resolve().parents[2] / "fixtures" / "review" / "sample" / "subject.toml"
ROSTER = """
[run]
max_attempts = 1

[[reviewers]]
name = "Magistral"
model = "mistralai/magistral-small-2509"
focus = "Architecture"
max_tokens = 1024
timeout_s = 30
"""


def _refusing(status: int, nth: tuple[int, ...]) -> FaultPlan:
    body = {"error": "response_format json_schema is not supported"}
    return FaultPlan(rules=(FaultRule(
        match=FaultMatch(endpoint="/v1/chat/completions", nth=nth),
        action=StatusFault(status=status, body=body)),))


def _chat_bodies(truth: list[dict[str, object]]) -> int:
    return sum(t["endpoint"] == "/v1/chat/completions" for t in truth)


async def test_a_refused_schema_is_asked_again_without_it() -> None:
    with running_studio(auto_evict=False, faults=_refusing(500, (1,))) as studio:
        async with AsyncClient(studio.base_url) as client:
            runner = ReviewRunner(client=client, roster=parse_roster(ROSTER), roster_dir=None,
                                  cache=None)
            record = await runner.run(load_subject(SUBJECT))
        calls = _chat_bodies(studio.truth())
    run = record.runs[0]
    assert run.status is not RunStatus.ERROR, run.error
    assert run.raw_text  # an answer came back and was kept
    assert calls == 2
    assert any("refused response_format" in e for e in run.parse_errors), run.parse_errors


async def test_a_refusal_that_persists_is_still_an_error() -> None:
    """Without the schema the server fails again: that is the reviewer's error, asked twice only."""
    with running_studio(auto_evict=False, faults=_refusing(500, (1, 2))) as studio:
        async with AsyncClient(studio.base_url) as client:
            runner = ReviewRunner(client=client, roster=parse_roster(ROSTER), roster_dir=None,
                                  cache=None)
            record = await runner.run(load_subject(SUBJECT))
        calls = _chat_bodies(studio.truth())
    assert record.runs[0].status is RunStatus.ERROR
    assert calls == 2
