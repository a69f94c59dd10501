"""Secrets: where the API token comes from, and how every output is kept free of it.

One name per concept, the same for every command, the pytest plugin and the load users:

- ``HARNESS_API_TOKEN``: the Bearer token of the server under test (or the one the emulator
  requires). LM Studio's own name, ``LM_API_TOKEN``, is read as an alias, and so is the older
  ``LMSTUDIO_API_TOKEN``; the first one set wins in that order.
- ``--api-token-file PATH`` reads the token from a file (first line, surrounding whitespace
  dropped), so it never shows in ``ps``; ``--api-token`` still works but is visible there.

Why a registry: redaction by pattern (``Bearer ...``, ``sk-lm-...:...``) misses a token of another
shape that a server echoes back. Every token the harness is given is registered here, and
:func:`redact` removes the registered values as well as the patterns and any ``user:pass@`` in a
URL. The client's error and log redaction calls it, so an error, a log line or a report never
carries the configured token, whatever the server did with it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "TOKEN_ENV",
    "TOKEN_ENV_ALIASES",
    "redact",
    "redact_registered",
    "redact_url",
    "register",
    "registered",
    "resolve_token",
    "token_from_env",
]

TOKEN_ENV = "HARNESS_API_TOKEN"
TOKEN_ENV_ALIASES = ("LM_API_TOKEN", "LMSTUDIO_API_TOKEN")
MASK = "***"
_MIN_SECRET = 4  # shorter values would mask ordinary words; such a token is refused anyway

_lock = threading.Lock()
_secrets: set[str] = set()

_PATTERNS = (
    (re.compile(r"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE), r"\1" + MASK),
    (re.compile(r"sk-lm-[A-Za-z0-9]+:[^\s\"',;]+"), "sk-lm-" + MASK),
    (re.compile(
        r"((?:api[_-]?key|token|authorization)[\"']?\s*[:=]\s*[\"']?)(?!Bearer\b)[^\s\"',;]+",
        re.IGNORECASE), r"\1" + MASK),
    # user:password@ (or user@) in any URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@"), r"\1" + MASK + "@"),
)


def register(secret: str | None) -> str | None:
    """Remember ``secret`` so :func:`redact` removes it from every text; returns it unchanged."""
    if secret and len(secret) >= _MIN_SECRET:
        with _lock:
            _secrets.add(secret)
    return secret


def registered() -> tuple[str, ...]:
    with _lock:
        return tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without any registered or given secret, token pattern or URL credentials."""
    values = sorted({s for s in (*registered(), *secrets) if s}, key=len, reverse=True)
    for secret in values:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_registered(text: str) -> str:
    """``text`` without the registered token values (only those: for reports and files, where
    the token *patterns* could also match ordinary prose about tokens)."""
    for secret in registered():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` removed (for display and reports)."""
    return re.sub(r"(?i)^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url)


def token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The token from ``HARNESS_API_TOKEN`` or its aliases (an empty variable counts as unset)."""
    env = os.environ if env is None else env
    for name in (TOKEN_ENV, *TOKEN_ENV_ALIASES):
        value = env.get(name)
        if value:
            return register(value.strip())
    return None


def _check(token: str, where: str) -> str:
    from harness.inputs import InputError

    if not token:
        raise InputError("the API token is empty (leave the option out for no token)",
                         option=where)
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in token):
        raise InputError("the API token contains whitespace or control characters", option=where)
    if not token.isascii():
        raise InputError("the API token must be ASCII (it is sent in an HTTP header)",
                         option=where)
    if len(token) < _MIN_SECRET:
        raise InputError(f"the API token is shorter than {_MIN_SECRET} characters", option=where)
    return token


def resolve_token(token: str | None = None, token_file: Path | None = None, *,
                  env: Mapping[str, str] | None = None) -> str | None:
    """The token to use: ``--api-token-file``, else ``--api-token``, else the environment.

    A given but empty, blank or unprintable token is an error (an empty one would send
    ``Authorization: Bearer `` and pass for "no token"). The result is registered for redaction.
    """
    from harness.inputs import InputError, read_text

    if token_file is not None and token is not None:
        raise InputError("give --api-token or --api-token-file, not both")
    if token_file is not None:
        text = read_text(token_file, "token file", option="--api-token-file")
        lines = text.strip().splitlines()
        return register(_check(lines[0].strip() if lines else "", "--api-token-file"))
    if token is not None:
        return register(_check(token, "--api-token"))
    return token_from_env(env)
