"""Load shapes as data: a TOML scenario file, validated into small immutable values.

A scenario says what one request is (endpoint, streaming, models, prompt), how load is applied
over time (closed-loop levels of concurrent users, or open-loop arrival rates on an absolute
schedule), what is excluded as warm-up, which SLOs give the verdict and which validity gates mark
a run invalid. The same file drives ``harness load`` and a plain ``locust -f`` run, so a shape is
reviewed as data, not hidden in code.

Timeline: level i occupies ``[i * level_duration_s, (i + 1) * level_duration_s)`` seconds after
the shared start time t0; its first ``warmup_s`` seconds are excluded from every statistic.
After the last level no request starts; in-flight ones drain for up to ``drain_s``.

Every number has a bound (``BOUNDS``): a load test runs on loopback for a bounded time with a
bounded number of users, so an absurd value (1e9 users, an infinite duration, a 10 GB prompt, a
NaN rate) is refused before anything starts, with one line naming the field and its bound.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Endpoint = Literal["chat", "completions", "native"]

ENDPOINT_PATHS: dict[str, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "native": "/api/v1/chat",
}


class ScenarioError(ValueError):
    """A scenario file is missing, not TOML, or not a valid scenario (names file and field)."""


MAX_USERS = 20_000  # closed-loop users (and the open-loop concurrency cap) in one run
MAX_RATE = 10_000.0  # open-loop arrivals per second
MAX_ARRIVALS = 2_000_000  # open-loop arrivals over the whole plan (each is a float in memory)
MAX_LEVEL_S = 3600.0
MAX_PLAN_S = 24 * 3600.0
MAX_PROMPT_CHARS = 4_000_000  # prompt x prompt_repeat: about a million tokens
MAX_OUTPUT_TOKENS = 131_072


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class RequestShape(_Frozen):
    """What each request sends."""

    endpoint: Endpoint = "chat"
    stream: bool = True
    models: tuple[str, ...] = ("qwen/qwen3-4b",)
    model_choice: Literal["per_user", "round_robin"] = "per_user"
    prompt: str = "Write a short paragraph about load testing."
    prompt_repeat: int = Field(1, ge=1, le=100_000)
    system: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(64, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(0.0, ge=0, le=10)
    seed: int | None = None
    ttl_s: int | None = Field(3600, ge=1, le=30 * 86400)
    api_token_env: str | None = None

    @model_validator(mode="after")
    def _models(self) -> RequestShape:
        if not self.models or any(not m.strip() for m in self.models):
            raise ValueError("models must list at least one non-empty model key")
        size = len(self.prompt) * self.prompt_repeat
        if size > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt x prompt_repeat is {size:,} characters, over the bound of "
                             f"{MAX_PROMPT_CHARS:,}")
        return self

    @property
    def path(self) -> str:
        return ENDPOINT_PATHS[self.endpoint]

    @property
    def prompt_text(self) -> str:
        return " ".join([self.prompt] * self.prompt_repeat)


class LoadShape(_Frozen):
    """How load is applied over time."""

    mode: Literal["closed", "open"] = "closed"
    levels: tuple[float, ...] = (1,)
    level_duration_s: float = Field(10.0, gt=0, le=MAX_LEVEL_S)
    warmup_s: float = Field(2.0, ge=0)
    drain_s: float = Field(5.0, ge=0, le=600)
    arrival: Literal["constant", "poisson"] = "constant"
    max_concurrency: int = Field(64, ge=1, le=MAX_USERS)
    spawn_rate: float = Field(0.0, ge=0, le=MAX_USERS)
    seed: int = 0
    # After a stream's first token, read at most every this many ms (0: every chunk as it
    # comes). Fewer wake-ups per chunk; TTFT, TPOT and each request's mean ITL stay exact (the
    # kernel stamps the first and the last packet), single chunk gaps are not kept.
    read_batch_ms: float = Field(0.0, ge=0, le=1000)

    @model_validator(mode="after")
    def _levels(self) -> LoadShape:
        if not self.levels:
            raise ValueError("levels must not be empty")
        if len(self.levels) > 1000:
            raise ValueError(f"{len(self.levels)} levels, over the bound of 1000")
        if any(level <= 0 for level in self.levels):
            raise ValueError("every level must be > 0 (users in closed mode, req/s in open mode)")
        if self.mode == "closed" and any(level != int(level) for level in self.levels):
            raise ValueError("closed-loop levels are user counts and must be whole numbers")
        bound, unit = (MAX_USERS, "users") if self.mode == "closed" else (MAX_RATE, "req/s")
        for index, level in enumerate(self.levels):
            if level > bound:
                raise ValueError(f"levels[{index}] = {level:g} {unit}, over the bound of "
                                 f"{bound:g} {unit}")
        if self.total_s > MAX_PLAN_S:
            raise ValueError(f"the plan lasts {self.total_s:g} s (levels x level_duration_s), "
                             f"over the bound of {MAX_PLAN_S:g} s")
        if self.mode == "open":
            arrivals = sum(self.levels) * self.level_duration_s
            if arrivals > MAX_ARRIVALS:
                raise ValueError(f"the plan schedules about {arrivals:,.0f} arrivals, over the "
                                 f"bound of {MAX_ARRIVALS:,}")
        if self.warmup_s >= self.level_duration_s:
            raise ValueError(
                f"warmup_s ({self.warmup_s}) must be shorter than level_duration_s "
                f"({self.level_duration_s}), or nothing would be measured"
            )
        return self

    @property
    def total_s(self) -> float:
        return len(self.levels) * self.level_duration_s

    def level_at(self, offset: float) -> int | None:
        """Index of the level running ``offset`` seconds after t0 (None outside the plan)."""
        if offset < 0 or offset >= self.total_s:
            return None
        return min(int(offset // self.level_duration_s), len(self.levels) - 1)

    def is_warmup(self, offset: float) -> bool:
        level = self.level_at(offset)
        if level is None:
            return offset < 0
        return offset - level * self.level_duration_s < self.warmup_s

    def measure_window(self, level: int) -> tuple[float, float]:
        start = level * self.level_duration_s
        return start + self.warmup_s, start + self.level_duration_s

    def users_at(self, offset: float) -> int:
        """Locust users wanted at ``offset`` (closed: the level; open: the concurrency cap)."""
        if self.mode == "open":
            return self.max_concurrency
        level = self.level_at(offset)
        index = len(self.levels) - 1 if level is None else level
        return int(self.levels[index])

    def spawn_rate_for(self, users: int) -> float:
        """Spawn a level's users within a fifth of its warm-up unless the scenario says."""
        if self.spawn_rate:
            return self.spawn_rate
        return max(users / max(self.warmup_s / 5, 0.05), 1.0)


