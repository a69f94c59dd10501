"""Recorded HTTP exchanges (vcrpy cassettes) for running the suites without a server.

A cassette is committed to the repo, so nothing secret may land in it: the ``Authorization`` and
``x-api-key`` headers are dropped, and every occurrence of the API token (in a URL, a request body
or a response body) is replaced before the exchange is written. Recordings are made host-neutral
(requests are matched on method, path, query and body, never host or port) because the embedded
emulator listens on a different free port every run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

REDACTED = "***"
SECRET_HEADERS = ("authorization", "x-api-key", "proxy-authorization", "cookie", "set-cookie")
_BEARER = re.compile(rb"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE)

Mode = Literal["record", "replay"]


def cassette_path(root: Path, module: str, test_name: str) -> Path:
    """``root/<module>/<test>.yaml`` with characters unsafe in file names replaced."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name).strip("_") or "test"
    return root / re.sub(r"[^A-Za-z0-9_.-]+", "_", module) / f"{safe}.yaml"


def _scrub(data: bytes, secrets: tuple[str, ...]) -> bytes:
    for secret in secrets:
        if secret:
            data = data.replace(secret.encode(), REDACTED.encode())
    return _BEARER.sub(rb"\1" + REDACTED.encode(), data)


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    return _scrub(text.encode(), secrets).decode()


def _as_bytes(body: Any) -> bytes | None:
    if body is None:
        return None
    return body if isinstance(body, bytes) else str(body).encode()


def make_vcr(root: Path, mode: Mode, secrets: tuple[str, ...] = ()) -> Any:
    """A configured ``vcr.VCR``: secret-free recordings, host-neutral matching."""
    import vcr

    def before_record_request(request: Any) -> Any:
        request.uri = _scrub_text(request.uri, secrets)
        body = _as_bytes(request.body)
        if body is not None:
            request.body = _scrub(body, secrets)
        return request

    def before_record_response(response: dict[str, Any]) -> dict[str, Any]:
        headers = response.get("headers", {})
        for name in list(headers):
            if name.lower() in SECRET_HEADERS:
                del headers[name]
        body = response.get("body", {})
        data = _as_bytes(body.get("string"))
        if data is not None:
            body["string"] = _scrub(data, secrets)
        return response

    return vcr.VCR(
        cassette_library_dir=str(root),
        record_mode="all" if mode == "record" else "none",
        match_on=("method", "path", "query", "body"),
        filter_headers=list(SECRET_HEADERS),
        before_record_request=before_record_request,
        before_record_response=before_record_response,
        decode_compressed_response=True,
    )


@contextmanager
def use_cassette(path: Path, mode: Mode, secrets: tuple[str, ...] = ()) -> Iterator[Any]:
    """Record to or replay from ``path`` for the duration of the block."""
    if mode == "replay" and not path.exists():
        raise FileNotFoundError(
            f"no cassette {path} to replay; record it first with --record against a server"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    recorder = make_vcr(path.parent, mode, secrets)
    # Repeats allowed: identical requests (same prompt, same seed) get the same recorded answer.
    with recorder.use_cassette(path.name, allow_playback_repeats=True) as cassette:
        yield cassette
