"""One escaping rule per output kind, for text the harness did not write.

Why one module: model answers, server error bodies, model ids and file contents end up in
Markdown reports, HTML reports and the terminal. Each kind has exactly one rule here, applied at
the boundary (the Jinja environment's ``finalize`` for templates, :func:`term` / :func:`term_text`
for rich output), so no call site has to remember which characters are dangerous.

The rules:

- **Visible** (every kind): C0/C1 control characters (except newline and tab), DEL, bidi
  overrides and isolates, zero-width characters, line/paragraph separators and lone surrogates
  are shown as ``\\x1b`` / ``\\u202e`` escapes. Nothing invisible can reorder, hide or recolour
  the text around it, and a lone surrogate can never fail a UTF-8 write.
- **Markdown** (:func:`md_text`): one inline run. Newlines become ``<br>``; ``\\ ` * _ [ ] < > |
  ~ & #`` are backslash-escaped everywhere, and a leading ``- + =`` or ``1.`` / ``1)`` too, so the
  text can never open a link, an image, a heading, a list, a table cell, emphasis or raw HTML, in
  running text and in table cells alike. Anything a GitHub-flavoured renderer would auto-link
  (``http://``, ``www.``, an e-mail address) is put in a code span, where nothing is a link.
  :func:`md_code` is the rule inside a code span (a fence longer than any backtick run inside).
- **HTML**: Jinja's autoescape (as before) after the visible rule.
- **Terminal** (:func:`term`, :func:`term_text`): the visible rule, then rich markup escaped, so
  a model named ``evil/[/]x`` prints as itself and ESC/OSC sequences never reach the terminal.

Values marked :class:`MdSafe` (the output of the Markdown filters and of the number formatters)
are already Markdown and pass through unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape as _rich_escape
from rich.text import Text

from harness.untrusted import scrub, scrub_data, untrusted, visible

__all__ = [
    "MdSafe",
    "md_code",
    "md_text",
    "scrub",
    "scrub_data",
    "term",
    "term_text",
    "untrusted",
    "visible",
]

class MdSafe(str):
    """A string that is already safe Markdown (the result of a Markdown filter)."""

    __slots__ = ()


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")
_MD_LINE_START = re.compile(r"^(?:([-+=])|(\d{1,9})([.)]))")
# What a GitHub-flavoured renderer turns into a link without any markup: a scheme URL,
# "www." and an e-mail address. Runs stop at whitespace and at characters md_text escapes.
_AUTOLINK = re.compile(
    r"(?i)(?:[a-z][a-z0-9+.-]{0,31}://|www\.|mailto:|xmpp:)[^\s\\`<>|\[\]\"'()]*"
    r"(?<![.,:;!?*_~])"
    r"|[a-z0-9._+-]+@[a-z0-9_-]+(?:\.[a-z0-9_-]+)+"
)


def _escape_run(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: Any, *, cell: bool = False) -> MdSafe:
    """``value`` as one inline code span, whatever backticks or newlines it contains.

    A newline is shown as ``\\n`` (a real one would let the next line start a block). With
    ``cell=True`` a ``|`` is written ``\\|``, which GitHub tables read as a literal pipe even in
    code spans.
    """
    text = visible(value).replace("\n", "\\n")
    if cell:
        text = text.replace("|", "\\|")
    if not text:
        return MdSafe("` `")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    if text.startswith(("`", " ")) or text.endswith(("`", " ")):
        text = f" {text} "
    return MdSafe(f"{fence}{text}{fence}")


def md_text(value: Any) -> MdSafe:
    """``value`` as one inline run of Markdown text that can create no markup (see module doc).

    Safe in running text, list items, headings written by the template, and table cells.
    """
    if isinstance(value, MdSafe):
        return value
    text = visible(value).strip()
    parts: list[str] = []
    position = 0
    for match in _AUTOLINK.finditer(text):
        parts.append(_escape_run(text[position:match.start()]))
        parts.append(md_code(match.group()))
        position = match.end()
    parts.append(_escape_run(text[position:]))
    escaped = "".join(parts)
    first = _MD_LINE_START.match(escaped)
    if first:
        if first.group(1):
            escaped = "\\" + escaped
        else:
            escaped = f"{first.group(2)}\\{first.group(3)}{escaped[first.end():]}"
    return MdSafe(re.sub(r"\n", "<br>", escaped))


def term(value: Any) -> str:
    """``value`` ready to embed in a rich markup string: visible, and its ``[`` escaped."""
    return _rich_escape(visible(value))


def term_text(value: Any, style: str = "") -> Text:
    """``value`` as a rich ``Text`` (never parsed as markup), with invisible characters shown."""
    return Text(visible(value), style=style)
