"""Inline SVG charts for the self-contained HTML report and the live page (no JavaScript, no
network): line charts, latency-vs-throughput curves and CDFs.

Why these shapes: a sweep is read as latency against the throughput it bought (each point one
level, labelled with its users or rate), not two metrics of different units on one axis; a
latency distribution is read as a CDF per level (the tail is visible, not summarised away).
Charts scale to the page (``viewBox``, ``width: 100%``) and keep the legend under the plot, so a
390 px phone shows them at a readable size; text stays 12 px at 1:1 and never below ~9 px.

Every text that reaches the SVG (titles, series names, tick labels) is escaped here, because the
result is inserted into an autoescaped template as markup.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, PLOT_H = 480, 200
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 52, 14, 26, 38
LEGEND_ROW = 16
LEGEND_COLUMNS = 3
COLOURS = ("#3b6fb6", "#b54708", "#067647", "#b42318", "#6941c6", "#5b6474", "#0e7490",
           "#a16207")
CDF_POINTS = 120  # points kept per CDF series: enough for the eye, small in the page

Point = tuple[float, float | None]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def _fmt(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def line_chart(title: str, x_label: str, y_label: str,
               series: Sequence[tuple[str, Sequence[Point]]], *, log_x: bool = False,
               labels: Sequence[Sequence[str]] | None = None, step: bool = False,
               y_max: float | None = None) -> Markup:
    """A multi-series chart; points with a None y are skipped. ``labels[i][j]`` annotates point
    j of series i (a sweep's level); ``step`` draws a staircase (a CDF)."""

    def fx(x: float) -> float:
        return math.log2(x) if log_x and x > 0 else x

    points = [(fx(x), y) for _, pts in series for x, y in pts if y is not None]
    if not points:
        return Markup(f'<p class="muted">{escape(title)}: no data</p>')
    xs = [p[0] for p in points]
    ys = [p[1] for p in points if p[1] is not None]
    x_lo, x_hi = min(xs), max(xs)
    y_lo = 0.0
    y_hi = y_max if y_max is not None else max(max(ys), 1e-9) * 1.1
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    plot_w = WIDTH - MARGIN_L - MARGIN_R
    legend_rows = math.ceil(len(series) / LEGEND_COLUMNS)
    height = MARGIN_T + PLOT_H + MARGIN_B + legend_rows * LEGEND_ROW + 4

    def sx(x: float) -> float:
        return MARGIN_L + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return MARGIN_T + PLOT_H - (y - y_lo) / (y_hi - y_lo) * PLOT_H

    bottom = MARGIN_T + PLOT_H
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'class="chart" role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<line x1="{MARGIN_L}" y1="{bottom}" x2="{MARGIN_L + plot_w}" y2="{bottom}" '
        'stroke="#888"/>',
        f'<line x1="{MARGIN_L}" y1="{MARGIN_T}" x2="{MARGIN_L}" y2="{bottom}" stroke="#888"/>',
    ]
    for tick in _ticks(y_lo, y_hi):
        y = sy(tick)
        parts.append(f'<line x1="{MARGIN_L}" y1="{y:.1f}" x2="{MARGIN_L + plot_w}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{MARGIN_L - 5}" y="{y + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{escape(_fmt(tick))}</text>')
    x_values = sorted(set(xs))
    crowded = any(sx(b) - sx(a) < 40 for a, b in itertools.pairwise(x_values))
    shown = x_values if len(x_values) <= 8 and not step and not crowded else _ticks(x_lo, x_hi, 5)
    for tick in shown:
        label = 2 ** tick if log_x else tick
        parts.append(f'<text x="{sx(tick):.1f}" y="{bottom + 14}" font-size="11" '
                     f'text-anchor="middle">{escape(_fmt(label))}</text>')
    parts.append(f'<text x="{MARGIN_L + plot_w / 2:.0f}" y="{bottom + 30}" font-size="12" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{MARGIN_T + PLOT_H / 2:.0f}" font-size="12" '
                 f'transform="rotate(-90 12 {MARGIN_T + PLOT_H / 2:.0f})" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    column_w = (WIDTH - 8) / LEGEND_COLUMNS
    for index, (name, pts) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        kept = [(x, y) for x, y in pts if y is not None]
        coords = [(sx(fx(x)), sy(y)) for x, y in kept]
        if coords:
            if step:
                stair = [coords[0]]
                for (_, y0), (x1, y1) in itertools.pairwise(coords):
                    stair += [(x1, y0), (x1, y1)]
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in stair)
            else:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{path}"/>')
            if not step:
                parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'
                             for x, y in coords)
            if labels is not None and index < len(labels):
                right = MARGIN_L + plot_w * 0.8
                parts.extend(
                    f'<text x="{x + (-4 if x > right else 4):.1f}" y="{y - 6:.1f}" '
                    f'font-size="11" fill="{colour}" '
                    f'text-anchor="{"end" if x > right else "start"}">{escape(text)}</text>'
                    for (x, y), text in zip(coords, labels[index], strict=False))
        row, col = divmod(index, LEGEND_COLUMNS)
        lx = 4 + col * column_w
        ly = bottom + MARGIN_B + row * LEGEND_ROW + 10
        parts.append(f'<rect x="{lx:.0f}" y="{ly - 9}" width="10" height="10" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{lx + 14:.0f}" y="{ly}" font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def cdf_points(values_ms: Sequence[float]) -> list[Point]:
    """(value, fraction of requests at or below it), thinned to ``CDF_POINTS`` (the last point,
    the maximum, always kept)."""
    ordered = sorted(values_ms)
    n = len(ordered)
    if not n:
        return []
    stride = max(1, math.ceil(n / CDF_POINTS))
    picks = list(range(0, n, stride))
    if picks[-1] != n - 1:
        picks.append(n - 1)
    return [(ordered[i], (i + 1) / n) for i in picks]


def cdf_chart(title: str, x_label: str, series: Sequence[tuple[str, Sequence[float]]]
              ) -> Markup:
    """One CDF per series (per level), as a staircase from 0 to 1."""
    return line_chart(title, x_label, "fraction of requests",
                      [(name, cdf_points(values)) for name, values in series],
                      step=True, y_max=1.0)
