"""Small inline-SVG charts for the HTML report: line charts and horizontal bars, no JavaScript needed.

Each chart is one `<svg>` element with axes, ticks, a legend and a `<title>` per series (the hover
text), so the report is a single file that opens offline.
"""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 48, 40
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.3g}"


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str,
               x_ticks: list[tuple[float, str]] | None = None, chart_id: str = "") -> str:
    """Lines through (x, y) points, one per named series, on shared linear axes."""
    points = [p for values in series.values() for p in values]
    if not points:
        return f'<p class="empty">{escape(title)}: no data</p>'
    x_min, x_max = min(p[0] for p in points), max(p[0] for p in points)
    if x_max == x_min:
        x_max = x_min + 1
    y_max = _nice_max(max(p[1] for p in points))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x_min) / (x_max - x_min) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - y / y_max * plot_h

    parts = [_frame(title, chart_id), _axes(plot_w, plot_h, x_label, y_label)]
    for i in range(5):
        y = y_max * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_fmt(y)}</text>')
    ticks = x_ticks or _ticks(x_min, x_max)
    for x, label in ticks:
        parts.append(f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{escape(label)}</text>')
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{path}">'
                     f"<title>{escape(name)}</title></polyline>")
        parts.append(f'<rect x="{LEFT + 8 + 120 * index}" y="26" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{LEFT + 22 + 120 * index}" y="35">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: dict[str, float], unit: str = "", chart_id: str = "") -> str:
    """Horizontal bars, one per label (each server's share of requests, say)."""
    if not bars:
        return f'<p class="empty">{escape(title)}: no data</p>'
    height = 28 + 28 * len(bars) + 12
    top = _nice_max(max(bars.values()))
    plot_w = WIDTH - 240 - 64  # room for the value printed after the longest bar
    parts = [f'<svg class="chart" id="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">'
             f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" class="title">{escape(title)}</text>']
    for index, (label, value) in enumerate(bars.items()):
        y = 28 + 28 * index
        width = value / top * plot_w
        parts.append(f'<text x="228" y="{y + 15}" text-anchor="end">{escape(label[-36:])}</text>'
                     f'<rect class="series" x="236" y="{y}" width="{width:.1f}" height="20" fill="{COLOURS[0]}">'
                     f"<title>{escape(label)}: {_fmt(value)}{escape(unit)}</title></rect>"
                     f'<text x="{240 + width:.1f}" y="{y + 15}">{_fmt(value)}{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ticks(low: float, high: float) -> list[tuple[float, str]]:
    """About six round-numbered ticks between low and high."""
    step = _nice_max((high - low) / 6)
    first = math.ceil(low / step) * step
    count = int((high - first) / step) + 1
    return [(first + i * step, _fmt(first + i * step)) for i in range(count)]


def _frame(title: str, chart_id: str) -> str:
    return (f'<svg class="chart" id="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">'
            f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" class="title">{escape(title)}</text>')


def _axes(plot_w: int, plot_h: int, x_label: str, y_label: str) -> str:
    return (f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" class="axis"/>'
            f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" class="axis"/>'
            f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(x_label)}</text>'
            f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(y_label)}</text>')