class SLO(_Frozen):
    """Thresholds giving the verdict (each optional)."""

    ttft_p95_ms: float | None = Field(None, gt=0)
    tpot_p99_ms: float | None = Field(None, gt=0)
    e2e_p95_ms: float | None = Field(None, gt=0)
    error_rate_max: float | None = Field(None, ge=0, le=1)
    min_output_tps: float | None = Field(None, ge=0)
    # per-request goodput SLOs (vLLM's --goodput): a request is "good" when it meets all given
    goodput_ttft_ms: float | None = Field(None, gt=0)
    goodput_tpot_ms: float | None = Field(None, gt=0)
    goodput_e2e_ms: float | None = Field(None, gt=0)


class Gates(_Frozen):
    """Validity gates: a run that fails one is marked invalid, whatever its numbers."""

    cpu_percent_max: float = Field(90.0, gt=0, le=100)
    schedule_lag_p99_ms: float = Field(5.0, gt=0)
    require_usage: bool = True
    truth_ttft_error_p95_ms: float | None = Field(None, gt=0)
    late_first_token_ms: float = Field(5.0, gt=0)
    late_first_tokens_pct_max: float = Field(1.0, ge=0, le=100)


class EmulatorShape(_Frozen):
    """The emulator ``harness load --emulator`` starts for the run (ignored otherwise).

    Why 20 tokens/s by default: it is what a 4-8B model decodes at on a laptop, and a generator
    measured against a server streaming 500 tokens/s measures mostly itself (2 ms between
    chunks, under the generator's own scheduling noise)."""

    tokens_per_s: float = Field(20.0, gt=0, le=2000)
    ttft_ms: float = Field(50.0, ge=0, le=60_000)
    parallel: int = Field(64, ge=1, le=MAX_USERS)


class Scenario(_Frozen):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    request: RequestShape = RequestShape()
    load: LoadShape = LoadShape()
    slo: SLO = SLO()
    gates: Gates = Gates()
    emulator: EmulatorShape = EmulatorShape()
    faults: dict[str, Any] | None = None
    measures_jit: bool = False

    @model_validator(mode="after")
    def _fault_plan(self) -> Scenario:
        if self.faults is not None:
            from harness.faults import FaultPlan

            try:
                FaultPlan.model_validate(self.faults)
            except ValidationError as exc:
                raise ValueError(f"faults: not a valid fault plan: {one_line(exc)}") from None
        return self

    def with_overrides(self, *, users: int | None = None, duration_s: float | None = None
                       ) -> Scenario:
        """CLI overrides: ``users`` replaces closed-loop levels (open loop: the concurrency cap);
        ``duration_s`` is the length of each level."""
        load = self.load
        update: dict[str, Any] = {}
        if users is not None:
            if users < 1:
                raise ScenarioError(f"--users must be >= 1, got {users}")
            update["levels" if load.mode == "closed" else "max_concurrency"] = (
                (users,) if load.mode == "closed" else users
            )
        if duration_s is not None:
            if duration_s <= load.warmup_s:
                raise ScenarioError(
                    f"--duration {duration_s}s must exceed the scenario's warmup_s "
                    f"({load.warmup_s}s)"
                )
            update["level_duration_s"] = duration_s
        if not update:
            return self
        try:
            new_load = LoadShape.model_validate({**load.model_dump(), **update})
        except ValidationError as exc:
            raise ScenarioError(f"scenario {self.name!r}: invalid override: {one_line(exc)}"
                                ) from None
        return self.model_copy(update={"load": new_load})


def load_scenario(path: Path | str) -> Scenario:
    where = Path(path)
    try:
        raw = tomllib.loads(where.read_text("utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {where}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {where} is not valid TOML: {exc}") from exc
    return parse_scenario(raw, where=str(where))


def parse_scenario(raw: dict[str, Any], *, where: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(f"scenario {where} is invalid: {one_line(exc)}") from None


def one_line(exc: ValidationError) -> str:
    """Every problem as ``field: message``, on one line (a message never spans lines)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: "
        f"{' '.join(str(err['msg']).removeprefix('Value error, ').split())}"
        for err in exc.errors()
    )
