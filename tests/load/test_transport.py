"""The load transport against the emulator: kernel-stamped and plain reads time the same stream."""

from __future__ import annotations

import pytest

from harness.load import transport
from harness.load.exchange import execute, prepare
from harness.load.scenario import RequestShape
from harness.load.transport import Connection


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stamped", [True, False])
def test_a_streamed_request_is_measured_with_and_without_kernel_stamps(
        emulator_url: str, stamped: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not stamped:  # a platform without SO_TIMESTAMPNS: setsockopt refuses the option
        monkeypatch.setattr(transport, "_SO_TIMESTAMPNS", -1)
    conn = Connection(emulator_url)
    req = prepare(RequestShape(max_tokens=8), "qwen/qwen3-4b")
    try:
        first = execute(conn, req)
        second = execute(conn, req)  # the same kept-alive socket
    finally:
        conn.close()
    assert conn.stamped is stamped
    for rec in (first, second):
        assert rec.ok, rec.error
        assert rec.status == 200 and rec.n_server is not None and rec.n_server >= 1
        assert rec.ttft is not None and 0 < rec.ttft < 5
        assert rec.e2e is not None and rec.e2e >= rec.ttft
        assert len(rec.gaps) == rec.chunks - 1 and all(g >= 0 for g in rec.gaps)


@pytest.mark.timeout(30)
def test_a_refused_connection_is_a_typed_failed_record() -> None:
    conn = Connection("http://127.0.0.1:9", connect_timeout=2.0)
    rec = execute(conn, prepare(RequestShape(), "qwen/qwen3-4b"))
    assert not rec.ok and rec.error_kind == "ConnectError" and rec.status is None
    assert "127.0.0.1:9" in (rec.error or "")


@pytest.mark.timeout(30)
def test_an_unresolvable_host_is_named_as_one() -> None:
    """The resolver's failure is told from a refused connect by its type (``gaierror``), as
    the client's shells tell it, not by a platform's wording."""
    conn = Connection("http://nonexistent.invalid:1234", connect_timeout=2.0)
    rec = execute(conn, prepare(RequestShape(), "qwen/qwen3-4b"))
    assert not rec.ok and rec.error_kind == "ConnectError"
    assert "cannot resolve host 'nonexistent.invalid'" in (rec.error or ""), rec.error


@pytest.mark.timeout(30)
@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
def test_the_load_user_sends_the_clients_call(emulator_url: str, suffix: str) -> None:
    """The base URL may end in /v1 (never /v1/v1/...); the X-Request-Id is the client's UUID,
    which the emulator records; usage is asked for on both OpenAI-compatible endpoints."""
    import json
    import uuid

    from harness.control import ControlClient

    conn = Connection(emulator_url + suffix)
    control = ControlClient(emulator_url)
    try:
        since = control.truth_last_id()
        records = []
        for endpoint in ("chat", "completions", "native"):
            req = prepare(RequestShape(endpoint=endpoint, max_tokens=4), "qwen/qwen3-4b")
            call = req.call(conn.base_url)
            line = conn.request_bytes(call).split(b"\r\n", 1)[0].decode()
            assert line == f"POST {RequestShape(endpoint=endpoint).path} HTTP/1.1"
            if endpoint != "native":
                assert json.loads(call.body or b"")["stream_options"] == {"include_usage": True}
            records.append(execute(conn, req))
        truth = {t["client_request_id"]: t for t in control.truth(since)}
    finally:
        conn.close()
        control.close()
    for rec in records:
        assert rec.ok, rec.error
        assert str(uuid.UUID(rec.request_id or "")) == rec.request_id
        assert rec.request_id in truth and not rec.usage_missing


@pytest.mark.timeout(30)
def test_batched_reads_keep_ttft_tpot_and_the_mean_itl(emulator_url: str) -> None:
    """Reading every 100 ms after the first token (fewer wake-ups): the kernel's stamps of the
    first and the last packet keep TTFT, TPOT and each request's mean ITL; chunk gaps are
    merged, so the record says it was paced and pooled ICL leaves it out."""
    from harness.load.metrics import pooled_gaps

    conn = Connection(emulator_url)
    req = prepare(RequestShape(max_tokens=24), "qwen/qwen3-4b")
    try:
        execute(conn, req)  # connect and load the model first
        plain = execute(conn, req)
        paced = execute(conn, req, read_batch_s=0.1)
    finally:
        conn.close()
    assert plain.ok and paced.ok and paced.paced and not plain.paced
    assert paced.chunks == plain.chunks == paced.n_server
    assert paced.ttft is not None and plain.ttft is not None
    # Orders, not milliseconds (a busy machine makes the emulator itself late): a broken
    # batching would time the first token at the batch's end (>= 100 ms) and find a mean ITL
    # near 0 or near the batch interval, not the emulator's 10 ms a token.
    assert paced.ttft < 0.1
    assert paced.itl is not None and plain.itl is not None
    assert 0.7 * plain.itl < paced.itl < 1.3 * plain.itl
    assert sum(g == 0.0 for g in paced.gaps) > len(paced.gaps) // 2  # merged reads
    assert pooled_gaps([paced]) == [] and pooled_gaps([plain]) == plain.gaps
