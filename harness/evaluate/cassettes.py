"""Recorded HTTP exchanges (vcrpy cassettes) for running the suites without a server.

A cassette is committed to the repo, so nothing secret may land in it: the ``Authorization`` and
``x-api-key`` headers are dropped, and every occurrence of the API token (in a URL, a request body
or a response body) is replaced before the exchange is written. Recordings are made host-neutral
(requests are matched on method, path, query and body, never host or port) because the embedded
emulator listens on a different free port every run. The harness's own control calls
(``/_harness/`` faults, truth, reset) are never recorded: they go to the live judge either way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REDACTED = "***"
CONTROL_PREFIX = "/_harness/"  # faults, truth, reset: the test's judge, not the app's traffic
SECRET_HEADERS = ("authorization", "x-api-key", "proxy-authorization", "cookie", "set-cookie")
_BEARER = re.compile(rb"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE)

# Modes are vcrpy's (none, once, new_episodes, all) plus record (= all) and replay (= none).
_VCR_MODE = {"record": "all", "replay": "none"}


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


def make_vcr(root: Path, mode: str, secrets: tuple[str, ...] = (),
             overrides: dict[str, Any] | None = None) -> Any:
    """A configured ``vcr.VCR``: secret-free recordings, host-neutral matching.

    ``overrides`` (a ``vcr_config``) may change anything but the secret filtering: its own
    ``filter_headers`` and ``before_record_*`` hooks run in addition to ours."""
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

    options: dict[str, Any] = {
        "match_on": ("method", "path", "query", "body"), "decode_compressed_response": True,
        **(overrides or {}),
    }
    theirs_request = options.pop("before_record_request", None)
    theirs_response = options.pop("before_record_response", None)

    def request_hook(request: Any) -> Any:
        if urlsplit(request.uri).path.startswith(CONTROL_PREFIX):
            return None  # the judge's own control calls pass through, never recorded
        request = theirs_request(request) if theirs_request else request
        return None if request is None else before_record_request(request)

    def response_hook(response: dict[str, Any]) -> dict[str, Any] | None:
        response = theirs_response(response) if theirs_response else response
        return None if response is None else before_record_response(response)

    options["filter_headers"] = [*SECRET_HEADERS, *options.get("filter_headers", ())]
    return vcr.VCR(
        cassette_library_dir=str(root),
        record_mode=_VCR_MODE.get(mode, mode),
        before_record_request=request_hook,
        before_record_response=response_hook,
        **options,
    )


@contextmanager
def use_cassette(path: Path, mode: str, secrets: tuple[str, ...] = (),
                 overrides: dict[str, Any] | None = None) -> Iterator[Any]:
    """Record to or replay from ``path`` for the duration of the block."""
    if _VCR_MODE.get(mode, mode) == "none" and not path.exists():
        raise FileNotFoundError(
            f"no cassette {path} to replay; record it first with --record against a server"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    recorder = make_vcr(path.parent, mode, secrets, overrides)
    # Repeats allowed: identical requests (same prompt, same seed) get the same recorded answer.
    with recorder.use_cassette(path.name, allow_playback_repeats=True) as cassette:
        yield cassette
