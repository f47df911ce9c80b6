"""`holmespy diff A [B]`: what grew between two heap profiles, by allocation site, type and holder.

A and B are `.pb.gz` files, bundle folders or event ids. With one event
(or folder) that holds the `gcheap` rule's pair, `heap.pb.gz` is compared
with `heap-2.pb.gz`, taken one window apart. With two events, the last heap
profile of each is compared, their censuses (`heap-types.json`) give the
by-type view, and their holders (`heap-holders.json`) the by-holder view: which roots
(module globals, class attributes, thread stacks) reach more memory. For a
gcheap pair, by type and by holder show the growth the bundle's own files
recorded against the snapshot before them in the same process.

By site is the allocation site, the innermost frame with its line, summed
over the stacks that end there; the value is `inuse_space` unless `-i`
says otherwise. By type reads the censuses; a census lists only its top
types, so a type missing from A's list had at most A's smallest listed
count, and its growth is shown as at least `B - that` (`>=`).

Remember what a holmespy heap profile holds: allocations of its tracing
window still live at the window's end. A steady leak keeps about the same
amount alive in every window, so its site shows *the same* in both profiles:
growth ~0. Sites are therefore ranked first by what they held in both windows
(`held`, the smaller of the two), then by growth: the site that holds memory
in every window is the leak, however steady it is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holmespy import census as census_file
from holmespy.census import Census
from holmespy.cli.deadline import DEFAULT_TIMEOUT, add_timeout_arg
from holmespy.cli.dumps import load_dump_at
from holmespy.cli.errors import BadUsage, CLIError
from holmespy.cli.fetch import open_bundle
from holmespy.cli.holders import beside, changes_json, holders_between, render_holder_changes
from holmespy.cli.profiles import load
from holmespy.cli.reading import add_max_size_arg
from holmespy.cli.text import field, number, positive_int, quantity, signed, table, warn
from holmespy.formats.collapsed import frame_label
from holmespy.formats.profile import Profile

HEAP_FILES = ("heap.pb.gz", "heap-2.pb.gz")
TYPES_FILE = "heap-types.txt"
DEFAULT_TYPE = "inuse_space"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "diff",
        help="what grew between two heap profiles",
        description="What grew between two heap profiles, by allocation site, type and holder.",
    )
    p.add_argument("before", metavar="A", help="a .pb.gz, a bundle folder or an event id")
    p.add_argument("after", metavar="B", nargs="?", help="the later one (default: A's gcheap pair)")
    p.add_argument("--from", dest="source", metavar="SRC", help="where event ids are looked up")
    add_timeout_arg(p)
    p.add_argument(
        "-n",
        "--count",
        type=positive_int,
        default=15,
        metavar="N",
        help="table rows (default 15; --json has all)",
    )
    p.add_argument("-i", "--sample-type", metavar="TYPE", help=f"default {DEFAULT_TYPE}")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_max_size_arg(p)
    p.set_defaults(run=run)


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a profile, and the census beside it when there is one."""

    label: str
    profile: Path
    census: Path | None = None


@dataclass(frozen=True)
class Change:
    name: str
    before: int
    after: int
    bound: bool = False
    """True when `before` is only an upper bound (the type was below A's listed top)."""

    @property
    def growth(self) -> int:
        return self.after - self.before

    @property
    def held(self) -> int:
        """What the site kept alive in both windows (0 when one of them had none)."""
        return min(self.before, self.after) if self.before > 0 and self.after > 0 else 0


