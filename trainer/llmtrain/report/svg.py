"""A chart as inline SVG: axes with round ticks, one polyline per series, a legend. Pure text, no library.

Coordinates come from `Scale` (value -> pixel, linear or log10); a series longer than `MAX_POINTS` keeps,
per bucket of consecutive points, the first, lowest, highest and last (spikes survive the thinning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from .series import Chart

WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 16, 40  # margins around the plot area
MAX_POINTS = 4000
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


@dataclass(frozen=True)
class Scale:
    """Maps [low, high] onto [start, end] pixels (end < start for a y axis: up is smaller)."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def _t(self, value: float) -> float:
        return math.log10(value) if self.log else value

    def pixel(self, value: float) -> float:
        low, high = self._t(self.low), self._t(self.high)
        return self.start + (self._t(value) - low) / (high - low) * (self.end - self.start)


def bounds(values: list[float], log: bool = False, pad: float = 0.05) -> tuple[float, float]:
    """The axis range for `values`: a little room around them; a constant gets a unit of room."""
    low, high = min(values), max(values)
    if log:
        low, high = math.log10(low), math.log10(high)
    if high == low:
        low, high = low - (1 if log else max(abs(low) * 0.1, 1e-12)), high + (1 if log else max(abs(high) * 0.1, 1e-12))
    else:
        room = (high - low) * pad
        low, high = low - room, high + room
    return (10**low, 10**high) if log else (low, high)


def ticks(low: float, high: float, log: bool = False, count: int = 5) -> list[float]:
    """Round values within [low, high]: 1, 2 or 5 times a power of ten apart; on a log axis the powers of ten
    (over less than three of them: 1, 2 and 5 times them; else round linear ones)."""
    if log:
        first, last = math.ceil(math.log10(low)), math.floor(math.log10(high))
        if last - first + 1 >= 3:
            every = max(1, math.ceil((last - first + 1) / count))
            return [10.0**e for e in range(first, last + 1, every)]
        near = range(math.floor(math.log10(low)), math.floor(math.log10(high)) + 1)
        found = [m * 10.0**e for e in near for m in (1, 2, 5) if low <= m * 10.0**e <= high]
        if len(found) >= 2:
            return found
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def thin(points: list[tuple[int, float]], limit: int = MAX_POINTS) -> list[tuple[int, float]]:
    """At most `limit` points: per bucket the first, lowest, highest and last, in step order."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / (limit // 4))
    kept: list[tuple[int, float]] = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        chosen = {0, len(bucket) - 1}
        chosen.add(min(range(len(bucket)), key=lambda i: bucket[i][1]))
        chosen.add(max(range(len(bucket)), key=lambda i: bucket[i][1]))
        kept += [bucket[i] for i in sorted(chosen)]
    return kept


def label(value: float) -> str:
    """A tick's text: short, exact for round values (3e-4, 1.5, 12k)."""
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 1e4 or size < 1e-2:
        return f"{value:.3g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    return f"{value:.4g}"


def chart_svg(chart: Chart, width: int = WIDTH, height: int = HEIGHT) -> str:
    """The chart as an <svg> element (its series must have points)."""
    points = [p for s in chart.series for p in s.points]
    steps, values = [p[0] for p in points], [p[1] for p in points]
    x_low, x_high = (min(steps), max(steps)) if min(steps) < max(steps) else (min(steps) - 1, max(steps) + 1)
    y_low, y_high = bounds(values, chart.log_scale)
    x = Scale(x_low, x_high, LEFT, width - RIGHT)
    y = Scale(y_low, y_high, height - BOTTOM, TOP, chart.log_scale)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(chart.key)}"'
        f' width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(chart.title)}">',
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{width - LEFT - RIGHT}" height="{height - TOP - BOTTOM}"/>',
    ]
    parts += _y_axis(y, width)
    parts += _x_axis(x, height)
    for index, curve in enumerate(chart.series):
        color = COLORS[index % len(COLORS)]
        drawn = thin(curve.points)
        coordinates = " ".join(f"{x.pixel(s):.2f},{y.pixel(v):.2f}" for s, v in drawn)
        parts.append(
            f'<polyline class="series" data-series="{escape(curve.label)}" fill="none" stroke="{color}"'
            f' stroke-width="1.5" points="{coordinates}"/>'
        )
        if len(drawn) == 1:  # a polyline of one point draws nothing
            s, v = drawn[0]
            parts.append(f'<circle cx="{x.pixel(s):.2f}" cy="{y.pixel(v):.2f}" r="3" fill="{color}"/>')
    parts += _legend(chart, width)
    parts.append("</svg>")
    return "\n".join(parts)


def _y_axis(y: Scale, width: int) -> list[str]:
    out = []
    for value in ticks(y.low, y.high, y.log):
        pixel = y.pixel(value)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{pixel:.2f}" x2="{width - RIGHT}" y2="{pixel:.2f}"/>')
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{pixel + 4:.2f}" text-anchor="end">{label(value)}</text>')
    return out


def _x_axis(x: Scale, height: int) -> list[str]:
    out = []
    for value in ticks(x.low, x.high):
        if value != int(value):
            continue  # steps are whole
        pixel = x.pixel(value)
        out.append(f'<line class="grid" x1="{pixel:.2f}" y1="{TOP}" x2="{pixel:.2f}" y2="{height - BOTTOM}"/>')
        out.append(
            f'<text class="tick" x="{pixel:.2f}" y="{height - BOTTOM + 16}" text-anchor="middle">{int(value)}</text>'
        )
    out.append(f'<text class="axis" x="{(x.start + x.end) / 2:.2f}" y="{height - 6}" text-anchor="middle">step</text>')
    return out


def _legend(chart: Chart, width: int) -> list[str]:
    if len(chart.series) < 2:
        return []
    height = 16 * len(chart.series) + 4
    out = [
        f'<rect class="legend" x="{width - RIGHT - 156}" y="{TOP + 4}" width="150" height="{height}"'
        ' fill="#ffffff" fill-opacity="0.85"/>'
    ]
    for index, curve in enumerate(chart.series):
        top = TOP + 8 + 16 * index
        color = COLORS[index % len(COLORS)]
        out.append(f'<rect x="{width - RIGHT - 150}" y="{top}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text class="legend" x="{width - RIGHT - 135}" y="{top + 9}">{escape(curve.label)}</text>')
    return out
