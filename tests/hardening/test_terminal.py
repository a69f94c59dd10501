"""The terminal rule: server text is never read as rich markup and never sends control codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.table import Table
from typer.testing import CliRunner

from harness.cli import app
from harness.reporting.terminal import console, term, term_text
from harness.studio.catalog import load_catalog
from harness.studio.testing import running_studio
from tests.hardening.corpus import HOSTILE

RAW = ("\x1b", "\x07", "\x00", "\x9b", "\u202e", "\u2066", "\r")


def _printed(*renderables: object) -> str:
    buffer = io.StringIO()
    out = console(file=buffer, force_terminal=True, width=200, color_system="truecolor")
    for renderable in renderables:
        out.print(renderable)
    return buffer.getvalue()


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_prints_as_itself(text: str) -> None:
    table = Table("a", "b")
    table.add_row(term(text), term_text(text))
    printed = _printed(f"[bold]label[/]: {term(text)}", term_text(text), table)
    # Styling is ours (SGR); nothing from the text reaches the terminal as a control code.
    without_sgr = __import__("re").sub(r"\x1b\[[0-9;]*m", "", printed)
    assert not any(ch in without_sgr for ch in RAW)
    if "[/]" in text:
        assert "[/]" in without_sgr


def _hostile_catalog(tmp_path: Path) -> Path:
    catalog = load_catalog().model_dump(mode="json")
    catalog["models"][0]["key"] = "evil/[/]x\x1b]0;pwned\x07"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def test_check_survives_a_model_named_like_markup(tmp_path: Path) -> None:
    with running_studio(catalog=_hostile_catalog(tmp_path)) as studio:
        result = CliRunner().invoke(app, ["check", "--base-url", studio.base_url])
    assert isinstance(result.exception, SystemExit | None), result.output
    assert "Traceback" not in result.output and "MarkupError" not in result.output
    assert "evil/[/]x\\x1b]0;pwned\\x07" in result.output
    assert "\x1b]0;" not in result.output
