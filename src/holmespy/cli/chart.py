"""The metric history of an event as a small bar chart for a terminal.

One bar per sample, oldest first, the firing sample last, drawn with
eighth-block characters so an 8-row chart resolves 64 levels. The vertical
scale spans the samples and the thresholds worth seeing (the level the
average + diff rule fired at, and `abs`), each drawn as a dotted line with
its name at the right, so the picture answers "how far above normal was
it, and which line did it cross".
"""

from __future__ import annotations

from collections.abc import Sequence

from holmespy.cli.text import number

BLOCKS = " ▁▂▃▄▅▆▇█"
BAR = 2
GAP = 1


def bar_chart(
    values: Sequence[float],
    *,
    lines: Sequence[tuple[str, float]] = (),
    rows: int = 8,
    unit: str = "",
    x_labels: tuple[str, str] = ("", ""),
) -> list[str]:
    """The chart's lines; `lines` are (label, value) thresholds drawn across it."""
    if not values:
        return []
    shown = [value for _, value in lines]
    low = min([*values, *shown])
    high = max([*values, *shown])
    # Bars stand on a floor below the smallest value so the smallest still shows.
    floor = low - (high - low) * 0.15 if high > low else low - (abs(low) or 1.0)
    if low >= 0:
        floor = max(0.0, floor)  # counts and percentages have a natural zero
    span = (high - floor) or 1.0  # every value and line at zero: a flat chart, not a crash
    levels = rows * 8

    def height(value: float) -> int:
        return max(1, round((value - floor) / span * levels))

    heights = [height(v) for v in values]
    marks: dict[int, str] = {}
    for label, value in lines:
        row = rows - 1 - min(rows - 1, int((value - floor) / span * rows))
        marks[row] = f"{marks[row]}, {label}" if row in marks else label
    axis = [f"{number(high)}{unit}", f"{number(floor)}{unit}"]
    pad = max(len(a) for a in axis)
    out = []
    for row in range(rows):
        bottom = (rows - 1 - row) * 8
        cells = []
        for h in heights:
            fill = min(8, max(0, h - bottom))
            char = BLOCKS[fill]
            if fill == 0 and row in marks:
                char = "┈"
            cells.append(char * BAR + ("┈" if row in marks else " ") * GAP)
        label = axis[0] if row == 0 else axis[1] if row == rows - 1 else ""
        tail = f" {marks[row]}" if row in marks else ""
        out.append(f"{label.rjust(pad)} ┤{''.join(cells).rstrip()}{tail}")
    width = len(values) * (BAR + GAP)
    out.append(" " * pad + " └" + "─" * width)
    left, right = x_labels
    out.append(" " * (pad + 2) + left + right.rjust(max(0, width - len(left))))
    return out
