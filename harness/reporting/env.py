"""The one Jinja environment every report of the harness renders through.

Why one: every report (evaluation, load, review) is a pydantic model rendered to Markdown, a
self-contained HTML page and JSON. Sharing one environment means one autoescape policy, one set of
Markdown helpers and one safe way of writing files, so a hostile string in model output can never
inject markup into any report, and a basename can never write outside the chosen directory.

How to use it (for every area):

- Put templates in ``harness/reporting/templates/`` (package data). For a report called ``load``
  write ``load.md.j2`` and ``load.html.j2``. HTML templates may ``{% extends "base.html.j2" %}``,
  which inlines the shared stylesheet and the severity/reviewer filter script (no network needed)
  and offers the blocks ``title``, ``head`` and ``content``.
- ``report_environment()`` returns the configured environment (cached). Autoescape is ON for
  ``.html``/``.html.j2``/``.htm``/``.xml`` templates and OFF for Markdown and text, and for
  ``from_string`` templates (used for prompts, which are plain text sent to a model).
- ``write_report(model, "load", out_dir)`` writes ``load.md``, ``load.html`` and ``load.json``
  (``model.model_dump(mode="json")``); templates receive the dumped model as ``report`` and
  the pydantic object itself as ``model``. Missing templates for a format skip that format only if
  ``formats`` says so; otherwise it is an error. Output paths that would leave ``out_dir`` raise
  ``ReportPathError``.

Filters (all pure, all tested):

Escaping (``harness.reporting.escaping``) is applied at the template boundary: the environment's
``finalize`` runs every ``{{ ... }}`` string of a Markdown template through ``md_text`` and every
string of an HTML template through ``visible`` before autoescape. Filters that build Markdown
return ``MdSafe`` so they are not escaped twice. Inside backticks use ``md_code`` instead of
writing the backticks in the template.

- ``md_cell``: one value made safe for a Markdown table cell (the Markdown rule; None to ``-``).
- ``md_text`` / ``md_code``: the Markdown rule for running text / a whole code span.
- ``md_table(rows, columns)``: a whole GitHub-flavoured table from a list of mappings/objects;
  ``columns`` is a list of field names or ``(header, field)`` pairs.
- ``hours``: ``12.0 -> "12h"``, ``1.5 -> "1.5h"``, None -> ``"-"``.
- ``pct``: ``0.125 -> "12.5%"``.
- ``num(digits)``: a float rounded for display, None -> ``"-"``.
- ``quote_md``: prefixes every line with ``> ``.
- ``anchor``: a stable HTML id from any text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from pydantic import BaseModel

from harness.reporting.escaping import MdSafe, md_code, md_text, visible
from harness.secrets import redact_registered

__all__ = [
    "ReportPathError",
    "ReportTemplateError",
    "WrittenReport",
    "anchor",
    "format_hours",
    "md_cell",
    "md_table",
    "report_environment",
    "safe_output_path",
    "write_report",
]

TEMPLATES_PACKAGE = "harness.reporting"
TEMPLATES_FOLDER = "templates"
FORMATS: tuple[str, ...] = ("md", "html", "json")


class ReportPathError(ValueError):
    """An output path would land outside the report directory (or is not a plain name)."""


class ReportTemplateError(LookupError):
    """A template needed for a report is missing or failed to render."""


def md_cell(value: Any) -> MdSafe:
    """Make any value safe for one Markdown table cell (the Markdown rule of ``escaping``).

    Why: model output routinely contains ``|`` and newlines, which silently break a table, and
    may try to add links, images or HTML.
    """
    if value is None:
        return MdSafe("-")
    if isinstance(value, MdSafe):
        return value
    text = md_text(f"{value:g}" if isinstance(value, float) else value)
    return text or MdSafe("-")


def _field(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        return row.get(name)
    return getattr(row, name, None)


def md_table(rows: Iterable[Any], columns: Sequence[str | tuple[str, str]]) -> MdSafe:
    """Render rows as a GitHub-flavoured Markdown table (header, separator, one line per row)."""
    pairs = [(c, c) if isinstance(c, str) else (c[0], c[1]) for c in columns]
    if not pairs:
        raise ValueError("md_table needs at least one column")
    lines = [
        "| " + " | ".join(md_cell(header) for header, _ in pairs) + " |",
        "|" + "|".join("---" for _ in pairs) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(md_cell(_field(row, f)) for _, f in pairs) + " |")
    return MdSafe("\n".join(lines))


def format_hours(value: float | None) -> MdSafe:
    if value is None:
        return MdSafe("-")
    return MdSafe(f"{value:g}h")


def _pct(value: float | None, digits: int = 1) -> MdSafe:
    if value is None:
        return MdSafe("-")
    return MdSafe(f"{value * 100:.{digits}f}%")


def _num(value: float | None, digits: int = 2) -> MdSafe:
    if value is None:
        return MdSafe("-")
    rounded = round(float(value), digits)
    return MdSafe(f"{rounded:.{digits}f}")


def _quote_md(text: str | None) -> MdSafe:
    """Each line of ``text`` escaped by the Markdown rule and quoted with ``> ``."""
    if not text:
        return MdSafe("")
    lines = visible(text).splitlines()
    return MdSafe("\n".join("> " + md_text(line) if line.strip() else ">" for line in lines))


def anchor(text: Any) -> MdSafe:
    """A stable, markup-free HTML id for any text."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return MdSafe(slug or "item")


