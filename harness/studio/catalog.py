"""The emulator's model catalog: what is "downloaded" and how fast each model pretends to be.

A catalog is data (JSON) so a suite can swap a test-fast catalog for a realistic one without code.
Speeds live next to the model so that model switching tests see different load times and token
rates per model, the way a 4B and a 30B model differ on real hardware.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class CatalogError(ValueError):
    """A catalog file is missing, not JSON, or does not describe valid models."""


class SpeedDefaults(BaseModel):
    """Speeds used by every model that does not set its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    load_time_s: float = Field(default=0.05, ge=0)
    ttft_s: float = Field(default=0.02, ge=0)
    tokens_per_s: float = Field(default=500.0, gt=0)
    reply_tokens: tuple[int, int] = (24, 64)


class ModelSpec(BaseModel):
    """One downloadable model, with LM Studio's metadata and the emulator's timing knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1)
    type: Literal["llm", "vlm", "embedding"] = "llm"
    publisher: str
    display_name: str
    arch: str
    params_string: str | None = None
    quantization: str = "Q4_K_M"
    bits_per_weight: int = 4
    format: Literal["gguf", "mlx"] | None = "gguf"
    size_bytes: int = 0
    max_context_length: int = 4096
    loaded_context_length: int = 4096
    tool_use: bool = False
    vision: bool = False
    reasoning: Literal["reasoning_content", "reasoning"] | None = None
    embedding_dims: int = 768
    load_time_s: float | None = Field(default=None, ge=0)
    ttft_s: float | None = Field(default=None, ge=0)
    tokens_per_s: float | None = Field(default=None, gt=0)
    reply_tokens: tuple[int, int] | None = None

    @property
    def is_embedding(self) -> bool:
        return self.type == "embedding"

    @property
    def variant(self) -> str:
        return f"{self.key}@{self.quantization.lower()}"


class ResolvedSpeed(BaseModel):
    """The timing a model actually uses once catalog defaults are applied."""

    model_config = ConfigDict(frozen=True)

    load_time_s: float
    ttft_s: float
    tokens_per_s: float
    reply_tokens: tuple[int, int]


class Catalog(BaseModel):
    """All models the emulator knows, keyed by model key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "catalog"
    description: str = ""
    defaults: SpeedDefaults = Field(default_factory=SpeedDefaults)
    models: tuple[ModelSpec, ...]

    @model_validator(mode="after")
    def _unique_keys(self) -> Catalog:
        keys = [m.key for m in self.models]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"duplicate model keys: {dupes}")
        if not self.models:
            raise ValueError("a catalog needs at least one model")
        return self

    def get(self, key: str) -> ModelSpec | None:
        for spec in self.models:
            if spec.key == key:
                return spec
        return None

    def speed(self, spec: ModelSpec) -> ResolvedSpeed:
        d = self.defaults
        return ResolvedSpeed(
            load_time_s=d.load_time_s if spec.load_time_s is None else spec.load_time_s,
            ttft_s=d.ttft_s if spec.ttft_s is None else spec.ttft_s,
            tokens_per_s=d.tokens_per_s if spec.tokens_per_s is None else spec.tokens_per_s,
            reply_tokens=d.reply_tokens if spec.reply_tokens is None else spec.reply_tokens,
        )

    def with_speed(self, **overrides: object) -> Catalog:
        """A copy whose defaults *and* every model use the given speed (for tests and benches)."""
        defaults = self.defaults.model_copy(update=overrides)
        models = tuple(
            m.model_copy(update={k: None for k in overrides if k in ModelSpec.model_fields})
            for m in self.models
        )
        return self.model_copy(update={"defaults": defaults, "models": models})


def load_catalog(path: Path | None = None) -> Catalog:
    """Load a catalog file, or the packaged default catalog when no path is given."""
    if path is None:
        text = resources.files("harness.studio").joinpath("default_catalog.json").read_text("utf-8")
        where = "harness/studio/default_catalog.json (package data)"
    else:
        where = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise CatalogError(f"cannot read catalog {where}: {exc}") from exc
    try:
        return Catalog.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise CatalogError(f"catalog {where} is not JSON: {exc}") from exc
    except ValidationError as exc:
        raise CatalogError(f"catalog {where} is invalid: {exc}") from exc
