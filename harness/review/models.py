"""The data of a review run: what each reviewer said, and how the run went.

Why pydantic: reviews come from models and files we do not control. Validation gives the parser a
precise list of what is wrong (quoted back to the model on a re-ask), and the same classes produce
the JSON schema sent as ``response_format`` so the prompt, the schema and the parser cannot drift.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"

    @property
    def rank(self) -> int:
        """Higher is worse; used to keep the highest severity when merging."""
        return {"minor": 1, "major": 2, "critical": 3}[self.value]


class Priority(StrEnum):
    """How soon a fix is needed: the three tiers of the reference's recommendations summary."""

    CRITICAL = "critical"
    HIGH = "high"
    NICE_TO_HAVE = "nice_to_have"

    @property
    def rank(self) -> int:
        return {"nice_to_have": 1, "high": 2, "critical": 3}[self.value]

    @classmethod
    def for_severity(cls, severity: Severity) -> Priority:
        return {
            Severity.CRITICAL: cls.CRITICAL,
            Severity.MAJOR: cls.HIGH,
            Severity.MINOR: cls.NICE_TO_HAVE,
        }[severity]


def _lower(value: Any) -> Any:
    return (
        value.strip().lower().replace("-", "_").replace(" ", "_")
        if isinstance(value, str)
        else value
    )


Text = Annotated[str, Field(max_length=4000)]


class Finding(BaseModel):
    """One problem a reviewer found."""

    model_config = ConfigDict(extra="ignore")

    severity: Severity
    title: Annotated[str, Field(min_length=1, max_length=300)]
    impact: Text = ""
    evidence: list[Text] = Field(default_factory=list)
    location: Annotated[str, Field(max_length=300)] | None = None
    recommendation: Text = ""
    estimated_hours: Annotated[float, Field(ge=0, le=2000)] | None = None
    priority: Priority | None = Field(
        default=None,
        description="Fix priority if it differs from the severity's default tier.",
    )

    _norm_severity = field_validator("severity", "priority", mode="before")(_lower)

    @field_validator("evidence", mode="before")
    @classmethod
    def _evidence_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value] if value.strip() else []
        return value

    @property
    def fix_priority(self) -> Priority:
        return self.priority or Priority.for_severity(self.severity)


class Review(BaseModel):
    """One reviewer's structured answer."""

    model_config = ConfigDict(extra="ignore")

    rating: Annotated[int, Field(ge=1, le=10)]
    focus: Annotated[str, Field(max_length=300)] = ""
    summary: Text = ""
    findings: list[Finding] = Field(default_factory=list)
    strengths: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=list
    )
    recommendations: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=list
    )
    key_quote: Text = ""

    @field_validator("rating", mode="before")
    @classmethod
    def _rating_from_text(cls, value: Any) -> Any:
        """Accept "8/10" or "8.0": models write ratings both ways."""
        if isinstance(value, str):
            head = value.strip().split("/")[0].strip()
            try:
                return round(float(head))
            except ValueError:
                return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


@cache
def review_json_schema() -> dict[str, Any]:
    """The JSON schema sent as LM Studio ``response_format`` (``json_schema``) for a review.

    Cached (built once, not per request); callers must not mutate it.
    """
    return Review.model_json_schema()


class ParseLayer(StrEnum):
    """Which parsing step produced the review, in the order they are tried."""

    JSON_SCHEMA = "json_schema"
    JSON_EXTRACTION = "json_extraction"
    LENIENT_REPAIR = "lenient_repair"
    REASK = "reask"
    MARKDOWN_SECTIONS = "markdown_sections"
    UNPARSED = "unparsed"
    FIXTURE = "fixture"


class RunStatus(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"
    UNPARSED = "unparsed"
    TRUNCATED = "truncated"
    SKIPPED = "skipped"


class Truncation(BaseModel):
    """What part of the subject one reviewer did not see, and why."""

    section: str
    original_tokens: int
    kept_tokens: int
    note: str = ""


class ReviewerRun(BaseModel):
    """How one reviewer's call went, with its parsed review when there is one."""

    name: str
    model: str
    focus: str = ""
    status: RunStatus
    review: Review | None = None
    parse_layer: ParseLayer | None = None
    parse_errors: list[str] = Field(default_factory=list)
    error: str | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    retries: int = 0
    finish_reason: str | None = None
    raw_text: str = ""
    reasoning: str = ""
    truncations: list[Truncation] = Field(default_factory=list)
    consistency_warnings: list[str] = Field(default_factory=list)
    prompt_sha256: str | None = None
    served_model: str | None = None


class ModelInfo(BaseModel):
    key: str
    quantization: str | None = None
    max_context_length: int | None = None
    loaded: bool | None = None


class Manifest(BaseModel):
    """What is needed to reproduce (or at least explain) a run."""

    harness_version: str
    created_at: str
    base_url: str | None = None
    server: str | None = None
    models: list[ModelInfo] = Field(default_factory=list)
    sampling: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int | None = None
    subject_sha256: str | None = None
    prompt_sha256: dict[str, str] = Field(default_factory=dict)
    roster_path: str | None = None
    source: str = "live"


class SubjectSummary(BaseModel):
    title: str
    description: str = ""
    date: str | None = None


class RunRecord(BaseModel):
    """Everything a run produced before aggregation: the input of ``harness review render``."""

    subject: SubjectSummary
    manifest: Manifest
    runs: list[ReviewerRun]
    quorum: int = 2
    synthesis: str | None = None
    synthesis_status: str = "not requested"
