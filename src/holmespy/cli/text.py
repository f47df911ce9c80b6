"""How the CLI writes for people: aligned tables, quantities with their units, warnings.

Whatever came from a bundle, a key or a dump is data from elsewhere: it goes
through `holmespy.printable` (control, bidi and separator characters escaped)
before it is printed, and a cell or a field is cut to a bounded width, so no
file can take over the terminal or print a line of millions of characters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import sys
from collections.abc import Collection, Sequence
from typing import TextIO

from holmespy.printable import printable, printable_lines

_PLAIN = re.compile(r"[\n\x20-\x7e]*")
CELL_WIDTH = 200
"""The widest a table cell or a field from a bundle is printed; longer ones end with "…"."""


def field(value: object, limit: int = CELL_WIDTH) -> str:
    """A value from a bundle, key or dump, as it may be printed: escaped and bounded."""
    return printable(value if isinstance(value, str) else str(value), limit)


def warn(message: str) -> None:
    print(f"holmespy: {printable(message, 4 * CELL_WIDTH)}", file=sys.stderr)


class SafeStream:
    """A text stream that escapes every control character written to it but line feeds.

    `main` puts it in front of stdout: each verb escapes the fields it prints,
    and this is the net under them, so a field a verb forgot still cannot
    reach the terminal raw.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        # Most writes are plain ASCII (json.dump writes token by token): checked in C.
        self.stream.write(text if _PLAIN.fullmatch(text) else printable_lines(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def table(rows: Sequence[Sequence[str]], right: Collection[str] = ()) -> str:
    """Columns padded to their widest cell; columns whose header is in `right` align right.

    Cells are escaped and cut to `CELL_WIDTH`: they may hold names from a bundle.
    """
    cells_of = [[field(cell) for cell in row] for row in rows]
    header = cells_of[0]
    widths = [max(len(row[i]) for row in cells_of) for i in range(len(header))]
    lines = []
    for row in cells_of:
        cells = [
            cell.rjust(width) if name in right else cell.ljust(width)
            for cell, width, name in zip(row, widths, header, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def age(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def number(value: object) -> str:
    """A number for people: 12,003 or 3.14; a huge one as 1.2e+21; "?" for NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return field(value)
    try:
        if not math.isfinite(value):
            return "?"
        if abs(value) >= 1e15:  # a count or a percentage this large is noise: keep it short
            return f"{float(value):.3g}"
    except OverflowError:  # an int beyond any float
        return "?"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{int(value):,}"


def quantity(value: float, unit: str) -> str:
    """A profile value in its unit, scaled for reading: 1.52 s, 3.4 MiB, 12,003."""
    if unit == "nanoseconds":
        for name, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {name}"
        return f"{value:.0f} ns"
    if unit == "bytes":
        return size(value)
    return f"{value:,.0f}"


def size(value: float) -> str:
    for name, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {name}"
    return f"{value:.0f} B"


def signed(text: str, value: float) -> str:
    return ("+" + text) if value > 0 else text


def percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
