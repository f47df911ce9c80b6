"""Who holds the memory, for `show` and `diff`: the top holders, and what grew by holder.

Both read `heap-holders.json` (`holmespy.heapholders.HeapHolders`) through
`holmespy.cli.dumps`; nothing parses `heap-holders.txt` back. `show` prints
an older bundle's text as written; `diff` says it cannot compare it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from holmespy.cli.dumps import load_dump_at
from holmespy.cli.errors import CLIError
from holmespy.cli.text import field as printable_field
from holmespy.cli.text import number, signed, size, table
from holmespy.heapholders import FILE as DATA_FILE
from holmespy.heapholders import TEXT_FILE as FILE
from holmespy.heapholders import HeapHolders

__all__ = [
    "FILE",
    "HolderChange",
    "changes_json",
    "holder_changes",
    "holder_growth",
    "holders_between",
    "holders_part",
    "load_holders",
    "render_holder_changes",
]


def load_holders(path: Path, max_size: int) -> tuple[HeapHolders, list[str]]:
    """The snapshot of the bundle `path` (its heap-holders.txt) is in; `CLIError` when it has
    only the text (a bundle written before the JSON existed, or whose JSON is refused)."""
    dump = load_dump_at(path, max_size)
    if not isinstance(dump.data, HeapHolders):
        why = "; ".join(dump.problems) or f"no {DATA_FILE} (written by an older holmespy)"
        raise CLIError(f"{path}: cannot compare holders: {why}")
    return dump.data, dump.problems


# -- show -------------------------------------------------------------------------------------


def holders_part(
    found: HeapHolders, problems: list[str], top: int, section: Callable[[str, str], str]
) -> list[str]:
    """The top holders of one bundle, one line each with what they mostly hold."""
    reached = f"{found.objects:,} objects, {size(found.bytes)} reached"
    named = [h for h in found.holders if h.named]
    grown = any(h.growth is not None for h in named)
    out = [section(FILE, f"{reached}; who holds them")]
    out += [f"!! {printable_field(problem, 200)}" for problem in problems]
    if found.partial:
        out.append(f"!! partial: {printable_field(found.partial, 200)}")
    if found.error:
        out.append(f"!! failed: {printable_field(found.error, 200)}")
    if not named:
        return [*out, "  no holders"]
    header = ["bytes", "objects", *(["growth"] if grown else []), "holder", "mostly"]
    rows = [header]
    for h in named[:top]:
        mostly = ", ".join(f"{t.objects:,} {t.name} {size(t.bytes)}" for t in h.types[:2])
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


def holder_changes(a: HeapHolders, b: HeapHolders) -> list[HolderChange]:
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


def holder_growth(found: HeapHolders) -> list[HolderChange] | None:
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
    return path if path.is_file() or (profile.parent / DATA_FILE).is_file() else None


def holders_between(
    a: Path | None, b: Path | None, max_size: int
) -> tuple[bool, list[HolderChange] | None]:
    """(whether there is a by-holder view, its changes): two files are compared; one file
    (a gcheap bundle against itself) gives the growth it recorded."""
    if a is None or b is None:
        return False, None
    if a == b:
        return True, holder_growth(load_holders(a, max_size)[0])
    return True, holder_changes(load_holders(a, max_size)[0], load_holders(b, max_size)[0])
