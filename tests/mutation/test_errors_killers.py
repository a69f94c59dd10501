"""Tests that kill the surviving mutants of ``harness/client/errors.py`` (docs/mutation.md):
an unpickled error is a whole exception again (its ``args`` carry the message, as the
original's do), a timeout without a limit says its phase and nothing more, and each error's
one-line ``str`` is exactly what a user reads, every part in its place.

The errors are built inside each test, never in a ``parametrize`` list: mutmut gives a mutant
only to the tests that ran the mutated function, and code run while collecting belongs to no
test, so a mutant in a constructor would meet no test at all."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from harness.client import errors as E

CTX = E.RequestContext("POST", "http://127.0.0.1:1/v1/chat/completions", "m/x", 2, 5, 0.5)
NO_MODEL = E.RequestContext("GET", "http://127.0.0.1:1/v1/models", None, 1, 1, 0.25)


@pytest.mark.parametrize("make", [
    lambda: E.RateLimited("rate limited", retry_after=2.0, context=CTX, status=429),
    lambda: E.ValidationError("retry.max_attempts", "must be 1..5"),
    lambda: E.LMStudioTimeout("no response", phase="read", limit=0.3, context=CTX),
    lambda: E.StreamInterrupted("cut", context=CTX, partial=E.PartialOutput(text="abc", chunks=2)),
], ids=["RateLimited", "ValidationError", "LMStudioTimeout", "StreamInterrupted"])
def test_an_unpickled_error_is_a_whole_exception_again(
        make: Callable[[], E.LMStudioError]) -> None:
    err = make()
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err)
    assert clone.args == err.args == (err.message,)
    assert str(clone) == str(err) and repr(clone) == repr(err)


def test_a_timeout_without_a_limit_names_only_its_phase() -> None:
    err = E.LMStudioTimeout("waiting for a connection", phase="pool", limit=None)
    assert str(err) == "waiting for a connection (phase pool)"
    with_limit = E.LMStudioTimeout("connect timed out", phase="connect", limit=0.25)
    assert str(with_limit) == "connect timed out (phase connect after 0.25s)"


def test_the_one_line_str_of_an_error_without_a_model() -> None:
    err = E.HTTPStatusError("listing failed\nat the proxy", context=NO_MODEL, status=502,
                            server_message="Bad Gateway")
    assert err.args == ("listing failed\nat the proxy",)
    assert str(err) == ("GET http://127.0.0.1:1/v1/models (model=-, attempt 1/1, 0.25s): "
                        "listing failed at the proxy (HTTP 502; server said: Bad Gateway)")


def test_model_not_found_names_the_closest_ids() -> None:
    err = E.ModelNotFound("model 'qwen' is not available", context=CTX, status=404,
                          available=("qwen/qwen3-4b", "qwen/qwen3-coder-30b"))
    assert str(err) == ("POST http://127.0.0.1:1/v1/chat/completions (model=m/x, attempt 2/5, "
                        "0.50s): model 'qwen' is not available (HTTP 404; "
                        "closest: qwen/qwen3-4b, qwen/qwen3-coder-30b)")


def test_a_broken_stream_says_what_it_kept() -> None:
    partial = E.PartialOutput(text="abc", reasoning="think", chunks=4,
                              tool_calls=[{"index": 0}, {"index": 1}])
    err = E.StreamInterrupted("stream ended before [DONE]", partial=partial)
    assert str(err) == ("stream ended before [DONE] (4 chunks, 3 chars of text kept, "
                        "5 chars of reasoning, 2 tool-call fragments)")
    only_calls = E.StreamInterrupted("cut", partial=E.PartialOutput(
        chunks=1, tool_calls=[{"index": 0}]))
    assert str(only_calls) == "cut (1 chunks, 0 chars of text kept, 1 tool-call fragments)"


def test_a_stall_keeps_its_limit_and_its_partial_output() -> None:
    partial = E.PartialOutput(text="ab", chunks=2)
    err = E.StreamStalled("no data", phase="stream-idle", limit=0.5, partial=partial,
                          context=CTX)
    assert (err.phase, err.limit, err.partial) == ("stream-idle", 0.5, partial)
    assert isinstance(err, E.LMStudioTimeout) and isinstance(err, E.StreamInterrupted)


def test_unusable_answers_and_mismatches_keep_what_arrived() -> None:
    partial = E.PartialOutput(reasoning="only thoughts", chunks=3)
    unusable = E.ReasoningOnly("reasoning but no answer", partial=partial, context=CTX,
                               status=200)
    assert unusable.partial is partial and unusable.context is CTX and unusable.status == 200
    mismatch = E.ModelMismatch("answered by another model", answered_by="m/y",
                               partial=partial, context=CTX)
    assert mismatch.partial is partial and mismatch.answered_by == "m/y"


def test_a_context_moves_on_to_the_next_attempt() -> None:
    later = CTX.at(attempt=3, elapsed=1.25)
    assert (later.attempt, later.elapsed) == (3, 1.25)
    assert CTX.at(attempt=4).elapsed == CTX.elapsed == 0.5
    assert CTX.at(elapsed=2.0).attempt == CTX.attempt == 2


def test_redact_also_removes_the_secrets_it_is_given() -> None:
    assert E.redact("sent hunter2-local to the proxy", ("hunter2-local",)) == (
        "sent *** to the proxy")
