"""Krippendorff's alpha against the published example, and the small agreement helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.review.agreement import effective_reviewers, jaccard, krippendorff_alpha, phi

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 coders, 12 units.
_A = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
_B = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
_C = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
_D = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
UNITS = [list(u) for u in zip(_A, _B, _C, _D, strict=True)]


@pytest.mark.parametrize(("level", "expected"), [("nominal", 0.743), ("interval", 0.849)])
def test_published_example(level: str, expected: float) -> None:
    alpha = krippendorff_alpha(UNITS, level)  # type: ignore[arg-type]
    assert alpha is not None
    assert alpha == pytest.approx(expected, abs=0.001)


def test_ordinal_between_nominal_and_interval() -> None:
    ordinal = krippendorff_alpha(UNITS, "ordinal")
    assert ordinal == pytest.approx(0.815, abs=0.001)


def test_undefined_cases() -> None:
    assert krippendorff_alpha([[1, None], [None, 2]]) is None  # nothing pairable
    assert krippendorff_alpha([[3, 3], [3, 3]]) is None  # no variation
    assert krippendorff_alpha([[1, 1], [2, 2]]) == 1.0


@given(
    st.lists(st.lists(st.one_of(st.none(), st.integers(1, 3)), min_size=3, max_size=3), max_size=12)
)
def test_alpha_is_at_most_one(units: list[list[int | None]]) -> None:
    for level in ("nominal", "ordinal", "interval"):
        alpha = krippendorff_alpha(units, level)
        assert alpha is None or alpha <= 1.0 + 1e-9


def test_pairwise_helpers() -> None:
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) is None
    assert phi([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert phi([1, 1], [0, 1]) is None
    identical = [[1, 0, 1, 0]] * 3
    assert effective_reviewers(identical) == pytest.approx(1.0)
    assert effective_reviewers([[1, 0, 1, 0], [0, 1, 0, 1]]) == pytest.approx(2.0)
