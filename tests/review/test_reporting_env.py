"""The shared report environment: escaping policy, Markdown helpers, safe output paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from harness.reporting.env import (
    ReportPathError,
    ReportTemplateError,
    md_cell,
    md_table,
    report_environment,
    safe_output_path,
    write_report,
)


def test_html_templates_autoescape_and_strings_do_not() -> None:
    env = report_environment()
    html = env.from_string("{{ x }}")  # strings are prompts / plain text: no escaping
    assert html.render(x="<b>") == "<b>"
    page = env.get_template("base.html.j2")
    assert page.environment.autoescape  # callable policy is set
    assert env.select_template(["base.html.j2"]).render().startswith("<!DOCTYPE html>")


@given(st.text(max_size=60))
def test_md_cell_never_breaks_a_table_row(text: str) -> None:
    cell = md_cell(text)
    assert "\n" not in cell
    for i, ch in enumerate(cell):
        if ch == "|":  # every pipe must be escaped by an odd run of backslashes
            run = len(cell[:i]) - len(cell[:i].rstrip("\\"))
            assert run % 2 == 1, cell


def test_md_table_shape() -> None:
    table = md_table([{"a": 1, "b": "x|y"}, {"a": None, "b": "l1\nl2"}], ["a", ("Bee", "b")])
    assert table.splitlines() == ["| a | Bee |", "|---|---|", "| 1 | x\\|y |", "| - | l1<br>l2 |"]


@pytest.mark.parametrize("name", ["../x.md", "/etc/passwd", "a/b.md", "..", "", "x\x00"])
def test_output_paths_escaping_the_directory_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ReportPathError):
        safe_output_path(tmp_path, name)


class _Tiny(BaseModel):
    title: str


def test_write_report_refuses_escaping_basename(tmp_path: Path) -> None:
    with pytest.raises(ReportPathError):
        write_report(_Tiny(title="t"), "../evil", tmp_path / "out", formats=("json",))
    assert not (tmp_path / "evil.json").exists()


def test_write_report_json_only_and_missing_template(tmp_path: Path) -> None:
    written = write_report(_Tiny(title="t"), "tiny", tmp_path, formats=("json",))
    assert written["json"].read_text().strip().startswith("{")
    with pytest.raises(ReportTemplateError, match=r"tiny\.md\.j2"):
        write_report(_Tiny(title="t"), "tiny", tmp_path, formats=("md",))
