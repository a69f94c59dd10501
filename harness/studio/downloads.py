"""Simulated model downloads for ``POST /api/v1/models/download`` and its status endpoint.

Nothing is fetched: a job has a deterministic size (from the model name) and progresses at
``EngineOptions.download_bytes_per_s`` on the engine's clock, so a test moves an injected clock
instead of waiting. When a job completes, the model joins the catalog (as a GGUF LLM with
catalog-default speeds) and loads like any other. Shapes follow DOC ``download.md`` and
``download-status.md``: ``already_downloaded`` carries no ``job_id``; ids are ``job_<10 hex>``;
times are ISO-8601 strings.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from harness.studio.catalog import ModelSpec
from harness.studio.generation import seeded_rng

if TYPE_CHECKING:
    from harness.studio.engine import Engine

_CATALOG_ID = re.compile(r"^([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)$")
_HF_URL = re.compile(r"^https://huggingface\.co/([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)/?$")


class DownloadError(Exception):
    """A download request LM Studio refuses (status and native error type)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass
class DownloadJob:
    job_id: str
    key: str
    publisher: str
    name: str
    quantization: str
    total_size_bytes: int
    started_clock: float
    started_wall: datetime
    rate: float
    added: bool = False


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(model: str, quantization: str | None) -> tuple[str, str, str]:
    """(publisher, name, quantization) of a catalog id or a Hugging Face link."""
    hf = _HF_URL.match(model)
    if hf is not None:
        name = re.sub(r"-GGUF$", "", hf.group(2), flags=re.IGNORECASE)
        return hf.group(1).lower(), name.lower(), (quantization or "Q4_K_M").upper()
    if quantization is not None:
        raise DownloadError(400, "invalid_request",
                            "'quantization' is only supported for Hugging Face links")
    catalog = _CATALOG_ID.match(model)
    if catalog is None:
        raise DownloadError(404, "model_not_found",
                            f"Model '{model}' not found: expected a model catalog identifier "
                            "(publisher/model) or a Hugging Face link")
    return catalog.group(1).lower(), catalog.group(2).lower(), "Q4_K_M"


def start_download(engine: Engine, model: str, quantization: str | None) -> dict[str, Any]:
    """Start (or find) the download of ``model``; the answer of ``POST .../download``."""
    publisher, name, quant = _parse(model, quantization)
    key = f"{publisher}/{name}"
    if engine.spec_for(model) is not None or engine.catalog.get(key) is not None:
        return {"status": "already_downloaded"}
    for job in engine.downloads.values():
        if job.key == key and not _done(engine, job):
            return describe_job(engine, job, start=True)
    size = seeded_rng("download", key, quant).randrange(1_000_000_000, 6_000_000_000)
    job = DownloadJob(
        job_id="job_" + secrets.token_hex(5), key=key, publisher=publisher, name=name,
        quantization=quant, total_size_bytes=size, started_clock=engine.clock(),
        started_wall=datetime.now(UTC), rate=engine.options.download_bytes_per_s)
    engine.downloads[job.job_id] = job
    return describe_job(engine, job, start=True)


def _done(engine: Engine, job: DownloadJob) -> bool:
    return _downloaded(engine, job) >= job.total_size_bytes


def _downloaded(engine: Engine, job: DownloadJob) -> int:
    elapsed = max(0.0, engine.clock() - job.started_clock)
    return min(job.total_size_bytes, int(elapsed * job.rate))


def describe_job(engine: Engine, job: DownloadJob, *, start: bool = False) -> dict[str, Any]:
    """The job status object; a completed job's model is added to the catalog here."""
    done = _downloaded(engine, job)
    answer: dict[str, Any] = {"job_id": job.job_id}
    wall = lambda seconds: _iso(job.started_wall + timedelta(seconds=seconds))  # noqa: E731
    if done >= job.total_size_bytes:
        answer["status"] = "completed"
        if not job.added:
            _add_to_catalog(engine, job)
    else:
        answer["status"] = "downloading"
    answer["total_size_bytes"] = job.total_size_bytes
    answer["started_at"] = _iso(job.started_wall)
    if start:
        return answer
    answer["downloaded_bytes"] = done
    if answer["status"] == "completed":
        answer["completed_at"] = wall(job.total_size_bytes / job.rate)
    else:
        answer["bytes_per_second"] = job.rate
        answer["estimated_completion"] = wall(job.total_size_bytes / job.rate)
    return answer


def _add_to_catalog(engine: Engine, job: DownloadJob) -> None:
    spec = ModelSpec(key=job.key, publisher=job.publisher, display_name=job.name,
                     arch="llama", quantization=job.quantization,
                     size_bytes=job.total_size_bytes)
    engine.catalog = engine.catalog.model_copy(
        update={"models": (*engine.catalog.models, spec)})
    job.added = True