def run(args: argparse.Namespace) -> int:
    with sides(args.before, args.after, args.source, args.timeout) as (a, b):
        profile_a, profile_b = load(a.profile, args.max_size), load(b.profile, args.max_size)
        sample_type = args.sample_type or _common_type(profile_a, profile_b)
        unit = _unit(profile_a, sample_type)
        by_site = site_changes(profile_a, profile_b, sample_type)
        by_type = type_problem = holder_problem = None
        try:
            if a.census and b.census and a.census != b.census:
                by_type = type_changes(
                    _census(a.census, args.max_size), _census(b.census, args.max_size)
                )
            elif a.census and a.census == b.census:
                by_type = census_growth(_census(a.census, args.max_size))
        except CLIError as exc:
            type_problem = str(exc)
        has_holders, by_holder = False, None
        try:
            has_holders, by_holder = holders_between(
                beside(a.profile), beside(b.profile), args.max_size
            )
        except CLIError as exc:
            has_holders, holder_problem = True, str(exc)
        if args.json:
            data = as_json(a, b, sample_type, unit, by_site, by_type)
            data["by_holder"] = changes_json(by_holder)
            data["problems"] = [p for p in (type_problem, holder_problem) if p]
            json.dump(data, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        print(f"before  {a.label}\nafter   {b.label}\n")
        print(render_sites(by_site, sample_type, unit, args.count))
        if a.census and b.census:
            print()
            if type_problem:
                print(f"!! by type: {field(type_problem, 400)}")
            else:
                print(render_types(by_type, args.count))
        if has_holders:
            print()
            if holder_problem:
                print(f"!! by holder: {field(holder_problem, 400)}")
            else:
                print(render_holder_changes(by_holder, args.count))
    return 0


@contextlib.contextmanager
def sides(
    before: str, after: str | None, source: str | None, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[tuple[Side, Side]]:
    with contextlib.ExitStack() as stack:
        if after is None:
            folder, _ = stack.enter_context(open_bundle(before, source, timeout=timeout))
            present = [name for name in HEAP_FILES if (folder / name).is_file()]
            if len(present) < 2:
                raise BadUsage(
                    f"{before}: one heap profile only; diff needs B, or an event of the"
                    " gcheap rule (it holds heap.pb.gz and heap-2.pb.gz)"
                )
            census = _census_path(folder)
            yield (
                Side(f"{before}/{HEAP_FILES[0]}", folder / HEAP_FILES[0], census),
                Side(f"{before}/{HEAP_FILES[1]}", folder / HEAP_FILES[1], census),
            )
            return
        a = _side(before, source, stack, timeout)
        b = _side(after, source, stack, timeout)
        yield a, b


def _side(text: str, source: str | None, stack: contextlib.ExitStack, timeout: float) -> Side:
    path = Path(text)
    if path.is_file():
        return Side(text, path)
    folder, _ = stack.enter_context(open_bundle(text, source, timeout=timeout))
    present = [name for name in HEAP_FILES if (folder / name).is_file()]
    if not present:
        raise CLIError(f"{text}: the event has no heap profile ({' or '.join(HEAP_FILES)})")
    # The later profile of a pair is the state closest to the event's end.
    return Side(f"{text}/{present[-1]}", folder / present[-1], _census_path(folder))


def _census_path(folder: Path) -> Path | None:
    path = folder / TYPES_FILE
    return path if path.is_file() or (folder / census_file.FILE).is_file() else None


def _census(path: Path, max_size: int) -> Census:
    """The census of the bundle `path` (its heap-types.txt) is in, from its JSON twin."""
    dump = load_dump_at(path, max_size)
    for problem in dump.problems:
        warn(problem)
    if not isinstance(dump.data, Census):
        why = f"no {census_file.FILE} (written by an older holmespy)"
        raise CLIError(f"{path}: cannot compare types: {why if not dump.problems else 'see above'}")
    return dump.data


def _common_type(a: Profile, b: Profile) -> str:
    names_a = [vt.type for vt in a.sample_types]
    names_b = {vt.type for vt in b.sample_types}
    if DEFAULT_TYPE in names_a and DEFAULT_TYPE in names_b:
        return DEFAULT_TYPE
    common = [n for n in names_a if n in names_b]
    if not common:
        raise CLIError("the two profiles share no sample type: they cannot be compared")
    return common[-1]


def _unit(profile: Profile, sample_type: str) -> str:
    for vt in profile.sample_types:
        if vt.type == sample_type:
            return vt.unit
    have = ", ".join(vt.type for vt in profile.sample_types)
    raise BadUsage(f"sample type {sample_type!r} is not in the profiles (they have {have})")


def by_site(profile: Profile, sample_type: str) -> dict[str, int]:
    names = [vt.type for vt in profile.sample_types]
    if sample_type not in names:
        raise BadUsage(
            f"sample type {sample_type!r} is not in a profile (it has {', '.join(names)})"
        )
    index = names.index(sample_type)
    sites: dict[str, int] = defaultdict(int)
    for sample in profile.samples:
        site = frame_label(sample.stack[0]) if sample.stack else "[unknown]"
        sites[site] += sample.values[index]
    return sites


def site_changes(a: Profile, b: Profile, sample_type: str) -> list[Change]:
    """Sites that held memory in both windows, most first, then the rest by growth."""
    before, after = by_site(a, sample_type), by_site(b, sample_type)
    changes = [Change(s, before.get(s, 0), after.get(s, 0)) for s in before.keys() | after.keys()]
    changes = [c for c in changes if c.growth or c.held]
    changes.sort(key=lambda c: (-c.held, -c.growth, c.name))
    return changes


def type_changes(a: Census, b: Census) -> list[Change]:
    floor = min(a.counts.values(), default=0)
    changes = [
        Change(name, a.counts[name], count)
        if name in a.counts
        else Change(name, floor, count, bound=True)
        for name, count in b.counts.items()
    ]
    # A type that left B's list dropped to at most B's smallest listed count.
    b_floor = min(b.counts.values(), default=0)
    changes += [
        Change(name, count, b_floor, bound=True)
        for name, count in a.counts.items()
        if name not in b.counts
    ]
    return _ranked(changes)


def census_growth(census: Census) -> list[Change] | None:
    """The growth one census recorded against the census before it (a gcheap bundle's view)."""
    if census.growth is None:
        return None
    return _ranked(
        [
            Change(n, census.counts.get(n, 0) - g, census.counts.get(n, 0))
            for n, g in census.growth.items()
        ]
    )


def _ranked(changes: list[Change]) -> list[Change]:
    changes = [c for c in changes if c.growth]
    changes.sort(key=lambda c: (-c.growth, c.name))
    return changes


def render_sites(changes: list[Change], sample_type: str, unit: str, count: int) -> str:
    grew = [c for c in changes if c.growth > 0]
    held = [c for c in changes if c.held]
    title = (
        f"by allocation site ({sample_type}): {len(held)} held memory in both windows,"
        f" {len(grew)} grew"
    )
    if not changes:
        return title + "\n  no change"
    rows = [["held", "growth", "before", "after", "site"]]
    for c in changes[:count]:
        rows.append(
            [
                quantity(c.held, unit) if c.held else "-",
                signed(quantity(c.growth, unit), c.growth),
                quantity(c.before, unit),
                quantity(c.after, unit),
                c.name,
            ]
        )
    return title + "\n" + _indent(table(rows, right={"held", "growth", "before", "after"}))


def render_types(changes: list[Change] | None, count: int) -> str:
    if changes is None:
        return "by type: heap-types.txt has no previous census to compare with"
    title = "by type (live objects, heap-types.txt)"
    if not changes:
        return title + "\n  no change"
    rows = [["growth", "before", "after", "type"]]
    for c in changes[:count]:
        mark = ">=" if c.bound and c.growth > 0 else "<=" if c.bound else ""
        rows.append(
            [mark + signed(number(c.growth), c.growth), number(c.before), number(c.after), c.name]
        )
    return title + "\n" + _indent(table(rows, right={"growth", "before", "after"}))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def as_json(
    a: Side,
    b: Side,
    sample_type: str,
    unit: str,
    sites: list[Change],
    types: list[Change] | None,
) -> dict[str, Any]:
    def rows(changes: list[Change], *, held: bool) -> list[dict[str, Any]]:
        return [
            {
                "name": c.name,
                "before": c.before,
                "after": c.after,
                "growth": c.growth,
                **({"held": c.held} if held else {}),
                "bound": c.bound,
            }
            for c in changes
        ]

    return {
        "before": a.label,
        "after": b.label,
        "sample_type": sample_type,
        "unit": unit,
        "by_site": rows(sites, held=True),
        "by_type": rows(types, held=False) if types is not None else None,
    }
