"""The metric history of an event as an inline SVG chart, for `holmespy serve`.

The picture answers what the terminal chart of `show` answers: how far above
normal the metric was and which line it crossed. One point per sample, oldest
left, the firing one right and marked; each threshold worth seeing (the
level `average + diff` fired at, `abs`) is a dashed line with its name. The
markup is built here from numbers only, and every label that came from a
bundle is escaped, so no `event.json` can put markup in the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from holmespy.cli.text import number

WIDTH = 640
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 14, 28
"""Margins: the axis labels at the left, the threshold names at the right."""


def history_svg(
    values: Sequence[float],
    *,
    lines: Sequence[tuple[str, float]] = (),
    unit: str = "",
    caption: str = "",
    times: Sequence[str] = (),
) -> str:
    """An `<svg>` element; `lines` are (label, level) thresholds, `times` a tooltip each."""
    if not values:
        return ""
    levels = [level for _, level in lines]
    low, high = min([*values, *levels]), max([*values, *levels])
    floor = 0.0 if low >= 0 else low - (high - low) * 0.1
    ceiling = high + (high - floor) * 0.08 or 1.0
    span = (ceiling - floor) or 1.0
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(index: int) -> float:
        return LEFT + (inner_w * index / (len(values) - 1) if len(values) > 1 else inner_w / 2)

    def y(value: float) -> float:
        return TOP + inner_h * (1 - (value - floor) / span)

    suffix = "%" if unit == "%" else ""
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{_e(caption)}">',
        f"<title>{_e(caption)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}"'
        f' y2="{HEIGHT - BOTTOM}"/>',
        _text(LEFT - 6, y(ceiling) + 4, f"{number(_round(ceiling))}{suffix}", "end"),
        _text(LEFT - 6, y(floor) + 4, f"{number(_round(floor))}{suffix}", "end"),
        _text(LEFT, HEIGHT - 8, "oldest", "start"),
        _text(WIDTH - RIGHT, HEIGHT - 8, "fired", "end"),
    ]
    for label, level in lines:
        at = y(level)
        out.append(
            f'<line class="threshold" x1="{LEFT}" y1="{at:.1f}" x2="{WIDTH - RIGHT}"'
            f' y2="{at:.1f}"/>'
        )
        out.append(_text(WIDTH - RIGHT + 6, at + 4, label, "start", "threshold-label"))
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    out.append(f'<polyline class="series" points="{points}"/>')
    for i, value in enumerate(values):
        last = i == len(values) - 1
        when = times[i] if i < len(times) else ""
        out.append(
            f'<circle class="{"fired" if last else "point"}" cx="{x(i):.1f}" cy="{y(value):.1f}"'
            f' r="{5 if last else 3}"><title>{_e(when)} {_e(number(value))}{suffix}</title>'
            "</circle>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _round(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return round(value, digits)


def _text(x: float, y: float, text: str, anchor: str, cls: str = "label") -> str:
    return f'<text class="{cls}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{_e(text)}</text>'


def _e(text: str) -> str:
    return html.escape(text, quote=True)
