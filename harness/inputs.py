"""The CLI's input-validation layer: every user mistake becomes one line and a known exit code.

Why one layer: the ``harness`` commands take URLs, ports, durations, tokens and files (catalogs,
fault plans, rosters, subjects, scenarios, MCP configs). Each used to fail in its own way, often
as a traceback. Validators here raise :class:`InputError`; the command group in ``harness.cli``
turns it, and the errors the areas raise for bad files, into ``error: <one line>`` on stderr.

Exit codes (the same for every command; a command's verdict codes are 0, 1 and, for ``load``,
2 and 3):

- ``2``  bad usage or a bad value: an option out of range, an unknown choice, a malformed URL,
  a file that is missing, unreadable, not UTF-8 or not valid for its kind.
- ``70`` an internal error (a bug): still one line; ``HARNESS_TRACEBACK=1`` shows the traceback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_USAGE",
    "InputError",
    "base_url",
    "bind_host",
    "finite",
    "output_dir",
    "port",
    "read_text",
    "reading",
]

EXIT_USAGE = 2
EXIT_INTERNAL = 70
MAX_HOST = 253  # RFC 1035: a DNS name is at most 253 characters


class InputError(ValueError):
    """A value or file given on the command line that cannot be used; ``str`` is one line."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        self.option = option
        super().__init__(f"{option}: {message}" if option else message)


def finite(value: float | None, option: str, *, minimum: float = 0.0,
           allow_zero: bool = False) -> float | None:
    """A number that is finite and positive (or zero when allowed); None passes through."""
    if value is None:
        return None
    if not math.isfinite(value):
        raise InputError(f"must be a finite number, got {value}", option=option)
    if value < minimum or (value == minimum and not allow_zero):
        bound = f">= {minimum:g}" if allow_zero else f"> {minimum:g}"
        raise InputError(f"must be {bound}, got {value:g}", option=option)
    return value


def port(value: int, option: str = "--port", *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise InputError(f"must be a TCP port {low}-65535, got {value}", option=option)
    return value


def bind_host(value: str, option: str = "--host") -> str:
    if not value or len(value) > MAX_HOST or re.search(r"[\s/\\@#?\[\]]", value.strip("[]")):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise InputError(f"not a host name or address: {shown!r}", option=option)
    return value


def base_url(value: str, option: str = "--base-url") -> str:
    """An ``http(s)://host[:port][/path]`` URL without credentials in it.

    Credentials in a URL end up in logs, reports and ``ps``; use ``--api-token-file`` or the
    ``HARNESS_API_TOKEN`` variable instead.
    """
    shown = value if len(value) <= 80 else value[:77] + "..."
    if not value.strip():
        raise InputError("must not be empty", option=option)
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parsed_port = parts.port
    except ValueError as exc:
        raise InputError(f"not a valid URL {shown!r}: {exc}", option=option) from None
    if parts.scheme not in ("http", "https"):
        raise InputError(f"must start with http:// or https://, got {shown!r}", option=option)
    if parts.username is not None or parts.password is not None:
        raise InputError("must not contain credentials (user:password@); pass the token with "
                         "--api-token-file or HARNESS_API_TOKEN", option=option)
    if not host:
        raise InputError(f"has no host: {shown!r}", option=option)
    if len(host) > MAX_HOST:
        raise InputError(f"host name longer than {MAX_HOST} characters", option=option)
    if parsed_port == 0:
        raise InputError("port 0 is not a server port", option=option)
    return value


def read_text(path: Path, what: str, option: str | None = None) -> str:
    """A user file as text, or an :class:`InputError` naming it (missing, a directory, not
    readable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {exc.start})",
                         option=option) from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}",
                         option=option) from None


@contextmanager
def reading(what: str, path: Path, option: str | None = None) -> Iterator[None]:
    """Around an area's loader: the parser failures no loader names (a JSON nested thousands
    deep, a number too large for an integer) become an :class:`InputError` naming the file."""
    try:
        yield
    except RecursionError:
        raise InputError(f"{what} {path} is nested too deeply", option=option) from None
    except OverflowError as exc:
        raise InputError(f"{what} {path}: a number is out of range ({exc})",
                         option=option) from None


def output_dir(path: Path, option: str = "--out") -> Path:
    """A directory that exists or can be created (not under a regular file)."""
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{path}: {parent} is a file, not a directory", option=option)
            break
    return path
