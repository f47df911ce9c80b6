"""Reading `heap-holders.txt` back: the top holders for `show`, what grew by holder for `diff`.

The writer is `holmespy.profilers.holders.render`. The reader takes the
holder blocks (`[n] label`, a line about the root, a `holds ...` line with
exact figures and growth, then the types it holds) and treats anything else
as text to skip, so a newer or damaged file yields less, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from holmespy.cli.errors import CLIError
from holmespy.cli.reading import read_text
from holmespy.cli.text import field as printable_field
from holmespy.cli.text import number, signed, size, table

FILE = "heap-holders.txt"
HEADER = "holmespy heap holders"
_BLOCK = re.compile(r"\[(\d+)\] (.+)")
_HOLDS = re.compile(
    r"    holds ([\d,]+) objects, ([\d,]+) bytes \([^)]*\)"
    r"(?:; growth (>=)?([+-][\d,]+|0) objects, (?:>=)?([+-][\d,]+|0) bytes)?"
)
_ROW = re.compile(r"\s*([\d,]+)\s+([\d,]+)  (\S.*)")
_REACHED = re.compile(r"reached: ([\d,]+) objects, ([\d,]+) bytes")
_SECTION = "holders by bytes"
_INTERPRETER = ("(interpreter", "(other ")


def _int(text: str) -> int:
    return int(text.replace(",", "").replace("+", ""))


@dataclass
class HolderRow:
    label: str
    about: str
    objects: int
    bytes: int
    growth: tuple[int, int, bool] | None = None
    """(objects, bytes, bound) since the previous snapshot, as the file says; None without one."""
    types: list[tuple[str, int, int]] = field(default_factory=list)
    """(type, objects, bytes), largest first."""

    @property
    def named(self) -> bool:
        """A root a person can act on, not the interpreter's or a sum of small ones."""
        return not self.label.startswith(_INTERPRETER)


@dataclass
class HoldersFile:
    holders: list[HolderRow]
    objects: int | None
    bytes: int | None
    problems: list[str]
    """`!! ...` lines: a partial walk, or why there was none."""


def read_holders(text: str, what: str) -> HoldersFile:
    if not text.startswith(HEADER):
        raise CLIError(f"{what}: not a holmespy heap-holders file")
    holders: list[HolderRow] = []
    objects = total = None
    in_section = False
    current: HolderRow | None = None
    pending: tuple[str, str] | None = None  # label, about: waiting for the holds line
    problems = [line[3:] for line in text.split("\n") if line.startswith("!! ")]
    for line in text.split("\n"):
        if match := _REACHED.match(line):
            objects, total = _int(match.group(1)), _int(match.group(2))
        if line.startswith(_SECTION):
            in_section = True
            continue
        if not in_section:
            continue
        if not line.strip():
            break  # the section ends with a blank line
        if block := _BLOCK.fullmatch(line):
            current, pending = None, (block.group(2), "")
        elif pending is not None and (holds := _HOLDS.fullmatch(line)):
            growth = None
            if holds.group(4) is not None:
                growth = (_int(holds.group(4)), _int(holds.group(5)), holds.group(3) == ">=")
            current = HolderRow(
                pending[0], pending[1], _int(holds.group(1)), _int(holds.group(2)), growth
            )
            holders.append(current)
            pending = None
        elif pending is not None and line.startswith("    "):
            pending = (pending[0], line.strip())
        elif current is not None and (row := _ROW.fullmatch(line)):
            current.types.append((row.group(3), _int(row.group(2)), _int(row.group(1))))
    if not holders and not problems:
        raise CLIError(f"{what}: a heap-holders file without holders (damaged?)")
    return HoldersFile(holders, objects, total, problems)


def load_holders(path: Path, max_size: int) -> HoldersFile:
    return read_holders(read_text(path, max_size), str(path))


# -- show -------------------------------------------------------------------------------------


def holders_part(
    path: Path, top: int, max_size: int, section: Callable[[str, str], str]
) -> list[str]:
    """The top holders of one bundle, one line each with what they mostly hold."""
    found = load_holders(path, max_size)
    reached = (
        f"{found.objects:,} objects, {size(found.bytes)} reached"
        if found.objects is not None and found.bytes is not None
        else "objects reached"
    )
    named = [h for h in found.holders if h.named]
    grown = any(h.growth is not None for h in named)
    out = [section(path.name, f"{reached}; who holds them")]
    out += [f"!! {printable_field(problem)}" for problem in found.problems]
    if not named:
        return [*out, "  no holders"]
    header = ["bytes", "objects", *(["growth"] if grown else []), "holder", "mostly"]
    rows = [header]
    for h in named[:top]:
        mostly = ", ".join(f"{o:,} {n} {size(b)}" for n, o, b in h.types[:2])
        cells = [size(h.bytes), f"{h.objects:,}"]
        if grown:
            cells.append(_growth(h.growth))
        rows.append([*cells, f"{h.label} ({h.about})", mostly])
    lines = table(rows, right={"bytes", "objects", "growth"}).splitlines()
    return out + ["  " + line for line in lines]


