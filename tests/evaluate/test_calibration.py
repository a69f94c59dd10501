"""Calibration: the scale rules (properties), and the probe measuring a server's real width.

The probe runs against emulators whose speed and slots are set, so the expected answer is known:
with one slot three requests queue (width 1), with three slots they run side by side (width 3).
Only ratios of times measured in the same run are compared, never absolute times.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from harness.calibration import (
    MAX_SCALE,
    UNSCALED,
    Calibration,
    calibrate,
    parallel_from,
    scale_for,
)
from harness.studio.catalog import load_catalog
from harness.studio.testing import running_studio

seconds = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
speeds = st.floats(min_value=0.01, max_value=1e5, allow_nan=False)


@given(ttft=st.none() | seconds, tps=st.none() | speeds)
def test_scale_is_between_1_and_the_cap_in_half_steps(ttft: float | None,
                                                      tps: float | None) -> None:
    scale = scale_for(ttft, tps)
    assert 1.0 <= scale <= MAX_SCALE and (scale * 2).is_integer()


@given(a=seconds, b=seconds, tps=st.none() | speeds)
def test_a_slower_first_token_never_shrinks_the_scale(a: float, b: float,
                                                      tps: float | None) -> None:
    low, high = sorted((a, b))
    assert scale_for(low, tps) <= scale_for(high, tps)


def test_the_emulators_speed_is_unscaled_and_a_small_engines_is_not() -> None:
    assert scale_for(0.02, 500.0) == 1.0
    assert scale_for(2.0, 40.0) == 4.0  # 2 s to the first token is 4x the 0.5 s reference
    assert scale_for(0.3, 5.0) == 4.0  # 5 tokens/s is 4x slower than 20


@given(single=st.floats(0.01, 100), width=st.integers(1, 16), ratio=st.floats(0.05, 50))
def test_parallel_is_between_1_and_the_width(single: float, width: int, ratio: float) -> None:
    assert 1 <= parallel_from(single, single * ratio, width) <= width


def test_parallel_from_queued_and_side_by_side_runs() -> None:
    assert parallel_from(1.0, 3.0, 3) == 1  # queued: three times as long
    assert parallel_from(1.0, 1.1, 3) == 3  # side by side: about as long as one


def test_limits_and_concurrency_follow_the_calibration() -> None:
    slow = Calibration(ttft_s=2.0, tokens_per_s=40.0, parallel=1, time_scale=4.0,
                       source="measured on m")
    timeouts = slow.timeouts()
    assert (timeouts.stream_idle, timeouts.read, timeouts.deadline) == (40.0, 60.0, 240.0)
    assert timeouts.connect == 2.0  # loopback connects do not get slower
    assert slow.concurrency(200) == 4 and slow.concurrency(3) == 3 and slow.concurrency(1) == 2
    assert UNSCALED.concurrency(200) == 200 and UNSCALED.timeouts().stream_idle == 10.0
    assert "x4" in slow.summary() and "1 request(s) at once" in slow.summary()


def slow_catalog():  # type: ignore[no-untyped-def]
    """The default catalog at a speed where generation, not overhead, dominates a request."""
    catalog = load_catalog(None)
    return catalog.model_copy(update={"defaults": catalog.defaults.model_copy(
        update={"ttft_s": 0.15, "tokens_per_s": 80.0, "reply_tokens": (24, 24)})})


def test_calibrate_measures_the_servers_width() -> None:
    measured = {}
    for slots in (1, 3):
        with running_studio(catalog=slow_catalog(), parallel=slots) as studio:
            measured[slots] = calibrate(studio.base_url, "qwen/qwen3-4b", width=3)
    assert measured[1].parallel == 1, measured
    assert measured[3].parallel >= 2, measured
    for calibration in measured.values():
        assert calibration.ttft_s is not None and calibration.tokens_per_s
        assert calibration.time_scale >= 1.0 and "qwen/qwen3-4b" in calibration.source
