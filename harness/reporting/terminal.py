"""The terminal rule: one rich ``Console`` for every command, and the helpers that embed text.

Why: server and model text (model ids, error bodies, answers) reaches the terminal inside rich
markup strings and tables. Two things can go wrong, and each has one fix here:

- *markup*: ``[`` in a model id is read as a tag (``evil/[/]x`` raises ``MarkupError``). Embed
  outside text with :func:`term` (escaped for markup) or pass :func:`term_text` (never parsed).
- *control characters*: ESC/OSC sequences, NUL, CR and bidi overrides could clear the screen,
  retitle the window, fake a hyperlink or reorder a line. :func:`console` returns a ``Console``
  whose every rendered segment goes through the visible rule, whatever the call site passed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from harness.reporting.escaping import term, term_text, visible

__all__ = ["SafeConsole", "console", "term", "term_text", "visible"]


class SafeConsole(Console):
    """A rich ``Console`` that shows control characters instead of sending them."""

    def render(self, renderable: RenderableType,
               options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            text, style, control = segment
            if control is None and text:
                shown = visible(text)
                if shown != text:
                    segment = Segment(shown, style)
            yield segment


def console(*, stderr: bool = False, **options: Any) -> Console:
    """The console every command prints through (``stderr=True`` for progress and verdicts)."""
    return SafeConsole(stderr=stderr, **options)
