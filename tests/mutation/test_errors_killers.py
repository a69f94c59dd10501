"""Tests that kill the surviving mutants of ``harness/client/errors.py`` (docs/mutation.md):
an unpickled error is a whole exception again (its ``args`` carry the message, as the
original's do), and a timeout without a limit says its phase and nothing more."""

from __future__ import annotations

import pickle

import pytest

from harness.client import errors as E

CTX = E.RequestContext("POST", "http://127.0.0.1:1/v1/chat/completions", "m/x", 2, 5, 0.5)


@pytest.mark.parametrize("err", [
    E.RateLimited("rate limited", retry_after=2.0, context=CTX, status=429),
    E.ValidationError("retry.max_attempts", "must be 1..5"),
    E.LMStudioTimeout("no response", phase="read", limit=0.3, context=CTX),
    E.StreamInterrupted("cut", context=CTX, partial=E.PartialOutput(text="abc", chunks=2)),
], ids=lambda e: type(e).__name__)
def test_an_unpickled_error_is_a_whole_exception_again(err: E.LMStudioError) -> None:
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err)
    assert clone.args == err.args == (err.message,)
    assert str(clone) == str(err) and repr(clone) == repr(err)


def test_a_timeout_without_a_limit_names_only_its_phase() -> None:
    err = E.LMStudioTimeout("waiting for a connection", phase="pool", limit=None)
    assert str(err) == "waiting for a connection (phase pool)"
    with_limit = E.LMStudioTimeout("connect timed out", phase="connect", limit=0.25)
    assert str(with_limit) == "connect timed out (phase connect after 0.25s)"
