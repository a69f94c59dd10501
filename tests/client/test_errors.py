"""Every error names method, URL and model in one line, pickles, and never shows a token."""

from __future__ import annotations

import io
import json
import logging
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.client import errors as E
from harness.client.errors import PartialOutput, RequestContext, redact
from harness.client.logs import JSONFormatter
from harness.client.validation import normalize_base_url, validate_model_id

TOKEN = "sk-lm-Abc12345:Zx9SecretValue"


def every_error(ctx: RequestContext) -> list[E.LMStudioError]:
    partial = PartialOutput(text="abc", chunks=2)
    return [
        E.LMStudioError("x", context=ctx), E.TransportError("x", context=ctx),
        E.ConnectError("connection refused", context=ctx),
        E.LMStudioTimeout("t", phase="connect", limit=5, context=ctx),
        E.HTTPStatusError("x", status=500, server_message="boom", context=ctx),
        E.RateLimited("x", status=429, retry_after=3, context=ctx),
        E.AuthenticationError("x", status=401, context=ctx),
        E.ModelNotFound("x", status=404, available=("a/b",), context=ctx),
        E.BadResponse("x", context=ctx), E.StreamInterrupted("x", partial=partial, context=ctx),
        E.ServerStreamError("x", partial=partial, context=ctx),
        E.StreamStalled("x", phase="stream-idle", limit=1, partial=partial, context=ctx),
        E.ModelSwitched("x", partial=partial, context=ctx),
        E.ModelMismatch("x", answered_by="other", context=ctx),
        E.ValidationError("model", "bad", context=ctx),
    ]


@given(st.sampled_from(["GET", "POST"]), st.sampled_from(["localhost", "127.0.0.1", "gpu-box"]),
       st.integers(1, 65535), st.sampled_from(["qwen/qwen3-4b", "a@q4_k_m", "m:2"]),
       st.integers(1, 5), st.floats(0, 1000))
def test_str_names_method_url_model_attempt(method: str, host: str, port: int, model: str,
                                           attempt: int, elapsed: float) -> None:
    url = f"http://{host}:{port}/v1/chat/completions"
    ctx = RequestContext(method, url, model, attempt, 5, elapsed)
    for err in every_error(ctx):
        text = str(err)
        assert "\n" not in text
        assert text.startswith(f"{method} {url} (model={model}, attempt {attempt}/5, ")
        assert isinstance(err, Exception)
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err) and str(clone) == text


def test_tree_roots() -> None:
    assert issubclass(E.ValidationError, ValueError)
    assert issubclass(E.LMStudioTimeout, TimeoutError)
    assert issubclass(E.StreamStalled, E.StreamInterrupted)
    assert issubclass(E.StreamStalled, E.LMStudioTimeout)
    assert issubclass(E.RateLimited, E.HTTPStatusError)
    assert all(issubclass(c, E.LMStudioError) for c in map(type, every_error(
        RequestContext("GET", "http://h:1/", None))))


def test_tokens_are_redacted_everywhere() -> None:
    ctx = RequestContext("POST", "http://h:1/v1/chat/completions", "m")
    err = E.AuthenticationError(f"refused Bearer {TOKEN}", server_message=f"token {TOKEN}",
                                context=ctx, status=401)
    assert "Zx9SecretValue" not in str(err) and "Zx9SecretValue" not in repr(err.__dict__)
    assert redact(f"Authorization: Bearer {TOKEN}") == "Authorization: Bearer ***"
    assert "secret" not in redact('{"api_key": "secret"}')
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    log = logging.getLogger("harness.test-redaction")
    log.addHandler(handler)
    log.warning("sending %s", f"Bearer {TOKEN}", extra={"header": f"Bearer {TOKEN}", "attempt": 2})
    line = json.loads(stream.getvalue())
    assert "Zx9SecretValue" not in stream.getvalue() and line["attempt"] == 2


@pytest.mark.parametrize(
    ("given_url", "expected"),
    [("http://localhost:1234", "http://localhost:1234"),
     ("http://localhost:1234/v1", "http://localhost:1234"),
     ("http://LOCALHOST:1234/v1/", "http://localhost:1234"),
     ("https://gw.example/lmstudio/v1", "https://gw.example/lmstudio")],
)
def test_base_url_normalised(given_url: str, expected: str) -> None:
    assert normalize_base_url(given_url) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "localhost:1234", "ftp://h:1", "http://", "http://u:p@h:1", "http://h:1?x=1",
     "http://h:1#f", "http://h:99999", "http://h:1/../x", "http://h :1"],
)
def test_bad_base_urls(bad: str) -> None:
    with pytest.raises(E.ValidationError) as info:
        normalize_base_url(bad)
    assert info.value.field == "base_url"


@pytest.mark.parametrize("good", ["qwen/qwen3-coder-30b", "name@q4_k_m", "name:2",
                                  "text-embedding-nomic-embed-text-v1.5", "google/gemma-4-e4b@?"])
def test_good_model_ids(good: str) -> None:
    assert validate_model_id(good) == good


@pytest.mark.parametrize("bad", ["", " ", "a b", "a\x00b", "../etc", "a/../b", "/abs", "x" * 257,
                                 "a\\b", 3])
def test_bad_model_ids(bad: object) -> None:
    with pytest.raises(E.ValidationError) as info:
        validate_model_id(bad)
    assert info.value.field == "model"

