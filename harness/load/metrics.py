"""Per-request LLM load metrics with vLLM's names and definitions, and exact percentiles.

One request is one ``RequestRecord`` (also one JSONL line): raw timestamps only, so every derived
number can be recomputed and checked. The definitions (also written into the report):

- TTFT  = t_first_token - t_send. The first token is the first chunk carrying a content,
  reasoning or tool-call delta; a role-only or empty frame, or the response headers, never count.
- TTFO  = t_first_visible - t_send: first *visible* content (text or tool call, not reasoning).
- E2E   = t_last_token - t_send (the usage chunk and ``[DONE]`` do not extend it).
- TPOT  = (E2E - TTFT) / (N - 1), N = output tokens from the server (``usage`` or native
  ``stats``); when the server gave no count, N is the number of content chunks and the record is
  flagged ``usage_missing`` (the run's validity gate reports it).
- ICL   = every gap between successive content chunks, pooled over requests (vLLM's "ITL").
- ITL   = a request's mean gap between content chunks: one value per request, so that Locust's
  per-request view (one entry per request, never one per chunk) can aggregate it.
- request tokens/s = N / E2E of one request.
- tokens per chunk = N / content chunks (1.0 unless the server coalesces tokens).
- schedule lag = t_send - t_intended; queue-inclusive E2E = t_last_token - t_intended (open loop:
  coordinated omission made visible).

Why exact percentiles: Locust buckets response times (2 significant figures above 100 ms); the
report's numbers come from the raw records instead, with linear interpolation between ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    """What one request did, as raw timestamps (epoch seconds at perf_counter precision)."""

    endpoint: str
    model: str
    stream: bool
    t_intended: float
    t_send: float
    t_first_token: float | None = None
    t_first_visible: float | None = None
    t_last_token: float | None = None
    t_done: float | None = None
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0
    n_server: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    ok: bool = True
    error_kind: str | None = None
    error: str | None = None
    status: int | None = None
    server_ttft_s: float | None = None  # LM Studio's stats TTFT, or llama.cpp's prompt_ms
    server_tps: float | None = None
    server_itl_s: float | None = None  # llama.cpp's predicted_per_token_ms (its own decode)
    worker: int = 0
    user: int = 0
    level: int = 0
    warmup: bool = False
    first_read_tokens: int = 1  # token events in the read that carried the first token
    request_id: str | None = None  # sent as X-Request-Id: pairs the record with server truth
    paced: bool = False  # reads after the first token were batched: single gaps are not kept

    def to_json(self) -> dict[str, Any]:
        """``dataclasses.asdict`` without its per-value ``deepcopy`` (one call per request on the
        worker's hot path; 16x cheaper): every field is a scalar except ``gaps``, copied."""
        row = {name: getattr(self, name) for name in _RECORD_FIELDS}
        row["gaps"] = list(self.gaps)
        return row

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        return cls(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})

    # -- derived metrics (seconds) ---------------------------------------------------------------

    @property
    def usage_missing(self) -> bool:
        return self.ok and self.n_server is None

    @property
    def output_tokens(self) -> int:
        """N: the server's count, else the content-chunk count (flagged by ``usage_missing``)."""
        return self.n_server if self.n_server is not None else self.chunks

    @property
    def ttft(self) -> float | None:
        return None if self.t_first_token is None else self.t_first_token - self.t_send

    @property
    def ttfo(self) -> float | None:
        return None if self.t_first_visible is None else self.t_first_visible - self.t_send

    @property
    def e2e(self) -> float | None:
        end = self.t_last_token if self.t_last_token is not None else self.t_done
        return None if end is None else end - self.t_send

    @property
    def tpot(self) -> float | None:
        ttft, e2e, n = self.ttft, self.e2e, self.output_tokens
        if ttft is None or e2e is None or n < 2:
            return None
        return (e2e - ttft) / (n - 1)

    @property
    def itl(self) -> float | None:
        """This request's mean inter-chunk gap (None with fewer than two content chunks)."""
        gaps = self.gaps
        return sum(gaps) / len(gaps) if gaps else None

    @property
    def ttft_uncertainty(self) -> float:
        """How late TTFT may be measured: when the first token was read together with k-1
        later ones, it arrived up to k-1 token intervals before the read's time."""
        if self.first_read_tokens <= 1:
            return 0.0
        return (self.first_read_tokens - 1) * (self.tpot or 0.0)

    @property
    def tokens_per_chunk(self) -> float | None:
        return None if not self.chunks else self.output_tokens / self.chunks

    @property
    def output_tps(self) -> float | None:
        e2e = self.e2e
        return None if not e2e or e2e <= 0 else self.output_tokens / e2e

    @property
    def schedule_lag(self) -> float:
        return self.t_send - self.t_intended

    @property
    def queued_e2e(self) -> float | None:
        e2e = self.e2e
        return None if e2e is None else e2e + self.schedule_lag


_RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Exact percentile with linear interpolation between closest ranks (numpy's default).

    ``values`` need not be sorted; ``q`` is in [0, 100]. None for no values.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    frac = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * frac


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of one metric in milliseconds (or tokens for token metrics)."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float | None], scale: float = 1000.0) -> Distribution:
        data = sorted(v * scale for v in values if v is not None)
        if not data:
            return cls(0, None, None, None, None, None, None)
        return cls(
            count=len(data),
            mean=sum(data) / len(data),
            p50=percentile(data, 50),
            p90=percentile(data, 90),
            p95=percentile(data, 95),
            p99=percentile(data, 99),
            max=data[-1],
        )

    def at(self, q: int) -> float | None:
        return {50: self.p50, 90: self.p90, 95: self.p95, 99: self.p99}[q]


def pooled_gaps(records: Iterable[RequestRecord]) -> list[float]:
    """Every inter-chunk gap, from records whose reads were not batched (a batched read holds
    several chunks at one stamp, so its single gaps are not the server's)."""
    return [g for r in records if not r.paced for g in r.gaps]
