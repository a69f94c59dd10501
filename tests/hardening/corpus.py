"""The hostile corpus (``hostile.json``) and a Markdown reader that judges what text became.

The corpus is JSON so that NUL, ESC and lone surrogates survive as data (``\\u0000``,
``\\ud800``). The reader is markdown-it-py with GitHub's table, strikethrough and auto-link
rules: what it parses as a link, an image, a heading or HTML is what a renderer would show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

HOSTILE: list[str] = json.loads((Path(__file__).parent / "hostile.json").read_text("ascii"))

# Inline and block token types that model text must never produce.
FORBIDDEN = {
    "link_open", "image", "html_block", "heading_open", "fence", "code_block", "table_open",
    "bullet_list_open", "ordered_list_open", "blockquote_open", "hr", "em_open", "strong_open",
    "s_open", "lheading_open",
}


def markdown() -> MarkdownIt:
    md = MarkdownIt("gfm-like", {"linkify": True})
    # GitHub auto-links scheme URLs, www. and e-mail addresses, not bare domain names.
    md.linkify.set({"fuzzy_link": False})
    return md


def walk(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    for token in tokens:
        out.append(token)
        if token.children:
            out.extend(walk(token.children))
    return out


def markup_made(text: str, *, allow_html: tuple[str, ...] = ("<br>",)) -> list[str]:
    """The forbidden constructs Markdown ``text`` produces (empty when it is only text)."""
    found = []
    for token in walk(markdown().parse(text)):
        if token.type in FORBIDDEN:
            found.append(token.type)
        if token.type == "html_inline" and token.content not in allow_html:
            found.append(f"html_inline {token.content!r}")
    return found


def shown_text(text: str) -> str:
    """The characters a reader sees from one paragraph of inline Markdown."""
    parts: list[str] = []
    for token in walk(markdown().parse(text)):
        if token.type in {"text", "code_inline"}:
            parts.append(token.content)
        elif (token.type == "html_inline" and token.content == "<br>") or token.type == "softbreak":
            parts.append("\n")
    return "".join(parts)


def structure(text: str) -> list[tuple[str, Any]]:
    """Block-level shape of a document plus every link/image/html token (not the text)."""
    shape: list[tuple[str, Any]] = []
    for token in walk(markdown().parse(text)):
        if token.type in {"text", "code_inline", "softbreak", "inline"}:
            continue
        if token.type == "html_inline" and token.content == "<br>":
            continue
        shape.append((token.type, token.attrGet("href") if token.type == "link_open" else None))
    return shape