def _growth(growth: tuple[int, int, bool] | None) -> str:
    if growth is None:
        return "-"
    mark = ">=" if growth[2] else ""
    return mark + signed(size(growth[1]), growth[1])


# -- diff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HolderChange:
    holder: str
    before_objects: int
    after_objects: int
    before_bytes: int
    after_bytes: int
    bound: bool = False
    """True when `before` is only a ceiling: the holder was below A's listed ones."""

    @property
    def growth_bytes(self) -> int:
        return self.after_bytes - self.before_bytes

    @property
    def growth_objects(self) -> int:
        return self.after_objects - self.before_objects


def holder_changes(a: HoldersFile, b: HoldersFile) -> list[HolderChange]:
    """What each named holder gained from A to B; one missing from A's list had at most its
    smallest listed holder's figures."""
    before = {h.label: h for h in a.holders if h.named}
    floor = min((h.bytes for h in before.values()), default=0)
    changes = []
    for h in b.holders:
        if not h.named:
            continue
        old = before.get(h.label)
        if old is not None:
            changes.append(HolderChange(h.label, old.objects, h.objects, old.bytes, h.bytes))
        else:
            changes.append(HolderChange(h.label, 0, h.objects, min(floor, h.bytes), h.bytes, True))
    return _ranked(changes)


def holder_growth(found: HoldersFile) -> list[HolderChange] | None:
    """The growth one file recorded against the snapshot before it (a gcheap bundle's view)."""
    grown = [h for h in found.holders if h.named and h.growth is not None]
    if not grown:
        return None
    return _ranked(
        [
            HolderChange(
                h.label,
                h.objects - h.growth[0],
                h.objects,
                h.bytes - h.growth[1],
                h.bytes,
                h.growth[2],
            )
            for h in grown
            if h.growth is not None
        ]
    )


def _ranked(changes: list[HolderChange]) -> list[HolderChange]:
    changes = [c for c in changes if c.growth_bytes or c.growth_objects]
    changes.sort(key=lambda c: (-c.growth_bytes, c.holder))
    return changes


def render_holder_changes(changes: list[HolderChange] | None, count: int) -> str:
    if changes is None:
        return f"by holder: {FILE} has no previous snapshot to compare with"
    title = f"by holder (what each root reaches first, {FILE})"
    if not changes:
        return title + "\n  no change"
    rows = [["growth", "before", "after", "objects", "holder"]]
    for c in changes[:count]:
        mark = ">=" if c.bound else ""
        rows.append(
            [
                mark + signed(size(c.growth_bytes), c.growth_bytes),
                size(c.before_bytes),
                size(c.after_bytes),
                signed(number(c.growth_objects), c.growth_objects),
                c.holder,
            ]
        )
    lines = table(rows, right={"growth", "before", "after", "objects"}).splitlines()
    return title + "\n" + "\n".join("  " + line for line in lines)


def changes_json(changes: list[HolderChange] | None) -> list[dict[str, object]] | None:
    if changes is None:
        return None
    return [
        {
            "holder": c.holder,
            "before_bytes": c.before_bytes,
            "after_bytes": c.after_bytes,
            "growth_bytes": c.growth_bytes,
            "before_objects": c.before_objects,
            "after_objects": c.after_objects,
            "growth_objects": c.growth_objects,
            "bound": c.bound,
        }
        for c in changes
    ]


def beside(profile: Path) -> Path | None:
    """The holders file of the bundle a heap profile is in, when there is one."""
    path = profile.parent / FILE
    return path if path.is_file() else None


def holders_between(
    a: Path | None, b: Path | None, max_size: int
) -> tuple[bool, list[HolderChange] | None]:
    """(whether there is a by-holder view, its changes): two files are compared; one file
    (a gcheap bundle against itself) gives the growth it recorded."""
    if a is None or b is None:
        return False, None
    if a == b:
        return True, holder_growth(load_holders(a, max_size))
    return True, holder_changes(load_holders(a, max_size), load_holders(b, max_size))
