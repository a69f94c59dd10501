"""Inline SVG line charts for the self-contained HTML report (no JavaScript, no network).

Every text that reaches the SVG (titles, series names, tick labels) is escaped here, because the
result is inserted into an autoescaped template as markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 260
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 60, 140, 28, 40
COLOURS = ("#3b6fb6", "#b54708", "#067647", "#b42318", "#6941c6", "#5b6474")

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
               series: Sequence[tuple[str, Sequence[Point]]], *, log_x: bool = False) -> Markup:
    """A small multi-series line chart; points with a None y are skipped."""
    import math

    def fx(x: float) -> float:
        return math.log2(x) if log_x and x > 0 else x

    points = [(fx(x), y) for _, pts in series for x, y in pts if y is not None]
    if not points:
        return Markup(f'<p class="muted">{escape(title)}: no data</p>')
    xs = [p[0] for p in points]
    ys = [p[1] for p in points if p[1] is not None]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = 0.0, max(max(ys), 1e-9) * 1.1
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    plot_w = WIDTH - MARGIN_L - MARGIN_R
    plot_h = HEIGHT - MARGIN_T - MARGIN_B

    def sx(x: float) -> float:
        return MARGIN_L + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return MARGIN_T + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<text x="{MARGIN_L}" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<line x1="{MARGIN_L}" y1="{MARGIN_T + plot_h}" x2="{MARGIN_L + plot_w}" '
        f'y2="{MARGIN_T + plot_h}" stroke="#888"/>',
        f'<line x1="{MARGIN_L}" y1="{MARGIN_T}" x2="{MARGIN_L}" y2="{MARGIN_T + plot_h}" '
        'stroke="#888"/>',
    ]
    for tick in _ticks(y_lo, y_hi):
        y = sy(tick)
        parts.append(f'<line x1="{MARGIN_L}" y1="{y:.1f}" x2="{MARGIN_L + plot_w}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{MARGIN_L - 6}" y="{y + 4:.1f}" font-size="10" '
                     f'text-anchor="end">{escape(_fmt(tick))}</text>')
    x_values = sorted({x for x, _ in points})
    shown = x_values if len(x_values) <= 12 else _ticks(x_lo, x_hi, 6)
    for tick in shown:
        label = 2 ** tick if log_x else tick
        parts.append(f'<text x="{sx(tick):.1f}" y="{MARGIN_T + plot_h + 14}" font-size="10" '
                     f'text-anchor="middle">{escape(_fmt(label))}</text>')
    parts.append(f'<text x="{MARGIN_L + plot_w / 2:.0f}" y="{HEIGHT - 6}" font-size="11" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{MARGIN_T + plot_h / 2:.0f}" font-size="11" '
                 f'transform="rotate(-90 12 {MARGIN_T + plot_h / 2:.0f})" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for index, (name, pts) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        coords = [(sx(fx(x)), sy(y)) for x, y in pts if y is not None]
        if coords:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{path}"/>')
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'
                         for x, y in coords)
        legend_y = MARGIN_T + 14 * index + 6
        parts.append(f'<rect x="{WIDTH - MARGIN_R + 10}" y="{legend_y - 8}" width="10" '
                     f'height="10" fill="{colour}"/>')
        parts.append(f'<text x="{WIDTH - MARGIN_R + 24}" y="{legend_y + 1}" '
                     f'font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
