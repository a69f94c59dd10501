"""Text from outside the harness (servers, models, files) as safe ``str``, with no dependencies.

Why a module of its own: the client decodes server text and the reports show it; both need the
same two rules, and the client must not import the reporting layer (or rich) to get them.

- :func:`scrub` / :func:`scrub_data`: where text *enters*, a lone surrogate (a JSON ``\\ud800``
  escape) becomes U+FFFD, as invalid UTF-8 bytes do, so every later encoder accepts it.
- :func:`visible`: where text *leaves* (reports, terminal), invisible and unencodable characters
  are shown as escapes (``\\x1b``, ``\\u202e``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["scrub", "scrub_data", "untrusted", "visible"]

# C0 except \t and \n, DEL, C1; bidi marks, embeddings, overrides, isolates; zero-width chars
# and BOM; line/paragraph separators; lone surrogates (never valid in UTF-8).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2028\u2029"
    "\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]"
)


def _show(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_SURROGATE = re.compile("[\ud800-\udfff]")


def untrusted(value: Any) -> str:
    """Any value from outside as ``str``: bytes decoded as UTF-8 with invalid bytes replaced."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def scrub(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, as invalid UTF-8 bytes are.

    Why: a JSON ``\\ud800`` escape from a server decodes to a lone surrogate, which no UTF-8
    encoder (a cache key, a file, pydantic) accepts. Call this where model or server text enters.
    """
    if not text or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub("\ufffd", text)


def scrub_data(value: Any) -> Any:
    """:func:`scrub` applied to every string (keys too) of parsed JSON."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [scrub_data(item) for item in value]
    if isinstance(value, dict):
        return {scrub_data(k): scrub_data(v) for k, v in value.items()}
    return value


def visible(value: Any) -> str:
    """The text with every invisible or unencodable character shown as an escape (``\\x1b``).

    ``\\r\\n`` is read as a newline; a lone ``\\r`` (which can overwrite a terminal line) is shown.
    """
    text = untrusted(value).replace("\r\n", "\n")
    return _INVISIBLE.sub(_show, text)
