"""Tests written to kill ``harness.agent.policy``'s surviving mutants: the limits' exact
boundaries (one round and a tiny timeout are valid, zero is not) and error messages that name
the field and the value."""

from __future__ import annotations

import pytest

from harness.agent.policy import RunLimits

TIMEOUTS = ("call_timeout", "run_timeout", "start_timeout", "shutdown_timeout")


def test_the_smallest_valid_limits_are_accepted() -> None:
    limits = RunLimits(max_rounds=1, **{name: 0.5 for name in TIMEOUTS})
    assert limits.max_rounds == 1 and limits.call_timeout == 0.5


@pytest.mark.parametrize("rounds", [0, -1])
def test_fewer_than_one_round_is_refused_by_name(rounds: int) -> None:
    with pytest.raises(ValueError, match=rf"max_rounds must be >= 1, got {rounds}"):
        RunLimits(max_rounds=rounds)


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_a_timeout_that_is_not_positive_is_refused_by_name(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be > 0 seconds, got {value}"):
        RunLimits(**{name: value})
