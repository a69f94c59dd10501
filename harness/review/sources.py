"""Loading what ``harness review render`` renders: a saved run, or a panel of canned reviews.

Why both: a run directory (``run.json``, written by the runner with every raw answer) re-renders
without calling any model; a *panel* directory (``panel.toml`` + one review JSON per reviewer) is
how reviews obtained elsewhere (or by hand, like the Phase 2 reference) enter the same aggregation.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from harness import __version__
from harness.reporting.escaping import scrub_data
from harness.review.errors import ReviewInputError
from harness.review.models import (
    Manifest,
    ModelInfo,
    ParseLayer,
    Review,
    ReviewerRun,
    RunRecord,
    RunStatus,
    SubjectSummary,
)
from harness.review.parsing import format_validation_errors
from harness.review.roster import load_toml_model

RUN_FILE = "run.json"
PANEL_FILE = "panel.toml"


class PanelReviewer(BaseModel):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    focus: str = ""
    review: str = Field(min_length=1, description="Path of the review JSON, relative to the panel")


class Panel(BaseModel):
    title: str = Field(min_length=1)
    date: str | None = None
    description: str = ""
    quorum: int = Field(default=2, ge=1)
    reviewers: list[PanelReviewer] = Field(min_length=1)


def load_source(path: Path) -> RunRecord:
    """A run record from ``run.json``, a directory holding one, or a panel directory."""
    if path.is_file() and path.name.endswith(".json"):
        return load_run_record(path)
    if (path / RUN_FILE).is_file():
        return load_run_record(path / RUN_FILE)
    if (path / PANEL_FILE).is_file():
        return load_panel(path / PANEL_FILE)
    raise ReviewInputError(
        f"{path}: nothing to render: expected {RUN_FILE}, a directory with {RUN_FILE}, "
        f"or a panel directory with {PANEL_FILE}"
    )


def _json_file(path: Path) -> object:
    """A JSON file parsed by the stdlib reader, lone surrogates (``\udcff`` escapes) replaced,
    where pydantic's reader refuses the whole file."""
    try:
        return scrub_data(json.loads(path.read_bytes()))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def load_run_record(path: Path) -> RunRecord:
    try:
        return RunRecord.model_validate(_json_file(path))
    except OSError as exc:
        raise ReviewInputError(f"{path}: cannot read run record: {exc}") from exc
    except ValueError as exc:
        detail = _first_errors(exc) if isinstance(exc, ValidationError) else str(exc)
        raise ReviewInputError(f"{path}: not a valid run record: {detail}") from exc


def _first_errors(exc: ValidationError) -> str:
    return "; ".join(format_validation_errors(exc)[:3])


def load_panel(path: Path) -> RunRecord:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewInputError(f"{path}: cannot read panel: {exc}") from exc
    panel = load_toml_model(text, Panel, str(path))
    runs = []
    for reviewer in panel.reviewers:
        review_path = (path.parent / reviewer.review).resolve()
        try:
            review = Review.model_validate(_json_file(review_path))
        except OSError as exc:
            raise ReviewInputError(f"{review_path}: cannot read review: {exc}") from exc
        except ValueError as exc:
            detail = _first_errors(exc) if isinstance(exc, ValidationError) else str(exc)
            raise ReviewInputError(f"{review_path}: invalid review: {detail}") from exc
        runs.append(
            ReviewerRun(
                name=reviewer.name,
                model=reviewer.model,
                focus=reviewer.focus or review.focus,
                status=RunStatus.OK,
                review=review,
                parse_layer=ParseLayer.FIXTURE,
                raw_text=json.dumps(review.model_dump(mode="json"), ensure_ascii=False),
            )
        )
    manifest = Manifest(
        harness_version=__version__,
        created_at=panel.date or "",
        models=[ModelInfo(key=r.model) for r in panel.reviewers],
        source=f"panel {path.parent.name}",
    )
    return RunRecord(
        subject=SubjectSummary(title=panel.title, description=panel.description, date=panel.date),
        manifest=manifest,
        runs=runs,
        quorum=panel.quorum,
    )
