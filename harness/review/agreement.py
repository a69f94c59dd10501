"""Agreement statistics between reviewers: Krippendorff's alpha and pairwise agreement.

Why alpha: it handles any number of reviewers, missing values (a reviewer who did not report a
finding) and nominal, ordinal or interval data, where percent agreement flatters panels whose
reviewers mostly agree by chance. Implemented here (about 40 lines, tested against Krippendorff's
published example) rather than pulling in numpy-based packages for three small matrices.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from itertools import combinations, permutations
from typing import Literal

Level = Literal["nominal", "ordinal", "interval"]
Value = Hashable | None


def krippendorff_alpha(units: Sequence[Sequence[Value]], level: Level = "nominal") -> float | None:
    """Krippendorff's alpha for ``units`` (one row per unit, one value per coder, None = missing).

    Returns None when alpha is undefined: fewer than two pairable values, or no variation at all
    (every value identical), where expected disagreement is zero.
    """
    coincidence: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        for a, b in permutations(range(m), 2):
            coincidence[(values[a], values[b])] += 1.0 / (m - 1)
    totals: Counter[Hashable] = Counter()
    for (c, _), weight in coincidence.items():
        totals[c] += weight  # type: ignore[assignment]
    n = sum(totals.values())
    if n < 2 or len(totals) < 2:
        return None
    categories = sorted(totals, key=_sort_key)

    def delta(c: Hashable, k: Hashable) -> float:
        if c == k:
            return 0.0
        if level == "nominal":
            return 1.0
        if level == "interval":
            return (float(c) - float(k)) ** 2  # type: ignore[arg-type]
        lo, hi = sorted((categories.index(c), categories.index(k)))
        between = sum(totals[categories[g]] for g in range(lo, hi + 1))
        return (between - (totals[c] + totals[k]) / 2) ** 2

    observed = sum(w * delta(c, k) for (c, k), w in coincidence.items())
    expected = sum(totals[c] * totals[k] * delta(c, k) for c in categories for k in categories)
    if expected == 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def _sort_key(value: Hashable) -> tuple[int, float | str]:
    if isinstance(value, int | float):
        return (0, float(value))
    return (1, str(value))


def jaccard(a: set[str], b: set[str]) -> float | None:
    """Share of items either reviewer reported that both reported (None if neither reported any)."""
    union = a | b
    if not union:
        return None
    return len(a & b) / len(union)


def phi(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Pearson correlation of two 0/1 vectors (None when either is constant)."""
    if len(a) != len(b) or len(a) < 2:
        return None
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in a)
    var_b = sum((y - mean_b) ** 2 for y in b)
    if var_a == 0 or var_b == 0:
        return None
    return cov / math.sqrt(var_a * var_b)


def effective_reviewers(vectors: Sequence[Sequence[int]]) -> float | None:
    """Kish-style effective number of independent reviewers from mean pairwise correlation.

    Why: correlated reviewers add little information ("nine judges, two effective votes"); a panel
    whose members all report the same things is closer to one reviewer than to N.
    """
    n = len(vectors)
    if n < 2:
        return None
    correlations = [phi(a, b) for a, b in combinations(vectors, 2)]
    known = [c for c in correlations if c is not None]
    if not known:
        return None
    mean_r = max(0.0, sum(known) / len(known))
    return n / (1 + (n - 1) * mean_r)
