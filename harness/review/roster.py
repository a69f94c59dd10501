"""The roster: who reviews, with which model, focus, prompt and budget (a TOML file).

Why TOML with line-numbered errors: a roster is edited by hand, and "reviewers[1].temperature:
Input should be a valid number" is useless without the line; :func:`locate_field` maps a pydantic
error location back to the line of the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.review.errors import ReviewInputError

DEFAULT_ROSTER = "default_roster.toml"
DEFAULT_PROMPT = "reviewer_prompt.txt.j2"
M = TypeVar("M", bound=BaseModel)


def packaged_text(name: str) -> str:
    return resources.files("harness.review").joinpath("templates", name).read_text("utf-8")


class Reviewer(BaseModel):
    """One reviewer: a model with a focus and a budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=80)]
    model: Annotated[str, Field(min_length=1, max_length=200)]
    focus: Annotated[str, Field(min_length=1, max_length=300)]
    prompt: str | None = Field(default=None, description="Jinja template of the user prompt")
    prompt_file: str | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.2
    max_tokens: Annotated[int, Field(ge=64, le=131072)] = 4096
    timeout_s: Annotated[float, Field(gt=0, le=7200)] = 300.0
    reasoning: bool = Field(default=False, description="Let the model think before answering")
    response_format: bool = Field(default=True, description="Send the review JSON schema")

    @model_validator(mode="after")
    def _one_prompt(self) -> Reviewer:
        if self.prompt and self.prompt_file:
            raise ValueError("give either prompt or prompt_file, not both")
        return self


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: Annotated[int, Field(ge=1, le=16)] = 1
    quorum: Annotated[int, Field(ge=1)] = 2
    seed: int | None = 7
    max_attempts: Annotated[int, Field(ge=1, le=5)] = 3
    context_reserve_tokens: Annotated[int, Field(ge=0)] = 1024


class SynthesisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[str, Field(min_length=1)]
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    max_tokens: Annotated[int, Field(ge=64)] = 1024


class Roster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = "Multi-model review"
    run: RunSettings = RunSettings()
    synthesis: SynthesisSettings | None = None
    reviewers: Annotated[list[Reviewer], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Roster:
        names = [r.name for r in self.reviewers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"reviewer names must be unique; repeated: {dupes}")
        return self


def locate_field(text: str, loc: Sequence[Any]) -> int | None:
    """The 1-based line of a pydantic error location in a TOML text (best effort)."""
    lines = text.splitlines()
    block_start, block_end = 0, len(lines)
    keys = list(loc)
    header_line: int | None = None
    if keys and isinstance(keys[0], str) and len(keys) >= 2:
        table = keys[0]
        if isinstance(keys[1], int):
            index, keys = keys[1], keys[2:]
            headers = [
                i for i, ln in enumerate(lines) if re.match(rf"^\s*\[\[\s*{table}\s*\]\]", ln)
            ]
        else:
            index, keys = 0, keys[1:]
            headers = [i for i, ln in enumerate(lines) if re.match(rf"^\s*\[\s*{table}\s*\]", ln)]
        if index >= len(headers):
            return None
        block_start = headers[index]
        header_line = block_start + 1
        following = [i for i, ln in enumerate(lines) if i > block_start and re.match(r"^\s*\[", ln)]
        block_end = following[0] if following else len(lines)
    elif keys:
        following = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[", ln)]
        block_end = following[0] if following else len(lines)
    key = next((k for k in keys if isinstance(k, str)), None)
    if key is not None:
        for i in range(block_start, block_end):
            if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
                return i + 1
    return header_line


def load_toml_model(text: str, model: type[M], source: str) -> M:
    """``text`` as TOML validated into ``model``; every error names ``source:line`` and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ReviewInputError(f"{source}: invalid TOML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors()[:5]:
            line = locate_field(text, err["loc"])
            where = f"{source}:{line}" if line else source
            field = ".".join(str(p) for p in err["loc"]) or "(root)"
            messages.append(f"{where}: field {field!r}: {err['msg']}")
        raise ReviewInputError("; ".join(messages)) from exc


def parse_roster(text: str, source: str = "<roster>") -> Roster:
    return load_toml_model(text, Roster, source)


def load_roster(path: Path | None) -> tuple[Roster, Path | None]:
    """The roster at ``path``, or the packaged default (mirrors the reference's three reviewers)."""
    if path is None:
        return parse_roster(packaged_text(DEFAULT_ROSTER), f"<packaged {DEFAULT_ROSTER}>"), None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReviewInputError(f"{path}: cannot read roster: {exc}") from exc
    return parse_roster(text, str(path)), path


def prompt_template(reviewer: Reviewer, roster_dir: Path | None) -> str:
    """A reviewer's prompt template: inline, from a file beside the roster, or the default."""
    if reviewer.prompt:
        return reviewer.prompt
    if reviewer.prompt_file:
        base = roster_dir or Path.cwd()
        path = (base / reviewer.prompt_file).resolve()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReviewInputError(
                f"reviewer {reviewer.name!r}: cannot read prompt_file {path}: {exc}"
            ) from exc
    return packaged_text(DEFAULT_PROMPT)