def _md_built(markdown: str) -> MdSafe:
    """Mark the output of a template's own macro as Markdown (its values were escaped inside).

    Jinja returns macro output as a plain string in non-HTML templates; never apply this to data.
    """
    return MdSafe(markdown)


_MARKDOWN_TEMPLATES = (".md.j2", ".md")


@jinja2.pass_context
def _finalize(context: jinja2.runtime.Context, value: Any) -> Any:
    """The escaping boundary: every ``{{ ... }}`` of a report template passes through here.

    Markdown templates get the Markdown rule for any string not already marked ``MdSafe``; HTML
    templates get the visible rule before Jinja's autoescape; string templates (prompts sent to a
    model) are left alone. Numbers and None are written as Jinja writes them.
    """
    if value is None or not isinstance(value, str) or isinstance(value, MdSafe | Markup):
        return value
    name = context.name or ""
    if name.endswith(_MARKDOWN_TEMPLATES):
        return md_text(value)
    if context.eval_ctx.autoescape:
        return visible(value)
    return value


def _tojson_compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@lru_cache(maxsize=1)
def report_environment() -> jinja2.Environment:
    """The shared, configured environment (created once; Jinja environments are thread-safe)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(TEMPLATES_PACKAGE, TEMPLATES_FOLDER),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm", "xml", "html.j2", "htm.j2", "xml.j2"),
            disabled_extensions=("md", "md.j2", "txt", "txt.j2"),
            default_for_string=False,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters.update(
        md_cell=md_cell,
        md_table=md_table,
        hours=format_hours,
        pct=_pct,
        num=_num,
        quote_md=_quote_md,
        anchor=anchor,
        tojson_compact=_tojson_compact,
        md_text=md_text,
        md_code=md_code,
        visible=visible,
        md_built=_md_built,
    )
    return env


def safe_output_path(out_dir: Path, name: str) -> Path:
    """``out_dir / name``, refusing anything that would escape ``out_dir``.

    Why: basenames can come from roster or subject files; ``../../etc/x`` or an absolute path must
    never be written.
    """
    if not name or name in {".", ".."} or "\x00" in name:
        raise ReportPathError(f"invalid report file name {name!r} (directory {out_dir})")
    candidate = Path(name)
    if candidate.is_absolute() or len(candidate.parts) != 1:
        raise ReportPathError(
            f"report file name {name!r} must be a plain file name inside {out_dir}"
        )
    base = out_dir.resolve()
    target = (base / candidate).resolve()
    if target.parent != base:
        raise ReportPathError(f"report file {name!r} would be written outside {base}")
    return target


@dataclass(frozen=True, slots=True)
class WrittenReport:
    """The files one ``write_report`` call produced, by format."""

    paths: Mapping[str, Path]

    def __getitem__(self, fmt: str) -> Path:
        return self.paths[fmt]


def render_template(name: str, **context: Any) -> str:
    """Render one package template by name with a clear error when it is missing."""
    env = report_environment()
    try:
        template = env.get_template(name)
    except jinja2.TemplateNotFound as exc:
        raise ReportTemplateError(
            f"report template {name!r} not found in {TEMPLATES_PACKAGE}/{TEMPLATES_FOLDER}"
        ) from exc
    try:
        return template.render(**context)
    except jinja2.UndefinedError as exc:
        raise ReportTemplateError(f"template {name!r} used an undefined value: {exc}") from exc


def write_report(
    model: BaseModel,
    basename: str,
    out_dir: Path | str,
    *,
    template: str | None = None,
    formats: Sequence[str] = FORMATS,
    extra_context: Mapping[str, Any] | None = None,
) -> WrittenReport:
    """Render ``model`` to ``out_dir/<basename>.{md,html,json}`` and return the paths.

    ``template`` names the template stem (default: ``basename``), so several runs can write
    ``run-1.md`` from one ``review.md.j2``. JSON is the canonical data; Markdown and HTML are views
    of exactly the same dump, so the three can never disagree.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown report formats {sorted(unknown)}; known: {list(FORMATS)}")
    out = Path(out_dir)
    stem = template or basename
    targets = {fmt: safe_output_path(out, f"{basename}.{fmt}") for fmt in formats}
    out.mkdir(parents=True, exist_ok=True)
    data = model.model_dump(mode="json")
    context: dict[str, Any] = {"report": data, "model": model, **(extra_context or {})}
    written: dict[str, Path] = {}
    for fmt, target in targets.items():
        if fmt == "json":
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        else:
            text = render_template(f"{stem}.{fmt}.j2", **context)
        # backslashreplace: a lone surrogate left in the data becomes ``\udcff``, which inside
        # a JSON string is the standard escape, and elsewhere is the visible rule's spelling.
        # The configured token never reaches a report, even if a server or model echoed it.
        target.write_text(redact_registered(text), encoding="utf-8", errors="backslashreplace")
        written[fmt] = target
    return WrittenReport(paths=written)
